"""Bulk jobs end to end: dev hosts (HTTP, queue and timer functions) on a real Azurite and the
Graph emulator, called over real sockets as a flow would.

Each test gets its own Azurite, so no job of one test is worked during another.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from devtools.azurite import Azurite, ensure_installed
from devtools.entra_emulator import API_CLIENT_ID, TENANT_ID, EntraEmulator
from devtools.graph_emulator import DEMO_ASSIGNED_ID, DEMO_UNASSIGNED_ID, GraphEmulator
from tests.contract import hook
from tests.e2e import assert_problem
from tests.stack import Stack

KEY = "jobs-e2e-key"
BASE = "https://jobs.example.test"  # JOB_PUBLIC_BASE_URL: never the request's Host
WAIT_SECONDS = 90.0  # a loose liveness bound for a busy machine
START = "/api/BulkUnassignJobs"


@pytest.fixture
def storage() -> Iterator[Azurite]:
    ensure_installed()
    with Azurite() as started:
        yield started


@pytest.fixture
def job_host(fresh_stack: Callable[..., Stack], storage: Azurite) -> Callable[..., Stack]:
    def start(**settings: str) -> Stack:
        return fresh_stack(
            "--function-key",
            KEY,
            AzureWebJobsStorage=storage.connection_string,
            JOB_PUBLIC_BASE_URL=BASE,
            **settings,
        )

    return start


def keyed(**headers: str) -> dict[str, str]:
    return {"x-functions-key": KEY, **headers}


def follow(stack: Stack, location: str, until: float = WAIT_SECONDS) -> httpx.Response:
    """Poll the status URL, as Power Automate does, without a key, until it is not 202."""
    path = urlsplit(location).path
    deadline = time.monotonic() + until
    while time.monotonic() < deadline:
        answer = stack.client.get(path)
        if answer.status_code != 202:
            return answer
        assert answer.headers["location"] == location
        assert 5 <= int(answer.headers["retry-after"]) <= 60
        time.sleep(0.2)  # not the Retry-After: the test only needs to see it finish
    raise AssertionError(f"the job did not end within {until} s: {answer.json()}")


def test_a_job_starts_with_202_and_its_status_url_gives_the_report(
    job_host: Callable[..., Stack], graph: GraphEmulator
) -> None:
    stack = job_host()
    body = {
        "devices": [
            {"deviceId": DEMO_ASSIGNED_ID},
            {"serialNumber": "PF3ABC12"},
            {"deviceID": "typo"},
            {"deviceId": "0f0e0d0c-0b0a-0908-0706-050403020100"},
        ],
        "ticketId": "RITM0042",
    }
    started = stack.post(START, json=body, headers=keyed(**{"X-Correlation-Id": "job-1"}))
    assert started.status_code == 202, started.text
    doc = started.json()
    assert doc["status"] == "running" and doc["total"] == 4
    location = started.headers["location"]
    assert location == doc["statusUrl"] and location.startswith(f"{BASE}{START}/{doc['jobId']}/")
    assert started.headers["retry-after"] == "5"
    report = follow(stack, location)
    assert report.status_code == 200, report.text
    final = report.json()
    assert final["jobId"] == doc["jobId"] and final["status"] == "done"
    assert [r["status"] for r in final["results"]] == [
        "unassigned", "alreadyUnassigned", "invalid-request", "device-not-found",
    ]  # fmt: skip
    assert final["results"][2]["input"] is None and final["resend"] == []
    assert len(graph.graph_calls("POST")) == 1
    records = stack.audit()
    events = [record["event"] for record in records]
    assert "bulkUnassignJobStarted" in events
    assert events.count("bulkUnassignJobInput") == 4  # one per input, the refused one too
    for record in records:
        if record["event"].startswith("bulkUnassignJob"):
            assert record["jobId"] == doc["jobId"], record
    inputs = [r for r in records if r["event"] == "bulkUnassignJobInput"]
    assert all(r["caller"] == {"kind": "functionKey"} for r in inputs)  # who started the job
    assert [r["correlationId"] for r in inputs] == ["job-1"] * 4
    assert sorted(r["itemIndex"] for r in inputs) == [0, 1, 2, 3]
    [ended] = [r for r in records if r["event"] == "bulkUnassignJobEnded"]
    assert ended["outcome"] == "done" and ended["caller"] == {"kind": "functionKey"}


def test_a_job_takes_10000_devices_and_refuses_10001_starting_nothing(
    job_host: Callable[..., Stack], graph: GraphEmulator
) -> None:
    stack = job_host()
    devices = [{"deviceId": str(uuid.UUID(int=n))} for n in range(10_001)]
    refused = assert_problem(
        stack.post(START, json={"devices": devices, "ticketId": "RITM-MANY"}, headers=keyed()), 400
    )
    assert "10000" in refused["detail"].replace(",", ""), refused["detail"]
    # The control: one device fewer starts (and is cancelled at once, so nothing is worked).
    started = stack.post(
        START, json={"devices": devices[:10_000], "ticketId": "RITM-MANY"}, headers=keyed()
    )
    assert started.status_code == 202, started.text
    assert started.json()["total"] == 10_000
    cancelled = stack.client.delete(f"{START}/{started.json()['jobId']}", headers=keyed())
    assert cancelled.status_code == 200
    starts = [r for r in stack.audit() if r["event"] == "bulkUnassignJobStarted"]
    assert [(r["outcome"], r["jobId"]) for r in starts] == [
        ("invalid-request", None),  # the refused body started nothing
        ("started", started.json()["jobId"]),
    ]


def test_the_status_url_needs_no_key_and_a_wrong_capability_is_an_unknown_job(
    job_host: Callable[..., Stack], graph: GraphEmulator
) -> None:
    stack = job_host()
    refused = stack.post(START, json={"devices": [{"deviceId": DEMO_UNASSIGNED_ID}]})
    assert refused.status_code == 401 and not refused.content  # the key is needed to start
    started = stack.post(
        START, json={"devices": [{"deviceId": DEMO_UNASSIGNED_ID}]}, headers=keyed()
    )
    job_id = started.json()["jobId"]
    assert follow(stack, started.headers["location"]).status_code == 200  # no key sent
    wrong = assert_problem(stack.client.get(f"{START}/{job_id}/{'A' * 32}"), 404)
    unknown = assert_problem(stack.client.get(f"{START}/{uuid.uuid4().hex}/{'A' * 32}"), 404)
    assert (wrong["type"], wrong["detail"]) == (unknown["type"], unknown["detail"])


def test_an_idempotency_key_returns_the_same_job_and_another_body_is_409(
    job_host: Callable[..., Stack], graph: GraphEmulator
) -> None:
    stack = job_host()
    body = {"devices": [{"deviceId": DEMO_ASSIGNED_ID}], "ticketId": "CHG7"}
    first = stack.post(START, json=body, headers=keyed(**{"Idempotency-Key": "CHG7-run-1"}))
    again = stack.post(START, json=body, headers=keyed(**{"Idempotency-Key": "CHG7-run-1"}))
    assert first.status_code == again.status_code == 202
    assert first.json()["jobId"] == again.json()["jobId"]
    assert again.headers["location"] != first.headers["location"]  # a fresh capability
    for answer in (first, again):
        assert follow(stack, answer.headers["location"]).json()["jobId"] == first.json()["jobId"]
    assert len(graph.graph_calls("POST")) == 1  # one job, one write
    other = {"devices": [{"deviceId": DEMO_UNASSIGNED_ID}], "ticketId": "CHG7"}
    conflict = stack.post(START, json=other, headers=keyed(**{"Idempotency-Key": "CHG7-run-1"}))
    assert assert_problem(conflict, 409)["type"].endswith(":idempotency-conflict")
    fresh = stack.post(START, json=other, headers=keyed(**{"Idempotency-Key": "CHG7-run-2"}))
    assert fresh.status_code == 202 and fresh.json()["jobId"] != first.json()["jobId"]
    bad = stack.post(START, json=other, headers=keyed(**{"Idempotency-Key": "has space"}))
    assert "Idempotency-Key" in assert_problem(bad, 400)["detail"]


def devices(graph: GraphEmulator, count: int) -> list[dict[str, Any]]:
    ids = [str(uuid.UUID(int=0x10B_0000_0000 + n)) for n in range(count)]
    for n, device_id in enumerate(ids):
        graph.add_device(device_id, f"E2E{n:05d}", f"user{n}@contoso.example")
    return [{"deviceId": device_id} for device_id in ids]


def test_cancel_ends_the_job_and_open_inputs_are_cancelled(
    job_host: Callable[..., Stack], graph: GraphEmulator
) -> None:
    # One write per 20 s: the job is still running when it is cancelled.
    stack = job_host(JOB_WRITES_PER_WINDOW="1")
    started = stack.post(START, json={"devices": devices(graph, 5)}, headers=keyed())
    job_id = started.json()["jobId"]
    assert assert_problem(stack.client.delete(f"{START}/{uuid.uuid4().hex}", headers=keyed()), 404)
    cancelled = stack.client.delete(f"{START}/{job_id}", headers=keyed())
    assert cancelled.status_code == 200, cancelled.text
    report = cancelled.json()
    assert report["status"] == "cancelled"
    assert report["summary"]["cancelled"] >= 3
    assert {r["status"] for r in report["results"]} <= {"unassigned", "cancelled"}
    assert follow(stack, started.headers["location"]).json()["status"] == "cancelled"
    time.sleep(1.0)
    writes = len(graph.graph_calls("POST"))
    assert writes <= 5 - report["summary"]["cancelled"]  # nothing cancelled was written


def test_a_job_past_its_deadline_reports_the_rest_as_expired_and_to_resend(
    job_host: Callable[..., Stack], graph: GraphEmulator
) -> None:
    stack = job_host(JOB_WRITES_PER_WINDOW="1", JOB_DEADLINE_SECONDS="3")
    started = stack.post(START, json={"devices": devices(graph, 4)}, headers=keyed())
    report = follow(stack, started.headers["location"])
    assert report.status_code == 200
    final = report.json()
    assert final["status"] == "expired" and final["summary"]["expired"] >= 2
    expired = [r["input"] for r in final["results"] if r["status"] == "expired"]
    assert final["resend"] == expired


def test_the_status_answers_conform_to_the_definition(
    job_host: Callable[..., Stack], graph: GraphEmulator
) -> None:
    """The stack's client checks every answer against the connector's definition (the hook)."""
    stack = job_host()
    started = stack.post(START, json={"devices": [{"deviceId": DEMO_ASSIGNED_ID}]}, headers=keyed())
    follow(stack, started.headers["location"])
    assert stack.client.event_hooks["response"] == [hook]


def test_with_entra_id_required_the_status_url_still_needs_nothing_but_itself(
    job_host: Callable[..., Stack], graph: GraphEmulator
) -> None:
    with EntraEmulator() as entra:
        stack = job_host(
            CALLER_TENANT_ID=TENANT_ID,
            CALLER_AUDIENCE=API_CLIENT_ID,
            CALLER_JWKS_URL=entra.jwks_url,
        )
        body = {"devices": [{"deviceId": DEMO_ASSIGNED_ID}]}
        assert_problem(stack.post(START, json=body, headers=keyed()), 401)  # a token is needed
        token = {"Authorization": f"Bearer {entra.token()}"}
        started = stack.post(START, json=body, headers=keyed(**token))
        assert started.status_code == 202, started.text
        assert follow(stack, started.headers["location"]).status_code == 200  # no key, no token
        job_id = started.json()["jobId"]
        assert_problem(stack.client.delete(f"{START}/{job_id}", headers=keyed()), 401)
        ended = stack.client.delete(f"{START}/{job_id}", headers=keyed(**token))
        assert ended.status_code == 200 and ended.json()["status"] == "done"
