"""The one line of JSON each cold-start contender prints once its first unassign is done.

Imported only after the contender has stopped its clock, so it never counts against it.

Peak RSS is the process's own high-water mark (VmHWM in /proc/self/status). `getrusage`'s
ru_maxrss is not: a child started with vfork, as subprocess does, keeps the larger peak of its
parent's memory, which it borrowed until it ran its own program.
"""

from __future__ import annotations

import json
import resource


def peak_rss_kib() -> int:
    """VmHWM where Linux gives it, else ru_maxrss (kilobytes on Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


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
                "rss_kib": peak_rss_kib(),
                "cpu_s": usage.ru_utime + usage.ru_stime,
            }
        )
    )
