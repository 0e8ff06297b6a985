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
import resource
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
usage = resource.getrusage(resource.RUSAGE_SELF)
print(
    json.dumps(
        {
            "contender": "ours",
            "done_at": T_DONE,
            "script_s": T_DONE - T_TOP,
            "host_import_s": T_HOST - T_TOP,
            "import_s": T_IMPORTED - T_HOST,
            "first_call_s": T_DONE - T_IMPORTED,
            "rss_kib": usage.ru_maxrss,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }
    )
)
