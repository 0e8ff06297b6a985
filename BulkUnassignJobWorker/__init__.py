"""Queue adapter for the jobs' worker: one message of the jobs' queue. Logic in `shared.jobs`."""

from __future__ import annotations

import azure.functions as func


async def main(msg: func.QueueMessage) -> None:
    from shared.jobs.runtime import handle_message

    await handle_message(msg.get_body())
