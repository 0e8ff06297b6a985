"""BulkUnassignUser over real sockets: order, duplicates, pacing, throttling and limits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from devtools.graph_emulator import DEMO_ASSIGNED_ID, DEMO_UNASSIGNED_ID, Fault, GraphEmulator
from devtools.identity_emulator import IdentityEmulator
from shared.bulk import CONCURRENCY, MAX_BODY_BYTES
from tests.e2e import assert_problem
from tests.stack import Stack

BULK = "/api/BulkUnassignUser"


def assigned_devices(graph: GraphEmulator, count: int, prefix: str) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for n, device_id in enumerate(ids):
        graph.add_device(device_id, f"{prefix}{n:04d}", f"{prefix.lower()}{n}@contoso.example")
    return ids


@pytest.fixture
def throttled_graph() -> Iterator[GraphEmulator]:
    """A Graph emulator that enforces a write limit of 25 per second, as Intune does per 20 s."""
    with GraphEmulator(write_limit=25, write_window_seconds=1.0) as emulator:
        yield emulator


def test_a_mixed_bulk_of_100_under_throttling_accounts_for_every_input(
    throttled_graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    graph = throttled_graph
    by_id = assigned_devices(graph, 60, "BID")
    by_serial = assigned_devices(graph, 10, "BSN")
    devices: list[object] = [{"deviceId": d} for d in by_id]
    devices += [{"serialNumber": f"BSN{n:04d}"} for n in range(10)]
    devices += [{"deviceId": DEMO_UNASSIGNED_ID}] * 5  # already unassigned, named 5 times
    devices += [{"deviceId": str(uuid.uuid4())} for _ in range(5)]  # unknown: 404
    devices += [{"deviceId": "not-a-guid"}, {"serialNumber": "AB"}, {}, "x", {"deviceID": "y"}]
    devices += [{"deviceId": by_serial[n]} for n in range(5)]  # duplicates of serial inputs
    devices += [
        {"deviceId": DEMO_ASSIGNED_ID, "expectedUserPrincipalName": "leaver@contoso.example"}
    ] * 10
    assert len(devices) == 100
    stack = Stack(graph, identity, BULK_DEADLINE_SECONDS="60")
    try:
        response = stack.post(BULK, json={"devices": devices, "ticketId": "RITM0010001"})
    finally:
        stack.close()
    assert response.status_code == 207, response.text
    body = response.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(100))
    # Entries that failed validation are not echoed (the index says which one it was).
    rejected = range(80, 85)
    assert [r["input"] for r in results] == [
        None if n in rejected else entry for n, entry in enumerate(devices)
    ]
    statuses = [r["status"] for r in results]
    assert statuses[:70] == ["unassigned"] * 70
    assert statuses[70:75] == ["alreadyUnassigned"] * 5
    assert statuses[75:80] == ["device-not-found"] * 5
    assert statuses[80:85] == ["invalid-request"] * 5
    assert statuses[85:90] == ["unassigned"] * 5
    assert statuses[90:] == ["user-mismatch"] * 10
    assert [r["httpStatus"] for r in results[75:]] == [404] * 5 + [400] * 5 + [200] * 5 + [409] * 10
    assert [r["deviceId"] for r in results[60:70]] == by_serial
    assert [r["deviceId"] for r in results[85:90]] == by_serial[:5]
    assert body["summary"] == {
        "total": 100,
        "succeeded": 80,
        "failed": 20,
        "retryable": 0,
        "unassigned": 75,
        "alreadyUnassigned": 5,
        "wouldUnassign": 0,
    }
    assert body["resend"] == [] and "retryAfter" not in body  # present, empty: nothing to resend
    assert graph.throttled > 0  # the emulator did throttle: retries carried every write through
    assert graph.writes_accepted == 70  # one accepted write per unique assigned device
    assert {(graph.device(d) or {}).get("userPrincipalName") for d in by_id + by_serial} == {""}
    assert graph.peak_in_flight <= CONCURRENCY


def _three_bulk_calls_at_once(identity: IdentityEmulator, pace: str) -> GraphEmulator:
    """Three bulk calls of 12 devices, sent together, against a limit of 10 writes per second."""
    with GraphEmulator(write_limit=10, write_window_seconds=1.0) as graph:
        chunks = [assigned_devices(graph, 12, f"PACE{n}X") for n in range(3)]
        stack = Stack(
            graph,
            identity,
            GRAPH_WRITES_PER_WINDOW=pace,
            GRAPH_WRITE_WINDOW_SECONDS="1",
            BULK_DEADLINE_SECONDS="60",
        )
        try:
            with ThreadPoolExecutor(3) as pool:
                responses = list(
                    pool.map(
                        lambda ids: stack.post(
                            BULK, json={"devices": [{"deviceId": d} for d in ids]}
                        ),
                        chunks,
                    )
                )
        finally:
            stack.close()
        for response in responses:
            assert response.status_code == 200, response.text
            assert response.json()["summary"]["unassigned"] == 12
        assert graph.writes_accepted == 36
        return graph


def test_paced_writes_never_provoke_a_429_even_from_concurrent_bulk_calls(
    identity: IdentityEmulator,
) -> None:
    # The pace counts each write from its answer, and Intune (like the emulator) counts it on
    # arrival, which is never later: the same limit on both sides can never be exceeded.
    assert _three_bulk_calls_at_once(identity, pace="10").throttled == 0
    # Positive control: without the pace, the same calls provoke the emulator's 429s.
    assert _three_bulk_calls_at_once(identity, pace="1000").throttled > 5


def test_items_out_of_time_are_listed_to_resend(identity: IdentityEmulator) -> None:
    with GraphEmulator(write_limit=3, write_window_seconds=60) as graph:
        ids = assigned_devices(graph, 6, "SLOW")
        stack = Stack(graph, identity, BULK_DEADLINE_SECONDS="10")
        try:
            devices = [{"deviceId": d} for d in ids]
            response = stack.post(BULK, json={"devices": devices, "ticketId": "RITM2"})
        finally:
            stack.close()
    assert response.status_code == 207, response.text
    body = response.json()
    assert body["summary"]["unassigned"] == 3 and body["summary"]["retryable"] == 3
    retried = [r for r in body["results"] if r["status"] == "graph-throttled"]
    assert [r["httpStatus"] for r in retried] == [503] * 3
    assert body["resend"] == [r["input"] for r in retried]
    assert 1 <= body["retryAfter"] <= 60


def test_a_device_named_by_id_and_by_serial_is_written_once(
    stack: Stack, graph: GraphEmulator
) -> None:
    devices = [
        {"deviceId": DEMO_ASSIGNED_ID},
        {"serialNumber": "5cg1234xyz"},
        {"deviceId": DEMO_ASSIGNED_ID.upper()},
    ]
    response = stack.post(BULK, json={"devices": devices})
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == ["unassigned"] * 3
    assert len(graph.graph_calls("POST")) == 1


def test_conflicting_expected_users_for_one_device_change_nothing(
    stack: Stack, graph: GraphEmulator
) -> None:
    devices = [
        {"deviceId": DEMO_ASSIGNED_ID, "expectedUserPrincipalName": "alex.wilber@contoso.example"},
        {"serialNumber": "5CG1234XYZ", "expectedUserPrincipalName": "someone@contoso.example"},
    ]
    response = stack.post(BULK, json={"devices": devices})
    assert response.status_code == 207
    assert [r["httpStatus"] for r in response.json()["results"]] == [400, 400]
    assert not graph.graph_calls("POST")


def test_bulk_dry_run_writes_nothing(stack: Stack, graph: GraphEmulator) -> None:
    devices = [{"deviceId": DEMO_ASSIGNED_ID}, {"deviceId": DEMO_UNASSIGNED_ID}]
    response = stack.post(BULK, json={"devices": devices, "dryRun": True})
    assert response.status_code == 200, response.text
    assert [r["status"] for r in response.json()["results"]] == [
        "wouldUnassign",
        "alreadyUnassigned",
    ]
    assert graph.graph_calls("GET") and not graph.graph_calls("POST")


def test_every_item_failing_on_permission_answers_the_single_call_status(
    stack: Stack, graph: GraphEmulator
) -> None:
    ids = assigned_devices(graph, 20, "PERM")
    graph.inject(Fault("status", method="GET", status=403, count=100))
    response = stack.post(BULK, json={"devices": [{"deviceId": d} for d in ids]})
    doc = assert_problem(response, 502)
    assert "DeviceManagementServiceConfig.ReadWrite.All" in doc["detail"]
    assert len(graph.requests) <= CONCURRENCY  # new work stopped at the first refusal


def test_identity_down_answers_503_once_not_per_item(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    stack = fresh_stack()
    identity.set_fault("drop")
    ids = assigned_devices(graph, 20, "IDDN")
    assert_problem(stack.post(BULK, json={"devices": [{"deviceId": d} for d in ids]}), 503)
    assert identity.token_requests <= CONCURRENCY
    assert graph.requests == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"devices": [{"deviceId": DEMO_ASSIGNED_ID}] * 101}, "at most 100"),
        ({"devices": []}, "non-empty"),
        ({"devices": {"deviceId": DEMO_ASSIGNED_ID}}, "array"),
        ({}, "array"),
        ({"devices": [{"deviceId": DEMO_ASSIGNED_ID}], "dryRun": "true"}, "dryRun"),
        ({"devices": [{"deviceId": DEMO_ASSIGNED_ID}], "ticketId": "a b"}, "ticketId"),
        ({"devices": [{"deviceId": DEMO_ASSIGNED_ID}], "device": []}, "'device'"),
    ],
)
def test_bad_bulk_requests_are_400_naming_the_limit(
    stack: Stack, graph: GraphEmulator, body: dict[str, object], words: str
) -> None:
    assert words in assert_problem(stack.post(BULK, json=body), 400)["detail"]
    assert graph.requests == []


def test_bulk_body_over_512_kib_is_413(stack: Stack, graph: GraphEmulator) -> None:
    devices = [{"serialNumber": "S" * 128} for _ in range(100)] * 36
    body = json.dumps({"devices": devices}).encode()
    assert len(body) > MAX_BODY_BYTES == 512 * 1024
    doc = assert_problem(stack.post(BULK, content=body), 413)
    assert "524288" in doc["detail"]
    assert graph.requests == []


def test_bulk_body_of_exactly_512_kib_is_read(stack: Stack, graph: GraphEmulator) -> None:
    body = json.dumps({"devices": [{"deviceId": "x"}]}).encode()
    body = body + b" " * (MAX_BODY_BYTES - len(body))
    response = stack.post(BULK, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 207, response.text  # read and answered: its one entry is bad
    assert graph.requests == []


def test_bulk_audits_each_input_and_the_request(stack: Stack, graph: GraphEmulator) -> None:
    cid = f"bulk-{uuid.uuid4().hex}"
    devices = [{"deviceId": DEMO_ASSIGNED_ID}, {"serialNumber": "5CG1234XYZ"}, {"deviceId": "x"}]
    stack.post(
        BULK, json={"devices": devices, "ticketId": "RITM9"}, headers={"X-Correlation-Id": cid}
    )
    records = [r for r in stack.audit() if r["correlationId"] == cid]
    items = [r for r in records if r["event"] == "bulkUnassignItem"]
    assert [r["itemIndex"] for r in items] == [0, 1, 2]
    assert [r["outcome"] for r in items] == ["unassigned", "unassigned", "invalid-request"]
    assert items[0]["previousUserPrincipalName"] == "alex.wilber@contoso.example"
    assert items[0]["graphRequestIds"] == items[1]["graphRequestIds"]  # one write for both
    [summary] = [r for r in records if r["event"] == "bulkUnassignUser"]
    assert summary["httpStatus"] == 207 and summary["ticketId"] == "RITM9"
