"""Per-request cost of our function in a warm process, next to raw httpx (run in .venv).

``UnassignUser.main`` is awaited directly, as the worker does; building the ``HttpRequest`` is the
worker's work and is not timed. Our client-side write pace is set wide open by the benchmark
(GRAPH_WRITES_PER_WINDOW) so that it measures the function, not Intune's limit.

A second, shorter phase takes the network out: both sides talk to an ``httpx.MockTransport``
that answers at once, so what remains is each side's own CPU time per call (our handler through
``shared.handler.handle_unassign`` with its Graph client given that transport).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import azure.functions as func
import httpx

import UnassignUser
from bench.contenders import warm
from shared.graph import GraphClient
from shared.handler import handle_unassign
from shared.identity import TokenProvider
from shared.settings import Settings, load_settings


def ours(device_id: str) -> Callable[[], Awaitable[None]]:
    request = func.HttpRequest(
        method="POST",
        url="http://localhost:7071/api/UnassignUser",
        body=json.dumps({"deviceId": device_id, "ticketId": "BENCH-1"}).encode(),
        headers={"content-type": "application/json"},
        route_params={},
    )

    async def call() -> None:
        response = await UnassignUser.main(request)
        if response.status_code != 200:
            raise RuntimeError(f"our function answered {response.status_code}")

    return call


# ── without the network ──


def canned(request: httpx.Request) -> httpx.Response:
    """Graph's answers, at once: the device with a user for a read, 204 for the unassign."""
    if request.method == "GET":
        device_id = request.url.path.rsplit("/", 1)[1]
        device = {"id": device_id, "serialNumber": "BENCH1", "userPrincipalName": "u@x.example"}
        return httpx.Response(200, json=device, headers={"request-id": str(uuid.uuid4())})
    return httpx.Response(204, headers={"request-id": str(uuid.uuid4())})


class _Token:
    token = "bench"  # noqa: S105 - not a secret: the mock transport never checks it
    expires_on = int(time.time()) + 86400


class _Credential:
    def get_token(self, *scopes: str) -> Any:
        return _Token()


def offline_ours(settings: Settings) -> warm.Prepare:
    client = GraphClient(
        settings,
        TokenProvider(settings, credential_factory=lambda *_: _Credential()),
        transport=httpx.MockTransport(canned),
    )

    def prepare(device_id: str) -> Callable[[], Awaitable[None]]:
        body = json.dumps({"deviceId": device_id, "ticketId": "BENCH-1"}).encode()

        async def call() -> None:
            headers = {"content-type": "application/json"}
            result = await handle_unassign(headers, body, None, graph=lambda: client)
            if result.status != 200:
                raise RuntimeError(f"our handler answered {result.status}: {result.body!r}")

        return call

    return prepare


async def main() -> None:
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
    warmup, iterations = warm.counts()
    async with warm.raw_client() as client:
        samples = await warm.alternate(
            {"ours": ours, "raw httpx": warm.raw(client)}, warm.device_ids(), warmup, iterations
        )
    offline_raw = httpx.AsyncClient(
        base_url=warm.graph_base(),
        transport=httpx.MockTransport(canned),
        headers={"Authorization": "Bearer bench"},
    )
    async with offline_raw:
        fresh = (str(uuid.uuid4()) for _ in range(2 * (warmup + iterations)))
        offline = await warm.alternate(
            {"ours": offline_ours(load_settings()), "raw httpx": warm.raw(offline_raw)},
            fresh,
            warmup,
            iterations,
        )
    warm.report(samples, offline=offline)


if __name__ == "__main__":
    asyncio.run(main())
