"""Shared by the warm contenders: raw httpx as the yardstick, and an interleaved timing loop.

Each warm process times one contender against raw httpx making the same two calls (read the
device, unassign it) to the same emulator with a token fetched once beforehand. The two alternate
call by call, so drift in the machine's load falls on both alike. Every call unassigns a fresh
device that the benchmark added before starting the process (ids in ``BENCH_DEVICES_FILE``).
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
from azure.identity import ManagedIdentityCredential

DEVICES = "/v1.0/deviceManagement/windowsAutopilotDeviceIdentities"

# prepare(device_id) does what is not timed and returns the timed call.
Prepare = Callable[[str], Callable[[], Awaitable[None]]]


def device_ids() -> Iterator[str]:
    with open(os.environ["BENCH_DEVICES_FILE"]) as file:
        ids: list[str] = json.load(file)
    return iter(ids)


def graph_base() -> str:
    return os.environ["GRAPH_ENDPOINT"]


def raw_client() -> httpx.AsyncClient:
    """One client and one token, fetched once with the same credential our function uses."""
    base = graph_base()
    token = ManagedIdentityCredential().get_token(f"{base}/.default").token
    return httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"})


def raw(client: httpx.AsyncClient) -> Prepare:
    def prepare(device_id: str) -> Callable[[], Awaitable[None]]:
        path = f"{DEVICES}/{device_id}"

        async def call() -> None:
            read = await client.get(path)
            if read.status_code != 200 or not read.json().get("userPrincipalName"):
                raise RuntimeError(f"raw read answered {read.status_code}: {read.text}")
            write = await client.post(f"{path}/unassignUserFromDevice")
            if write.status_code != 204:
                raise RuntimeError(f"raw unassign answered {write.status_code}: {write.text}")

        return call

    return prepare


async def alternate(
    contenders: dict[str, Prepare], devices: Iterator[str], warmup: int, iterations: int
) -> dict[str, list[float]]:
    """Seconds per call for each contender, after ``warmup`` untimed rounds."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(warmup + iterations):
        if round_ == warmup:
            gc.collect()
        for name in names if round_ % 2 == 0 else reversed(names):
            call = contenders[name](next(devices))
            started = time.perf_counter()
            await call()
            elapsed = time.perf_counter() - started
            if round_ >= warmup:
                samples[name].append(elapsed)
    return samples


def report(samples: dict[str, list[float]], **extra: object) -> None:
    print(json.dumps({"samples": samples, **extra}))


def counts() -> tuple[int, int]:
    """Warm-up rounds and timed rounds, as the benchmark asked for."""
    return int(os.environ["BENCH_WARMUP"]), int(os.environ["BENCH_ITERATIONS"])
