"""Rules for the names users choose: apps, processors, files, tags, services.

Names end up in URLs, file paths and shell command lines, so they are restricted
to characters that are safe in all three. Each check raises ``ValueError`` with a
message saying what is allowed, which pydantic turns into a validation error.
"""

from __future__ import annotations

import re

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:=@+/\-]{0,199}$")
_FILE_BASE_NAME_MAX = 255


def check_name(value: str, what: str = "name") -> str:
    """A name of an app, processor, input, output, parameter, service or user."""
    if not isinstance(value, str) or not _NAME_RE.match(value) or ".." in value:
        raise ValueError(
            f"invalid {what} {value!r}: use 1-100 characters from letters, digits, '_', '.' and '-', "
            "starting with a letter, digit or '_' (no '..')"
        )
    return value


def check_tag(value: str) -> str:
    if not isinstance(value, str) or not _TAG_RE.match(value):
        raise ValueError(
            f"invalid tag {value!r}: use 1-200 characters from letters, digits and '_.:=@+/-', "
            "starting with a letter, digit or '_'"
        )
    return value


def check_file_base_name(value: str) -> str:
    """A file name without any directory part: safe to join onto a job directory."""
    problem = None
    if not isinstance(value, str) or value == "":
        problem = "it is empty"
    elif len(value) > _FILE_BASE_NAME_MAX:
        problem = f"it is longer than {_FILE_BASE_NAME_MAX} characters"
    elif "/" in value or "\\" in value:
        problem = "it contains a path separator"
    elif ".." in value:
        problem = "it contains '..'"
    elif "\x00" in value or any(ord(c) < 32 for c in value):
        problem = "it contains NUL or control characters"
    elif value.startswith("."):
        problem = "it starts with '.'"
    if problem:
        raise ValueError(f"invalid fileBaseName {value!r}: {problem}; give a plain file name such as 'output.txt'")
    return value
