"""4. Throttled throughput: bulk calls through the dev host against the write limit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import FEW_429S, Devices, Results, base_env, dev_host, heading, say
from devtools.graph_emulator import GraphEmulator
from devtools.identity_emulator import IdentityEmulator

# Target from the issue.
THROUGHPUT_MIN = 0.90


@dataclass
class BulkTally:
    calls: int = 0
    resent_items: int = 0
    answers: dict[int, int] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)  # device id -> its last status word


async def send_bulk(
    client: httpx.AsyncClient, devices: list[dict[str, str]], tally: BulkTally, ticket: str
) -> None:
    """One caller's loop, as a flow does it: send, wait ``retryAfter``, send ``resend`` again."""
    pending = devices
    while pending:
        answer = await client.post(
            "/api/BulkUnassignUser", json={"devices": pending, "ticketId": ticket}
        )
        tally.calls += 1
        tally.answers[answer.status_code] = tally.answers.get(answer.status_code, 0) + 1
        if answer.status_code not in (200, 207):
            raise RuntimeError(f"bulk call answered {answer.status_code}: {answer.text}")
        doc = answer.json()
        for result in doc["results"]:
            tally.final[result["input"]["deviceId"]] = result["status"]
        pending = doc.get("resend") or []
        tally.resent_items += len(pending)
        if pending:
            await asyncio.sleep(float(doc.get("retryAfter") or 1))


async def bulk_run(base: str, ids: list[str], batch: int, parallel: int) -> tuple[BulkTally, float]:
    tally = BulkTally()
    batches = [ids[i : i + batch] for i in range(0, len(ids), batch)]
    limit = asyncio.Semaphore(parallel)

    async def one(index: int, chunk: list[str]) -> None:
        async with limit:
            await send_bulk(client, [{"deviceId": d} for d in chunk], tally, f"BENCH-{index}")

    async with httpx.AsyncClient(base_url=base, timeout=300.0) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one(i, chunk) for i, chunk in enumerate(batches)))
        elapsed = time.perf_counter() - started
    return tally, elapsed


def throughput(
    identity: IdentityEmulator,
    devices_total: int,
    batch: int,
    parallels: Sequence[int],
    limit: int,
    window: float,
    pace_window: float,
    scratch: Path,
    results: Results,
) -> None:
    pace = "the same" if pace_window == window else f"{limit} per {pace_window:g} s"
    heading(
        f"4. Throttled throughput: {devices_total} devices in bulk calls of {batch} through the "
        f"dev host; Graph emulator limit {limit} writes per {window:g} s (429 + Retry-After "
        f"beyond), the function's pace set to {pace}"
    )
    ceiling = limit / window
    # The limit is a sliding window, so the first window's writes need no wait: the fastest any
    # client can finish is (batches of `limit` - 1) windows, slightly above the ceiling's rate.
    fastest = (-(-devices_total // limit) - 1) * window
    say(
        f"   ceiling {limit}/{window:g} s = {ceiling:.1f} writes/s; the fastest the limit allows "
        f"for {devices_total} writes is {fastest:.1f} s (= {devices_total / fastest / ceiling:.1%} "
        "of the ceiling)"
    )
    for parallel in parallels:
        how = "one call at a time" if parallel == 1 else f"{parallel} calls at once"
        say(f"   -- {how}, each resending its `resend` items after `retryAfter` until done:")
        with GraphEmulator(seed=False, write_limit=limit, write_window_seconds=window) as graph:
            devices = Devices(graph)
            ids = [devices.add() for _ in range(devices_total)]
            env = base_env(
                graph,
                identity,
                GRAPH_WRITES_PER_WINDOW=str(limit),
                GRAPH_WRITE_WINDOW_SECONDS=f"{pace_window:g}",
                PYTHONUNBUFFERED="1",
            )
            with dev_host(env, scratch) as base:
                tally, elapsed = asyncio.run(bulk_run(base, ids, batch, parallel))
            lost = [d for d in ids if not devices.unassigned(d)]
            unreported = [
                d for d in ids if tally.final.get(d) not in ("unassigned", "alreadyUnassigned")
            ]
            writes, throttled = graph.writes_accepted, graph.throttled
        rate = writes / elapsed
        say(
            f"   {writes} writes accepted in {elapsed:.2f} s = {rate:.1f} writes/s = "
            f"{rate / ceiling:.1%} of the ceiling ({elapsed / fastest:.2f}x the fastest possible)"
        )
        say(
            f"   429s provoked: {throttled} ({throttled / max(writes, 1):.1%} of the writes); "
            f"bulk calls: {tally.calls} {tally.answers}; items resent: {tally.resent_items}"
        )
        say(
            f"   items lost: {len(lost)} still assigned, {len(unreported)} without a success result"
        )
        few = throttled <= FEW_429S * writes
        results.add(
            f"at least 90% of the throttle ceiling, 0 lost, few 429s ({how})",
            f"{rate / ceiling:.1%} of {ceiling:g} writes/s, {len(lost) + len(unreported)} lost, "
            f"{throttled} 429s ({'few' if few else 'more than few'})",
            rate / ceiling >= THROUGHPUT_MIN and not lost and not unreported and few,
        )
