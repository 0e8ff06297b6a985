"""Token reuse: identity-endpoint requests per 1,000 calls of our handler in one process.

A cold burst of concurrent calls comes first (nothing cached yet), then the rest in waves of the
same size, all through ``shared.handler.handle_unassign`` in-process with ``asyncio.gather``. The
identity emulator's own counter is read before, after the burst and at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter

import httpx

from bench.contenders import warm
from shared.handler import handle_unassign


async def token_requests() -> int:
    async with httpx.AsyncClient() as client:
        stats = (await client.get(os.environ["BENCH_IDENTITY_STATS"])).json()
    return int(stats["tokenRequests"])


async def wave(device_ids: list[str], statuses: Counter[str]) -> None:
    results = await asyncio.gather(
        *(
            handle_unassign(
                {"Content-Type": "application/json"},
                json.dumps({"deviceId": device_id}).encode(),
                None,
            )
            for device_id in device_ids
        )
    )
    statuses.update(f"{r.status} {r.json().get('status', r.json().get('type'))}" for r in results)


async def main() -> None:
    logging.basicConfig(level=logging.INFO, handlers=[logging.NullHandler()])
    burst, calls = int(os.environ["BENCH_BURST"]), int(os.environ["BENCH_CALLS"])
    devices = warm.device_ids()
    statuses: Counter[str] = Counter()
    before = await token_requests()
    await wave([next(devices) for _ in range(burst)], statuses)
    after_burst = await token_requests()
    done = burst
    while done < calls:
        size = min(burst, calls - done)
        await wave([next(devices) for _ in range(size)], statuses)
        done += size
    after_all = await token_requests()
    print(
        json.dumps(
            {
                "burst": burst,
                "calls": calls,
                "burst_token_requests": after_burst - before,
                "token_requests": after_all - before,
                "statuses": dict(statuses),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
