"""A 2,000-device job worked by two dev hosts, one of them killed mid-job, against a Graph that
throttles beyond a scaled-down write limit and misbehaves on purpose.

Scaled: Intune's 100 writes per 20 s becomes 100 per second (GRAPH_WRITE_WINDOW_SECONDS=1) and
the jobs' budget 90 of them; claims last 20 s and a received message hides for 5 s, so a dead
host's work is taken over within seconds rather than minutes. Bounds are liveness limits only.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from devtools.azurite import Azurite, ensure_installed
from devtools.graph_emulator import Fault, GraphEmulator
from devtools.identity_emulator import IdentityEmulator
from tests.stack import Stack

KEY = "jobs-scale-key"
WAIT_SECONDS = 600.0  # liveness only; it takes about a minute here
NEW_OWNER = "new.owner@contoso.example"
SETTINGS = {
    "JOB_PUBLIC_BASE_URL": "https://jobs.example.test",
    "GRAPH_WRITE_WINDOW_SECONDS": "1",
    "JOB_WRITES_PER_WINDOW": "90",
    "JOB_CLAIM_SECONDS": "10",
    "UNASSIGN_DEADLINE_SECONDS": "5",  # a claim lasts at least twice this (plus 10 s)
}


@pytest.fixture
def storage() -> Iterator[Azurite]:
    ensure_installed()
    with Azurite() as started:
        yield started


@pytest.fixture
def limited_graph() -> Iterator[GraphEmulator]:
    graph = GraphEmulator(write_limit=100, write_window_seconds=1.0, seed=False).start()
    yield graph
    graph.stop()


def device_id(n: int) -> str:
    return str(uuid.UUID(int=0xA11_0000_0000 + n))


def tenant(graph: GraphEmulator) -> list[dict[str, str]]:
    """2,000 inputs: 1,900 assigned devices, 40 unassigned, 40 unknown, 20 ambiguous serials."""
    entries: list[dict[str, str]] = []
    for n in range(1_900):
        graph.add_device(device_id(n), f"SCALE{n:05d}", f"user{n}@contoso.example")
        entries.append({"deviceId": device_id(n)})
    for n in range(1_900, 1_940):
        graph.add_device(device_id(n), f"SCALE{n:05d}")
        entries.append({"deviceId": device_id(n)})
    entries += [{"deviceId": device_id(n)} for n in range(5_000, 5_040)]  # not in the tenant
    for n in range(10):
        for twin in range(2):
            graph.add_device(device_id(6_000 + 2 * n + twin), f"TWIN{n:04d}", "a@contoso.example")
        entries += [{"serialNumber": f"TWIN{n:04d}"}] * 2
    return entries


def test_a_2000_device_job_survives_throttling_faults_and_a_killed_host(
    limited_graph: GraphEmulator, identity: IdentityEmulator, storage: Azurite
) -> None:
    graph = limited_graph
    entries = tenant(graph)
    reassigned, lost_answer = device_id(700), device_id(701)
    graph.inject(
        Fault("status", method="POST", status=429, retry_after="1", count=30),
        Fault("status", method="POST", status=503, count=20),
        Fault("status", method="POST", device_id=reassigned, status=503, reassign_to=NEW_OWNER),
        Fault("drop_after", method="POST", device_id=lost_answer),
    )
    hosts = [
        Stack(
            graph,
            identity,
            "--function-key",
            KEY,
            "--queue-receive-visibility",
            "5",
            AzureWebJobsStorage=storage.connection_string,
            **SETTINGS,
        )
        for _ in range(2)
    ]
    try:
        started = time.monotonic()
        answer = hosts[0].post(
            "/api/BulkUnassignJobs",
            json={"devices": entries, "ticketId": "RITM-SCALE"},
            headers={"x-functions-key": KEY},
        )
        posted = time.monotonic() - started
        assert answer.status_code == 202, answer.text
        status_path = urlsplit(answer.headers["location"]).path
        victim = hosts[0]
        killed = False
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            assert time.monotonic() < deadline, "the job did not end in time"
            reader = hosts[1]  # the survivor answers every poll
            polled = reader.client.get(status_path)
            if polled.status_code == 200:
                break
            assert polled.status_code == 202, polled.text
            if not killed and polled.json()["finished"] >= 500:
                os.kill(victim._process.pid, signal.SIGKILL)  # mid-job, by its PID
                victim._process.wait()
                killed = True
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        report = polled.json()
        print(f"\n2,000-device job: POST answered in {posted:.2f} s, ended in {elapsed:.1f} s")
        assert killed
        results = report["results"]
        assert [r["index"] for r in results] == list(range(2_000))  # one each, in order
        statuses = Counter(r["status"] for r in results)
        assert statuses == {
            "unassigned": 1_899,
            "alreadyUnassigned": 40,
            "device-not-found": 40,
            "ambiguous-serial": 20,
            "user-mismatch": 1,
        }, statuses
        assert report["status"] == "done" and report["resend"] == []
        # The reassigned device keeps its new owner; the lost answer's write counts once.
        assert results[700]["status"] == "user-mismatch"
        kept = graph.device(reassigned)
        assert kept is not None and kept["userPrincipalName"] == NEW_OWNER
        assert results[701]["status"] == "unassigned"
        # No device written twice after its write was accepted, across both hosts.
        accepted = Counter(
            call.path for call in graph.graph_calls("POST") if call.status in (200, 204, 0)
        )
        assert max(accepted.values()) == 1, accepted.most_common(3)
        # Graph's own limit was never hit: the shared budget kept both hosts under it.
        assert graph.throttled == 0
    finally:
        for host in hosts:
            if host._process.poll() is None:
                host.close()
            else:
                host.client.close()
