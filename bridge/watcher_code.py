"""How a watcher that runs from a copy of its file starts: imported by a one-line bootstrap, from cached bytecode.

Python compiles the file it is given as a script (``python FILE``) at every start and never caches
it; for bridge/watch.py that is about 9 ms of CPU, a fifth of a watcher's start, paid by every
job of the Slurm bridge (which runs a copy in each job directory) and of the SSH bridge (a copy
in the host's tools directory). An imported module's bytecode is cached in ``__pycache__``
beside it, so the watcher is imported instead::

    python -I [-S] -c 'import importlib.util ...; exec_module(...)' PATH/pairio_watch.py --job-dir ...

The bootstrap is a constant: only the watcher's path (an argument, never spliced into code) and
its options vary. Where the bridge writes the copy itself it also writes the
bytecode (``write_bytecode``), compiled once per bridge process by this interpreter and checked
against the source's hash at import, so no job compiles anything; an interpreter of another
version ignores it and caches its own on first use.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import py_compile
import tempfile
from pathlib import Path

log = logging.getLogger("bridge.watcher_code")

BOOTSTRAP_CODE = (
    'import importlib.util as u, sys; s = u.spec_from_file_location("pairio_watch", sys.argv.pop(1)); '
    "m = u.module_from_spec(s); sys.modules[s.name] = m; s.loader.exec_module(m); sys.exit(m.main())"
)
"""``python -c`` code that imports the watcher from the file given as its first argument (by path: nothing is looked
for on sys.path, so no file beside it can stand in for a module) and exits with its ``main()``, which reads the
arguments after that file"""


def bootstrap_argv(watcher_file: str) -> list[str]:
    """The interpreter's arguments (after its flags) that run the watcher at ``watcher_file`` by import; the
    watcher's own options follow them."""
    return ["-c", BOOTSTRAP_CODE, watcher_file]


@functools.cache
def _bytecode(source: Path) -> bytes:
    """``source`` compiled by this interpreter into a hash-checked .pyc (valid for any copy of the same text)."""
    with tempfile.TemporaryDirectory(prefix="pairio-bytecode-") as tmp:
        target = os.path.join(tmp, "code.pyc")
        py_compile.compile(
            str(source), cfile=target, dfile=source.name, doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
        )
        return Path(target).read_bytes()


def write_bytecode(copy: Path, source: Path) -> None:
    """Write the bytecode of ``source`` where this interpreter looks for that of ``copy`` (a copy of it). Best
    effort: without it the watcher compiles its copy, as it did before, so a failure is only logged."""
    try:
        cached = importlib.util.cache_from_source(str(copy))
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        Path(cached).write_bytes(_bytecode(source))
    except (OSError, py_compile.PyCompileError) as e:
        log.warning("could not write the bytecode of %s (its watcher compiles it instead): %s", copy, e)
