"""``pairio admin``: users, keys, services, roles and apps, written straight into the hub's database.

Runs on the hub's machine with the hub's settings (``--data-dir``, ``PAIRIO_HUB_*``),
so the first user and key can be made before anyone has a key to call the API with.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import click

from .hub import data_dir_option, load_hub_settings
from .tables import format_time, render_table

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class AdminOptions:
    data_dir: Optional[Path]


@contextmanager
def hub_database(options: AdminOptions) -> Iterator["Session"]:
    """One transaction on the hub's database, migrated to the current schema first."""
    from hub.context import HubContext

    settings = load_hub_settings(options.data_dir)
    database = settings.data_dir / "hub.db"
    if not settings.database_url and not database.exists():
        # a mistyped --data-dir must not quietly start an empty hub database that no hub serves
        where = shlex.quote(str(settings.data_dir))
        raise click.ClickException(
            f"no hub database in {settings.data_dir} ({database.name} is missing): check --data-dir or "
            f"PAIRIO_HUB_DATA_DIR, or create one there with 'pairio hub init --data-dir {where}' "
            f"(or by starting the hub: 'pairio hub serve --data-dir {where}')"
        )
    ctx = HubContext.create(settings)
    try:
        with ctx.transaction() as session:
            yield session
    finally:
        ctx.close()


def _echo_new_key(user_id: str, key: str) -> None:
    # The key goes last, alone on its line, so scripts can take it with `tail -n 1`.
    click.echo(f"API key for {user_id!r} (shown only this once; use it with 'pairio login' or 'export PAIRIO_API_KEY=<key>'):")
    click.echo(key)


@click.group()
@data_dir_option()
@click.pass_context
def admin(ctx: click.Context, data_dir: Optional[Path]) -> None:
    """Manage users, keys, services and apps on the hub's own database (run it on the hub's machine)."""
    ctx.obj = AdminOptions(data_dir=data_dir)


@admin.command("create-user")
@click.argument("name")
@click.option("--label", default="first key", show_default=True, help="a note saying what the key is for")
@click.pass_obj
def create_user(options: AdminOptions, name: str, label: str) -> None:
    """Create a user and an API key for them; the key is the last line printed."""
    from hub.core import accounts

    with hub_database(options) as s:
        accounts.create_user(s, name)
        _, key = accounts.create_api_key(s, name, label)
    click.echo(f"created user {name!r}")
    _echo_new_key(name, key)


@admin.command("create-api-key")
@click.argument("user")
@click.option("--label", default="", help="a note saying what the key is for")
@click.pass_obj
def create_api_key(options: AdminOptions, user: str, label: str) -> None:
    """Create another API key for an existing user; the key is the last line printed."""
    from hub.core import accounts

    with hub_database(options) as s:
        _, key = accounts.create_api_key(s, user, label)
    _echo_new_key(user, key)


@admin.command("create-service")
@click.argument("name")
@click.option("--owner", required=True, help="the user who owns the service (gets every role in it)")
@click.pass_obj
def create_service(options: AdminOptions, name: str, owner: str) -> None:
    """Create a service owned by a user."""
    from hub.core import accounts

    with hub_database(options) as s:
        accounts.create_service(s, name, owner)
    click.echo(f"created service {name!r} owned by {owner!r}; register apps with 'pairio admin add-app {name} spec.json'")


@admin.command("add-service-user")
@click.argument("service")
@click.argument("user")
@click.option("--admin", "is_admin", is_flag=True, help="may manage the service's users, apps and jobs")
@click.option("--create-jobs", is_flag=True, help="may submit jobs")
@click.option("--process-jobs", is_flag=True, help="may run compute clients that process jobs")
@click.pass_obj
def add_service_user(
    options: AdminOptions, service: str, user: str, is_admin: bool, create_jobs: bool, process_jobs: bool
) -> None:
    """Add a user to a service, or set their roles there (the flags given are the roles they get)."""
    from hub.core import accounts

    with hub_database(options) as s:
        accounts.set_service_user(s, service, user, admin=is_admin, create_jobs=create_jobs, process_jobs=process_jobs)
    roles = [r for r, on in (("admin", is_admin), ("createJobs", create_jobs), ("processJobs", process_jobs)) if on]
    click.echo(f"user {user!r} in service {service!r}: {', '.join(roles) or 'no roles'}")


