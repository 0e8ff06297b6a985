"""Timer adapter for the jobs' sweeper, every minute: jobs past their deadline or whose poisoned
messages left inputs open are ended, and ended jobs deleted after JOB_RETENTION_DAYS."""

from __future__ import annotations

import azure.functions as func


async def main(timer: func.TimerRequest) -> None:
    from shared.jobs.runtime import sweep

    await sweep()
