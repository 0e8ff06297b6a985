# ruff: noqa: E402 - the clock starts before anything is imported
"""Cold start of the floor: the least a process can do for the same two Graph calls.

What the host has loaded before any function runs (asyncio, ``azure.functions``) is imported as in
the other contenders; then the token comes from the same credential our function uses (the sync
``ManagedIdentityCredential``, system-assigned) and raw httpx reads the device and unassigns it.
No validation, no retries, no audit record. Prints one line of JSON.
"""

import time

T_TOP = time.perf_counter()

import asyncio  # noqa: F401 - loaded by the host
import logging
import os
import sys

import azure.functions  # noqa: F401 - loaded by the host

logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
T_HOST = time.perf_counter()

import httpx
from azure.identity import ManagedIdentityCredential

T_IMPORTED = time.perf_counter()
base = os.environ["GRAPH_ENDPOINT"]
device_id = os.environ["BENCH_DEVICE_ID"]
token = ManagedIdentityCredential(client_id=None).get_token(f"{base}/.default").token
path = f"/v1.0/deviceManagement/windowsAutopilotDeviceIdentities/{device_id}"
with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
    read = client.get(path)
    if read.status_code != 200 or not read.json().get("userPrincipalName"):
        sys.exit(f"unexpected read {read.status_code}: {read.text}")
    write = client.post(f"{path}/unassignUserFromDevice")
    if write.status_code != 204:
        sys.exit(f"unexpected unassign {write.status_code}: {write.text}")
T_DONE = time.perf_counter()

from coldreport import report  # after the clock stopped

report("floor", T_TOP, T_HOST, T_IMPORTED, T_DONE)