@admin.command("add-app")
@click.argument("service")
@click.argument("spec_file", metavar="SPEC.json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--original-sdk", is_flag=True,
    help="the app's image was built with the original Pairio SDK (pairio 0.5.x): its jobs talk to the hub themselves, "
    "so bridges give them the original environment and a network to the hub",
)
@click.pass_obj
def add_app(options: AdminOptions, service: str, spec_file: Path, original_sdk: bool) -> None:
    """Register an app in a service from its spec.json, or replace the app of that name."""
    from hub.core import accounts
    from hub.core.original_sdk import marked_original_sdk

    try:
        spec = json.loads(spec_file.read_text())
    except json.JSONDecodeError as e:
        raise click.ClickException(f"{spec_file} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise click.ClickException(f"cannot read {spec_file}: {e}") from None
    app = accounts.parse_app_spec(spec)
    if original_sdk:
        app = marked_original_sdk(app)
    with hub_database(options) as s:
        accounts.add_app(s, service, app)
    version = f" version {app.version}" if app.version else ""
    processors = ", ".join(p.name for p in app.processors) or "none"
    built_with = " (images built with the original Pairio SDK)" if original_sdk else ""
    click.echo(f"registered app {app.name!r}{version} in service {service!r}{built_with}; processors: {processors}")


@admin.command("list-users")
@click.pass_obj
def list_users(options: AdminOptions) -> None:
    """Users, with how many API keys each has in use."""
    from hub.core import accounts

    with hub_database(options) as s:
        rows = [
            [u.user_id, str(sum(not k.revoked for k in accounts.list_api_keys(s, u.user_id))), format_time(u.created_sec)]
            for u in accounts.list_users(s)
        ]
    click.echo(render_table(["USER", "KEYS", "CREATED"], rows))


@admin.command("list-services")
@click.pass_obj
def list_services(options: AdminOptions) -> None:
    """Services, their owners and their users' roles."""
    from hub.core import accounts

    with hub_database(options) as s:
        services = [accounts.service_public(s, x) for x in accounts.list_services(s)]
    rows = []
    for service in services:
        users = []
        for u in service.users:
            roles = [r for r, on in (("admin", u.admin), ("createJobs", u.createJobs), ("processJobs", u.processJobs)) if on]
            users.append(f"{u.userId}({'+'.join(roles) or '-'})")
        rows.append([service.serviceName, service.userId, format_time(service.timestampCreatedSec), " ".join(users)])
    click.echo(render_table(["SERVICE", "OWNER", "CREATED", "USERS"], rows))


@admin.command("list-apps")
@click.argument("service", required=False)
@click.pass_obj
def list_apps(options: AdminOptions, service: Optional[str]) -> None:
    """Apps registered in a service (or in every service) and their processors."""
    from hub.core import accounts

    with hub_database(options) as s:
        if service:
            accounts.get_service_row(s, service)  # a clear error for a misspelt service, not an empty table
        apps = [accounts.app_public(a) for a in accounts.list_apps(s, service)]
    rows = [
        [a.serviceName, a.appName, a.appSpecification.version or "-", format_time(a.timestampUpdatedSec),
         ", ".join(p.name for p in a.processors)]
        for a in apps
    ]
    click.echo(render_table(["SERVICE", "APP", "VERSION", "UPDATED", "PROCESSORS"], rows))


@admin.command("list-compute-clients")
@click.argument("service", required=False)
@click.pass_obj
def list_compute_clients(options: AdminOptions, service: Optional[str]) -> None:
    """Compute clients registered in a service (or in every service)."""
    from hub.core import accounts

    with hub_database(options) as s:
        if service:
            accounts.get_service_row(s, service)
        clients = [accounts.compute_client_public(c) for c in accounts.list_compute_clients(s, service)]
    rows = [
        [c.computeClientId, c.serviceName, c.label, c.userId, str(len(c.computeSlots)), format_time(c.timestampLastActiveSec)]
        for c in clients
    ]
    click.echo(render_table(["ID", "SERVICE", "LABEL", "USER", "SLOTS", "LAST ACTIVE"], rows))
