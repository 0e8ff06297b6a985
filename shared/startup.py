"""What imports leave behind lives as long as the worker: no garbage collection over it.

Loading azure-identity, httpx and this package allocates tens of thousands of objects, and the
collector runs every 700 allocations, walking more of them each time: tens of milliseconds of a
cold start on a small instance, for objects that are never garbage. `loading()` pauses the
collector while such a batch of imports runs, then `gc.freeze()` moves everything that exists
into the permanent generation later collections skip (what Python documents it for besides fork:
"to speed up collection"). What requests allocate afterwards is collected as before.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_was_enabled = True


@contextlib.contextmanager
def loading() -> Iterator[None]:
    """Around imports that stay for the life of the process; safe to nest and to overlap."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.freeze()
                if _was_enabled:
                    gc.enable()
