"""The process's job worker and sweeper, made on first use, for the queue and timer functions."""

from __future__ import annotations

import asyncio
import logging
import math
import threading

from shared.handler import default_graph
from shared.jobs.api import default_jobs
from shared.jobs.budget import WriteBudget
from shared.jobs.settings import QUEUE
from shared.jobs.worker import Message, Worker
from shared.settings import load_settings

log = logging.getLogger("autopilot.jobs")
# Azure Queue Storage hides a message for at most 7 days.
MAX_VISIBILITY_SECONDS = 7 * 24 * 3600

_worker: Worker | None = None
# Held while the worker is made: the queue trigger runs several messages at once, each asking
# from a thread of its own. The jobs' services and the Graph client have locks of their own.
_making_worker = threading.Lock()


def default_worker() -> Worker:
    global _worker
    if _worker is None:
        with _making_worker:
            if _worker is None:
                _worker = _make_worker()
    return _worker


def _make_worker() -> Worker:
    jobs = default_jobs()
    settings = jobs.settings
    queue = settings.queue()

    def send(text: str, delay: float) -> None:
        hidden = min(MAX_VISIBILITY_SECONDS, max(0, math.ceil(delay)))
        queue.send_message(text, visibility_timeout=hidden)

    budget = WriteBudget(settings.table(), settings.writes_per_window, settings.window_seconds)
    return Worker(
        jobs.store,
        budget,
        send,
        default_graph(),
        load_settings().deadline_seconds,
        claim_seconds=settings.claim_seconds,
    )


async def handle_message(body: bytes) -> None:
    """One message of the jobs' queue; one that is not a job's is logged and dropped."""
    try:
        message = Message.decode(body)
    except ValueError:
        log.error(
            "queue %s: a message that is not a job's (%d bytes) was dropped", QUEUE, len(body)
        )
        return
    worker = await asyncio.to_thread(default_worker)  # made on first use: not on the loop
    await worker.handle(message)


async def sweep() -> None:
    from shared.jobs.sweeper import default_sweeper

    summary = await asyncio.to_thread(lambda: default_sweeper().sweep())
    log.info("jobs swept: %s", summary)
