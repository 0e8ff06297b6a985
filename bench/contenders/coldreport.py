"""The one line of JSON each cold-start contender prints once its first unassign is done.

Imported only after the contender has stopped its clock, so it never counts against it.
"""

from __future__ import annotations

import json
import resource


def report(contender: str, top: float, host: float, imported: float, done: float) -> None:
    """Phases on ``time.perf_counter()``: script start, host preload done, imports done, done."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "contender": contender,
                "done_at": done,
                "script_s": done - top,
                "host_import_s": host - top,
                "import_s": imported - host,
                "first_call_s": done - imported,
                "rss_kib": usage.ru_maxrss,
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )
