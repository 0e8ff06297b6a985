# ruff: noqa: E402 - the clock starts before anything is imported
"""Cold start of the jobs' worker: what the Python worker does for the first queue message of a
process.

As for the HTTP function (ours_cold.py): ``azure.functions`` loaded first, then the function
folder imported, then ``main`` awaited with the worker's own ``QueueMessage``. The message is a
chunk of one device (BENCH_MESSAGE), so the first message makes the storage clients, fetches the
managed identity token, claims the chunk, reads and unassigns the device and saves the result.
Prints one line of JSON.
"""

import time

T_TOP = time.perf_counter()

import asyncio
import logging
import os
import sys
from pathlib import Path

import azure.functions as func
from azure.functions.queue import QueueMessage

logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
T_HOST = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import BulkUnassignJobWorker

T_IMPORTED = time.perf_counter()
message: func.QueueMessage = QueueMessage(  # type: ignore[no-untyped-call]
    id="bench-cold-1", body=os.environ["BENCH_MESSAGE"].encode(), dequeue_count=1
)
asyncio.run(BulkUnassignJobWorker.main(message))
T_DONE = time.perf_counter()

from coldreport import report  # after the clock stopped

report("worker", T_TOP, T_HOST, T_IMPORTED, T_DONE)
