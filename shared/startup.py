"""What imports leave behind lives as long as the worker: keep it out of garbage collections.

A full garbage collection walks every object the collector tracks. Once the worker,
azure-functions, httpx and azure-identity are loaded that is tens of thousands of objects, and
the imports allocate enough to set off full collections on their own, each tens of milliseconds
on a small instance, all of it on the first request. `gc.freeze()` moves everything that exists
now into the permanent generation that collections skip (what Python documents it for besides
fork: "to speed up collection"). What requests allocate afterwards is collected as before.
"""

from __future__ import annotations

import gc


def imports_done() -> None:
    """Call after a batch of imports that stay for the life of the process."""
    gc.freeze()
