# ruff: noqa: E402 - the clock starts before anything is imported
"""Cold start of our function: what the Python worker does for the first request of a process.

The worker is an asyncio program with ``azure.functions`` loaded before it imports a function
folder (with the app root on ``sys.path``); it then builds an ``HttpRequest`` and awaits ``main``.
That first request reads the device and unassigns it, fetching the managed identity token on the
way. Prints one line of JSON.
"""

import time

T_TOP = time.perf_counter()

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import azure.functions as func

# The worker forwards log records to the host; here they are made and dropped.
logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
T_HOST = time.perf_counter()

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import UnassignUser

T_IMPORTED = time.perf_counter()
device_id = os.environ["BENCH_DEVICE_ID"]
request = func.HttpRequest(
    method="POST",
    url="http://localhost:7071/api/UnassignUser",
    body=json.dumps({"deviceId": device_id, "ticketId": "BENCH-1"}).encode(),
    headers={"content-type": "application/json"},
    route_params={},
)
response = asyncio.run(UnassignUser.main(request))
T_DONE = time.perf_counter()

answer = json.loads(response.get_body())
if response.status_code != 200 or answer.get("status") != "unassigned":
    sys.exit(f"unexpected answer {response.status_code}: {answer}")
from coldreport import report  # after the clock stopped

report("ours", T_TOP, T_HOST, T_IMPORTED, T_DONE)
