"""The ``pairio`` command: ``pairio hub serve``, ``pairio admin ...``, ``pairio login`` and ``pairio jobs ...``.

Subcommands import the hub (FastAPI, SQLAlchemy) only when they run, so the client
commands start quickly on machines that only submit jobs.
"""

from __future__ import annotations

import click

from .admin import admin
from .app_spec import make_app_spec, make_app_spec_file
from .errors import OneLineErrors
from .hub import hub
from .jobs import jobs
from .login import login


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pairio", prog_name="pairio")
def main() -> None:
    """Pairio: a hub that holds jobs, and the client that submits and follows them.

    \b
    Start a hub:        pairio hub serve
    Get a first key:    pairio admin create-user NAME
    Use it:             pairio login   (or export PAIRIO_API_KEY=...)
    Follow jobs:        pairio jobs list
    """


main.add_command(hub)
main.add_command(admin)
main.add_command(login)
main.add_command(jobs)
main.add_command(make_app_spec)
main.add_command(make_app_spec_file)

__all__ = ["main"]
