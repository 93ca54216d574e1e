"""Writing files that hold keys: private from the first byte, replaced atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private_file(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only.

    The text goes to a 0600 temporary file beside ``path`` that is renamed over it, so the
    key is never readable by others, not even for a moment, and a crash leaves the old file whole.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
