"""Errors users can fix are reported as one line on stderr (exit status 1), never as a traceback."""

from __future__ import annotations

import sys
from typing import Any, Optional

import click

from pairio.errors import PairioError
from pairio.extras import extra_of_missing_module


def describe_expected_error(error: BaseException) -> Optional[str]:
    """A one-line message for an error the user can act on; None for a bug, which keeps its traceback."""
    if isinstance(error, PairioError):
        return str(error)
    extra = extra_of_missing_module(error)
    if extra is not None:
        return f"this command needs Pairio's {extra} packages ({error}): pip install 'pairio[{extra}]'"
    # The hub's modules are imported only by the commands that need them; an error of one
    # of their types can only come from a module that is already loaded, so look there
    # instead of importing the hub (slow) into every client command.
    hub_errors = sys.modules.get("hub.errors")
    if hub_errors is not None and isinstance(error, hub_errors.HubError):
        return str(error.message)
    sqlalchemy_errors = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_errors is not None and isinstance(error, sqlalchemy_errors.OperationalError):
        return f"the hub's database cannot be used: {error.orig}"
    return None


class OneLineErrors(click.Group):
    """A group whose commands report expected errors as ``Error: <message>`` and exit with status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:
            message = describe_expected_error(e)
            if message is None:
                raise
            # Some messages (pydantic's) span lines; one line keeps them readable in logs and scripts.
            one_line = "; ".join(line.strip() for line in message.splitlines() if line.strip())
            raise click.ClickException(one_line) from None
