"""Which installed extras a command needs: the client and SDK come with ``pip install pairio``; the hub
and the bridges are the extras ``pairio[hub]`` and ``pairio[bridge]`` (``pairio[all]`` for both).

A command that needs a missing extra stops with the pip command that installs it, instead of an
ImportError from deep inside.
"""

from __future__ import annotations

import importlib.util

from .errors import PairioError

EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "hub": ("fastapi", "uvicorn", "sqlalchemy", "alembic", "jinja2", "pydantic_settings", "fastapi_offline"),
    "bridge": ("psutil", "paramiko"),
}


class MissingExtraError(PairioError):
    """A command needs packages of an extra that is not installed."""


def missing_modules(extra: str) -> list[str]:
    return [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]


def require_extra(extra: str, what: str) -> None:
    """Raise MissingExtraError naming ``what`` needs and how to install it, when ``extra`` is not installed."""
    missing = missing_modules(extra)
    if missing:
        raise MissingExtraError(
            f"{what} needs Pairio's {extra} packages, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: pip install 'pairio[{extra}]' "
            "(or 'pairio[all]' for the hub and the bridges)"
        )


def extra_of_missing_module(error: BaseException) -> str | None:
    """The extra that provides the module an ImportError names, or None when it is no extra's."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    top = error.name.partition(".")[0]
    return next((extra for extra, modules in EXTRA_MODULES.items() if top in modules), None)
