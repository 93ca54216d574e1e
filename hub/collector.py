"""The hub process's garbage collector, set once the app is built and about to serve.

A full collection (generation 2) walks every object the process tracks. The hub imports
FastAPI, pydantic, SQLAlchemy and their schemas, and builds its statements and routes at
start: a few hundred thousand objects that live as long as the process. Left in
generation 2, each full collection (several a minute under load) walked them all and
stopped every request for 50-120 ms (bench/README.md, "P3, eighth pass"). Moving them to
the permanent generation (``gc.freeze``) once they exist leaves full collections only the
objects made since: under a millisecond. Reference counting still frees frozen objects; only
cycles among them would stay, and there are none to speak of among modules and classes.
"""

from __future__ import annotations

import gc
import threading

_frozen = False
_lock = threading.Lock()


def freeze_startup_objects() -> bool:
    """Collect once, then freeze what survives. Once per process (tests build many apps in one);
    returns whether this call froze."""
    global _frozen
    with _lock:
        if _frozen:
            return False
        gc.collect()
        gc.freeze()
        _frozen = True
        return True
