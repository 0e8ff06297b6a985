# ruff: noqa: E402 - the clock starts before anything is imported
"""Cold start of msgraph-sdk (run by .venv-sdk's Python): the same read and unassign.

The client is built as the SDK's documentation shows for app-only access, with what any non-Graph
host needs: ``allowed_hosts`` names the emulator's host (otherwise Kiota silently sends no token),
and the scope and the request adapter's base URL point at the emulator. The credential is
azure-identity's async ``ManagedIdentityCredential`` (aiohttp), as the SDK expects. What the host
has loaded before any function runs (asyncio, ``azure.functions``) is imported first, as in the
other contenders. Prints one line of JSON.
"""

import time

T_TOP = time.perf_counter()

import asyncio
import logging
import os
import sys
from urllib.parse import urlsplit

import azure.functions  # noqa: F401 - loaded by the host

logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
T_HOST = time.perf_counter()

from azure.identity.aio import ManagedIdentityCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (  # type: ignore[import-not-found]
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient  # type: ignore[import-not-found]

T_IMPORTED = time.perf_counter()


async def first_unassign(base: str, device_id: str) -> None:
    async with ManagedIdentityCredential() as credential:
        auth = AzureIdentityAuthenticationProvider(
            credential,
            scopes=[f"{base}/.default"],
            allowed_hosts=[str(urlsplit(base).hostname)],
        )
        adapter = GraphRequestAdapter(auth)
        adapter.base_url = f"{base}/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        devices = client.device_management.windows_autopilot_device_identities
        item = devices.by_windows_autopilot_device_identity_id(device_id)
        device = await item.get()
        if device is None or not device.user_principal_name:
            sys.exit(f"unexpected read: {device}")
        await item.unassign_user_from_device.post()


asyncio.run(first_unassign(os.environ["GRAPH_ENDPOINT"], os.environ["BENCH_DEVICE_ID"]))
T_DONE = time.perf_counter()

from coldreport import report  # after the clock stopped

report("msgraph-sdk", T_TOP, T_HOST, T_IMPORTED, T_DONE)
