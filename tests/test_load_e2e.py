"""Load and faults through the dev host: every request answered, once, and accounted for.

Bounds here are loose liveness checks (nothing left hanging), never performance assertions;
`make bench` measures speed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx

from devtools.graph_emulator import Fault, GraphEmulator
from devtools.identity_emulator import IdentityEmulator
from tests.contract import async_hook
from tests.stack import Stack

LIVENESS_SECONDS = 120.0
MAPPED_FAILURES = {502, 503, 504}
# Production's deadline, and no client-side write pace (this emulator enforces no write limit):
# 300 requests on 2 busy cores must be judged on correctness, not on speed.
UNDER_LOAD = {"UNASSIGN_DEADLINE_SECONDS": "20", "GRAPH_WRITES_PER_WINDOW": "10000"}


def devices(graph: GraphEmulator, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for n, device_id in enumerate(ids):
        graph.add_device(device_id, f"LOAD{n:05d}", f"user{n}@contoso.example")
    return ids


async def fire(base_url: str, ids: list[str], tag: str) -> list[httpx.Response]:
    hooks = {"response": [async_hook]}
    limits = httpx.Limits(max_connections=300)
    async with httpx.AsyncClient(
        base_url=base_url, timeout=LIVENESS_SECONDS, event_hooks=hooks, limits=limits
    ) as client:
        return await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.post(
                        "/api/UnassignUser",
                        json={"deviceId": d},
                        headers={"X-Correlation-Id": f"{tag}-{n}"},
                    )
                    for n, d in enumerate(ids)
                )
            ),
            LIVENESS_SECONDS,
        )


def audit_by_correlation(stack: Stack, tag: str) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for record in stack.audit():
        cid = str(record["correlationId"])
        if cid.startswith(f"{tag}-"):
            found.setdefault(cid, []).append(record)
    return found


def test_300_concurrent_requests_are_each_answered_once(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    ids = devices(graph, 300)
    stack = fresh_stack(**UNDER_LOAD)
    responses = asyncio.run(fire(stack.base_url, ids, "load"))
    assert [r.status_code for r in responses] == [200] * 300
    assert [r.json()["deviceId"] for r in responses] == ids
    assert {r.json()["status"] for r in responses} == {"unassigned"}
    assert identity.token_requests == 1
    records = audit_by_correlation(stack, "load")
    assert len(records) == 300 and all(len(r) == 1 for r in records.values())
    assert len(graph.graph_calls("POST")) == 300


def test_faults_under_load_give_mapped_statuses_and_matching_audit(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    ids = devices(graph, 300)
    graph.inject(
        Fault("status", status=429, retry_after="0.2", count=40),
        Fault("status", status=429, count=20),
        Fault("status", status=500, count=30),
        Fault("status", status=503, retry_after="30", count=10),
        Fault("slow", delay=1.0, count=20),
        Fault("drop", count=20),
        Fault("drop_after", method="POST", count=20),
        Fault("stale", method="GET", count=10),
    )
    stack = fresh_stack(**UNDER_LOAD)
    responses = asyncio.run(fire(stack.base_url, ids, "chaos"))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200} | MAPPED_FAILURES, statuses
    assert statuses.count(200) > 200  # most get through their retries
    for response in responses:
        if response.status_code == 200:
            assert response.json()["status"] in ("unassigned", "alreadyUnassigned")
        else:
            assert response.headers["content-type"].startswith("application/problem+json")
    records = audit_by_correlation(stack, "chaos")
    assert len(records) == 300
    for n, response in enumerate(responses):
        [record] = records[f"chaos-{n}"]
        assert record["httpStatus"] == response.status_code
    for n, response in enumerate(responses):
        if response.status_code == 200:  # success means the device really has no user now
            device = graph.device(ids[n])
            assert device is not None and device["userPrincipalName"] == ""


def post_until(stack: Stack, body: dict[str, str], want: int) -> httpx.Response:
    deadline = time.monotonic() + LIVENESS_SECONDS
    while True:
        response = stack.post(json=body)
        if response.status_code == want or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def test_identity_trouble_mid_flight_fails_cleanly_and_recovers(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    ids = devices(graph, 60)
    stack = fresh_stack()
    identity.set_fault("slow", delay=8.0)
    slow = asyncio.run(fire(stack.base_url, ids[:20], "slowid"))
    assert {r.status_code for r in slow} == {503}
    assert all("managed identity" in r.json()["detail"] for r in slow)
    assert identity.token_requests <= 3  # one shared fetch, not one per request
    identity.set_fault("status", status=500)
    failing = asyncio.run(fire(stack.base_url, ids[20:40], "failid"))
    assert {r.status_code for r in failing} == {503}
    identity.clear_fault()
    recovered = post_until(stack, {"deviceId": ids[40]}, 200)
    assert recovered.status_code == 200, recovered.text
    after = asyncio.run(fire(stack.base_url, ids[41:60], "backid"))
    assert {r.status_code for r in after} == {200}
    records = audit_by_correlation(stack, "slowid") | audit_by_correlation(stack, "failid")
    assert len(records) == 40 and all(r[0]["httpStatus"] == 503 for r in records.values())
