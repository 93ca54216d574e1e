"""Rules for the names users choose: apps, processors, files, tags, services.

Names end up in URLs, file paths and shell command lines, so they are restricted
to characters that are safe in all three. Each check raises ``ValueError`` with a
message saying what is allowed, which pydantic turns into a validation error.
"""

from __future__ import annotations

import re

# The rules as JSON Schema patterns (ECMA-262 and Python alike: no lookaround, so every
# tool can use them); the OpenAPI document shows them (pairio.models), the checks below use them.
# A name: letters, digits, '_', '.', '-', starting with a letter, digit or '_', never '..'
# (each '.' is followed by another character or ends the name).
NAME_MAX_LENGTH = 100
NAME_PATTERN = r"^[A-Za-z0-9_](?:[A-Za-z0-9_\-]|\.[A-Za-z0-9_\-])*\.?$"
TAG_MAX_LENGTH = 200
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:=@+/\-]*$"
# A file name: no '/', '\\' or control characters, not starting with '.', never '..'.
FILE_BASE_NAME_MAX_LENGTH = 255
FILE_BASE_NAME_PATTERN = r"^[^./\\\x00-\x1f](?:[^./\\\x00-\x1f]|\.[^./\\\x00-\x1f])*\.?$"

_NAME_RE = re.compile(NAME_PATTERN)
_TAG_RE = re.compile(TAG_PATTERN)
_FILE_BASE_NAME_MAX = FILE_BASE_NAME_MAX_LENGTH


def check_name(value: str, what: str = "name") -> str:
    """A name of an app, processor, input, output, parameter, service or user."""
    # fullmatch: '$' alone would let a trailing newline through
    if not isinstance(value, str) or len(value) > NAME_MAX_LENGTH or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-100 characters from letters, digits, '_', '.' and '-', "
            "starting with a letter, digit or '_' (no '..')"
        )
    return value


# A job's input file may also name one element of a list input, as the original Pairio's
# jobs do: 'recordings[0]'. Only this form: a name, then a decimal index in brackets. Input
# names become directory names on bridges (brackets are plain characters there) and never URLs.
INPUT_NAME_PATTERN = NAME_PATTERN[:-1] + r"(?:\[(?:0|[1-9][0-9]{0,5})\])?$"
_INPUT_NAME_RE = re.compile(INPUT_NAME_PATTERN)


def check_input_name(value: str) -> str:
    """The name of a job's input file: a name, or a list input's element ``name[i]``."""
    if not isinstance(value, str) or len(value) > NAME_MAX_LENGTH + 8 or not _INPUT_NAME_RE.fullmatch(value):
        raise ValueError(
            f"invalid input file name {value!r}: use 1-100 characters from letters, digits, '_', '.' and '-', "
            "starting with a letter, digit or '_' (no '..'), optionally followed by a list index such as '[0]'"
        )
    return value


def check_tag(value: str) -> str:
    if not isinstance(value, str) or len(value) > TAG_MAX_LENGTH or not _TAG_RE.fullmatch(value):
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


# ---------------------------------------------------------------- secret names

SECRET_NAME_MAX_LENGTH = 64
SECRET_NAME_PATTERN = r"^[A-Z][A-Z0-9_]*$"
_SECRET_NAME_RE = re.compile(SECRET_NAME_PATTERN)

# A secret becomes an environment variable of the processor. These names change how
# programs load, find or run other programs (the dynamic loader, interpreters, shells,
# container engines, Pairio and the batch system), so a submitter must not set them.
RESERVED_SECRET_NAMES = frozenset({
    "PATH", "HOME", "SHELL", "ENV", "BASH_ENV", "IFS", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND",
    "CDPATH", "GLOBIGNORE", "SHELLOPTS", "BASHOPTS", "BROWSER", "EDITOR", "VISUAL", "PAGER",
    "TMPDIR", "TMP", "TEMP", "USER", "LOGNAME", "PWD", "OLDPWD", "MAIL", "TERM", "TERMINFO", "TZ",
    "LANG", "LANGUAGE", "NLSPATH", "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "GLIBC_TUNABLES",
    "JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "FTP_PROXY",
})  # fmt: skip
RESERVED_SECRET_PREFIXES = (
    "LD_", "DYLD_", "PYTHON", "PERL", "RUBY", "NODE_", "BASH_FUNC_", "GCONV_", "MALLOC_", "LC_",
    "PAIRIO_", "SLURM_", "OMP_", "GOMP_", "KMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "VECLIB_", "NUMBA_",
    "CUDA_", "NVIDIA_", "ROCR_", "HIP_",
    "DOCKER_", "PODMAN_", "CONTAINERS_", "BUILDAH_", "APPTAINER", "SINGULARITY",
    "SSH_", "KRB5", "XDG_", "JAVA_",
)  # fmt: skip


def secret_name_problem(value: object) -> str | None:
    """Why ``value`` may not name a secret, or None when it may."""
    if not isinstance(value, str) or len(value) > SECRET_NAME_MAX_LENGTH or not _SECRET_NAME_RE.fullmatch(value):
        return "secret names are 1-64 characters of A-Z, 0-9 and '_', starting with a letter"
    if value in RESERVED_SECRET_NAMES:
        return f"{value} changes how programs on the compute host run, so a job may not set it"
    for prefix in RESERVED_SECRET_PREFIXES:
        if value.startswith(prefix):
            return f"names starting with {prefix} change how programs on the compute host run, so a job may not set them"
    return None


def check_secret_name(value: str) -> str:
    """A job secret's name: it becomes an environment variable of the processor, and only of it."""
    problem = secret_name_problem(value)
    if problem:
        raise ValueError(f"invalid secret name {value!r}: {problem}; choose another name, such as MYAPP_API_TOKEN")
    return value


# ---------------------------------------------------------------- the rules as JSON Schema

NAME_SCHEMA = {"minLength": 1, "maxLength": NAME_MAX_LENGTH, "pattern": NAME_PATTERN}
INPUT_NAME_SCHEMA = {"minLength": 1, "maxLength": NAME_MAX_LENGTH + 8, "pattern": INPUT_NAME_PATTERN}
TAG_SCHEMA = {"minLength": 1, "maxLength": TAG_MAX_LENGTH, "pattern": TAG_PATTERN}
FILE_BASE_NAME_SCHEMA = {"minLength": 1, "maxLength": FILE_BASE_NAME_MAX_LENGTH, "pattern": FILE_BASE_NAME_PATTERN}
SECRET_NAME_SCHEMA = {
    "minLength": 1, "maxLength": SECRET_NAME_MAX_LENGTH, "pattern": SECRET_NAME_PATTERN,
    "not": {"anyOf": [
        {"enum": sorted(RESERVED_SECRET_NAMES)},
        {"pattern": "^(?:" + "|".join(RESERVED_SECRET_PREFIXES) + ")"},
    ]},
}
