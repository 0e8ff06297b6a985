"""A timer-triggered test function: remembers each firing in this process."""

from __future__ import annotations

import azure.functions as func

FIRED: list[bool] = []  # past_due of each firing


async def main(timer: func.TimerRequest) -> None:
    FIRED.append(timer.past_due)
