"""``pairio hub serve``: run a hub, on an SQLite file under its data directory unless told otherwise."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import click

if TYPE_CHECKING:
    from hub.settings import HubSettings

DATA_DIR_HELP = (
    "the hub's data directory: its SQLite database and job files "
    "[default: $PAIRIO_HUB_DATA_DIR or .pairio/hub]; PAIRIO_HUB_DATABASE_URL selects another database"
)
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
FC = TypeVar("FC", bound=Callable[..., Any])


def data_dir_option() -> Callable[[FC], FC]:
    return click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help=DATA_DIR_HELP)


def load_hub_settings(data_dir: Optional[Path], **overrides: Any) -> "HubSettings":
    """The hub's settings from ``PAIRIO_HUB_*``, with ``--data-dir`` and ``overrides`` taking precedence."""
    from pydantic import ValidationError

    from pairio.extras import require_extra

    require_extra("hub", "running or administering a hub")

    from hub.settings import HubSettings

    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        return HubSettings(**overrides)
    except ValidationError as e:
        raise click.ClickException(f"invalid hub settings (check the PAIRIO_HUB_* environment variables): {e}") from None


def database_for_display(settings: "HubSettings") -> str:
    """The database URL with any password hidden."""
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url()).render_as_string(hide_password=True)


def admin_command_prefix(settings: "HubSettings") -> str:
    """How to call ``pairio admin`` on the same database as this hub."""
    prefix = f"pairio admin --data-dir {shlex.quote(str(settings.data_dir))}"
    if settings.database_url:
        prefix = "PAIRIO_HUB_DATABASE_URL=<the same URL> " + prefix
    return prefix


def _public_url(host: str, port: int) -> str:
    if host in _WILDCARD_HOSTS:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}"


@click.group()
def hub() -> None:
    """Run a Pairio hub."""


@hub.command("init")
@data_dir_option()
def init(data_dir: Optional[Path]) -> None:
    """Create the hub's database (or bring it to the current schema) without serving.

    'pairio admin' then works on it before the hub first starts; 'pairio hub serve' does the same on its own.
    """
    from hub.context import HubContext

    settings = load_hub_settings(data_dir)
    ctx = HubContext.create(settings)
    ctx.close()
    click.echo(f"hub database ready: {database_for_display(settings)}")


@hub.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (0.0.0.0 for every interface)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="port to listen on")
@data_dir_option()
@click.option(
    "--log-level", default="info", show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="uvicorn's log level",
)
def serve(host: str, port: int, data_dir: Optional[Path], log_level: str) -> None:
    """Serve the hub's REST API (/v1, docs at /docs) and the original wire protocol (/api).

    Job and file URLs start with PAIRIO_HUB_PUBLIC_URL, by default http://HOST:PORT.
    """
    from pairio.extras import require_extra

    require_extra("hub", "running or administering a hub")
    import uvicorn
    from sqlalchemy import select

    from hub.app import create_app
    from hub.context import HubContext
    from hub.db.tables import User

    overrides: dict[str, Any] = {}
    if not os.environ.get("PAIRIO_HUB_PUBLIC_URL"):
        overrides["public_url"] = _public_url(host, port)
    settings = load_hub_settings(data_dir, **overrides)
    settings.data_dir = settings.data_dir.resolve()
    ctx = HubContext.create(settings)
    try:
        with ctx.transaction() as s:
            has_users = s.scalars(select(User.user_id).limit(1)).first() is not None
        url = settings.base_url
        click.echo(f"Pairio hub at {url}  (API docs: {url}/docs)")
        click.echo(f"database: {database_for_display(settings)}")
        click.echo(f"data directory: {settings.data_dir}")
        if host in _WILDCARD_HOSTS and "public_url" in overrides:
            click.echo(
                f"note: listening on every interface, but job URLs start with {url}; "
                "set PAIRIO_HUB_PUBLIC_URL to the address other machines use"
            )
        if not has_users:
            click.echo("")
            click.echo("No users yet. Create the first user and their API key (in another terminal):")
            click.echo(f"    {admin_command_prefix(settings)} create-user NAME")
            click.echo("then, wherever you submit jobs:")
            click.echo(f"    export PAIRIO_API_URL={url}")
            click.echo("    export PAIRIO_API_KEY=<the key it printed on its last line>")
            click.echo("(or run 'pairio login' there to store both)")
        click.echo("", nl=True)
        uvicorn.run(create_app(ctx=ctx), host=host, port=port, log_level=log_level)
    finally:
        ctx.close()
