"""Per-request cost of msgraph-sdk in a warm process, next to raw httpx (run in .venv-sdk).

The client is built once, as in ``sdk_cold.py``; each timed call is the SDK's device read and
``unassign_user_from_device.post()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from azure.identity.aio import ManagedIdentityCredential
from kiota_authentication_azure.azure_identity_authentication_provider import (  # type: ignore[import-not-found]
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient  # type: ignore[import-not-found]

from bench.contenders import warm


def sdk(client: Any) -> warm.Prepare:
    devices = client.device_management.windows_autopilot_device_identities

    def prepare(device_id: str) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            item = devices.by_windows_autopilot_device_identity_id(device_id)
            device = await item.get()
            if device is None or not device.user_principal_name:
                raise RuntimeError(f"the SDK read {device}")
            await item.unassign_user_from_device.post()

        return call

    return prepare


async def main() -> None:
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
    warmup, iterations = warm.counts()
    base = warm.graph_base()
    async with ManagedIdentityCredential() as credential, warm.raw_client() as raw_client:
        auth = AzureIdentityAuthenticationProvider(
            credential, scopes=[f"{base}/.default"], allowed_hosts=[str(urlsplit(base).hostname)]
        )
        adapter = GraphRequestAdapter(auth)
        adapter.base_url = f"{base}/v1.0"
        client = GraphServiceClient(request_adapter=adapter)
        samples = await warm.alternate(
            {"msgraph-sdk": sdk(client), "raw httpx": warm.raw(raw_client)},
            warm.device_ids(),
            warmup,
            iterations,
        )
    warm.report(samples)


if __name__ == "__main__":
    asyncio.run(main())
