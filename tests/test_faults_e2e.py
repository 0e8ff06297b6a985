"""Graph misbehaving at random points of single and bulk requests, over real sockets.

Hypothesis picks faults (garbage and undecodable bodies, huge and deeply nested ones, HTML from a
proxy, absurd Retry-After values, dropped connections, writes that act and then fail, devices
reassigned at that moment) and where they strike. Whatever happens, each request gets one
well-formed answer the connector definition describes (the Stack's client checks that), one audit
record (one per input in bulk), no 500, no write after its answer, and no write that does not
follow a read showing the user first read.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.graph_emulator import DEVICES_PATH, Fault, GraphEmulator, RecordedRequest
from devtools.identity_emulator import IdentityEmulator
from shared.request import same_user
from tests.stack import Stack

# Its own profile (tests/conftest.py): small and repeatable, each example a few real requests.
FAULTS = settings.get_profile("faults")
DEVICES = [
    ("5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c40", "FLT0001", "first.user0@contoso.example"),
    ("5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c41", "FLT0002", "first.user1@contoso.example"),
    ("5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c42", "FLT0003", ""),
]
NEW_OWNER = "new.owner@contoso.example"
ANSWERS = {200, 207, 404, 409, 502, 503, 504}
MAX_RETRY_AFTER = 300
# Absurd values go on answers that hold nothing beyond their own request: a 429 to a write holds
# every write of the process (capped at 300 s), which would starve the examples that follow.
ODD_RETRY_AFTER = [None, "0", "0.05", "86400", "1e308", "nan", "-1", "soon", "Infinity"]
SMALL_RETRY_AFTER = [None, "0", "0.05", "0.1"]
# When each example's answer came (wall clock, as the emulator logs), by Graph client request id.
ANSWERED: dict[str, float] = {}


@st.composite
def faults(draw: st.DrawFn) -> Fault:
    kind = draw(
        st.sampled_from(
            [
                "status",
                "garbage",
                "content_type",
                "huge",
                "nested",
                "nested_message",
                "act_then",
                "drop",
                "drop_after",
                "stale",
                "expired_token",
            ]
        )
    )
    method = draw(st.sampled_from(["GET", "POST", None]))
    device_id = draw(st.sampled_from([d[0] for d in DEVICES] + [None]))
    status = draw(st.sampled_from([200, 204, 429, 500, 502, 503, 504]))
    if kind in ("status", "act_then") and status < 300:
        status = 503
    odd = not (status == 429 and method != "GET")
    fault = Fault(
        kind,
        method=method,
        device_id=device_id,
        count=draw(st.integers(1, 2)),
        status=status,
        retry_after=draw(st.sampled_from(ODD_RETRY_AFTER if odd else SMALL_RETRY_AFTER)),
        reassign_to=draw(st.sampled_from([None, None, "", NEW_OWNER])),
        encoding=draw(st.sampled_from([None, "gzip"])) if kind == "garbage" else None,
        size=9 * 1024 * 1024,
        depth=draw(st.sampled_from([65, 5000, 100_000])),
    )
    return fault


requests_ = st.sampled_from(["single", "guarded", "status", "bulk", "bulk-serial"])


@pytest.fixture(scope="module")
def fault_stack(
    _graph_emulator: GraphEmulator, _identity_emulator: IdentityEmulator
) -> Iterator[Stack]:
    stack = Stack(_graph_emulator, _identity_emulator, UNASSIGN_DEADLINE_SECONDS="3",
                  BULK_DEADLINE_SECONDS="4")  # fmt: skip
    yield stack
    stack.close()


def reset(graph: GraphEmulator) -> None:
    """The three devices as they started, no faults; the request log is kept for the end."""
    graph.clear_faults()
    for device_id, serial, user in DEVICES:
        graph.add_device(device_id, serial, user)


def send(stack: Stack, shape: str, cid: str) -> httpx.Response:
    headers = {"X-Correlation-Id": cid}
    first, second, third = (d[0] for d in DEVICES)
    if shape == "status":
        return stack.client.get(f"/api/UnassignUser/{first}", headers=headers)
    if shape == "single":
        return stack.post(json={"deviceId": first}, headers=headers)
    if shape == "guarded":
        body = {"deviceId": first, "expectedUserPrincipalName": DEVICES[0][2].upper()}
        return stack.post(json=body, headers=headers)
    devices: list[dict[str, str]] = [{"deviceId": first}, {"deviceId": second}]
    devices += [{"serialNumber": "FLT0003"}] if shape == "bulk-serial" else [{"deviceId": third}]
    return stack.post("/api/BulkUnassignUser", json={"devices": devices}, headers=headers)


def assert_well_formed(response: httpx.Response, shape: str) -> dict[str, Any]:
    assert response.status_code in ANSWERS, response.text
    doc: dict[str, Any] = response.json()
    assert int(response.headers.get("retry-after", "0")) <= MAX_RETRY_AFTER
    assert doc.get("retryAfterSeconds", 0) <= MAX_RETRY_AFTER
    assert doc.get("retryAfter", 0) <= MAX_RETRY_AFTER
    assert str(uuid.UUID(doc["graphClientRequestId"])) == doc["graphClientRequestId"]
    if shape.startswith("bulk") and response.status_code in (200, 207):
        assert len(doc["results"]) == 3
    return doc


def assert_audited_once(stack: Stack, cid: str, shape: str, status: int) -> None:
    records = [r for r in stack.audit() if r["correlationId"] == cid]
    requests = [r for r in records if r["event"] != "bulkUnassignItem"]
    items = [r for r in records if r["event"] == "bulkUnassignItem"]
    assert len(requests) == 1 and requests[0]["httpStatus"] == status
    assert [r["itemIndex"] for r in items] == ([0, 1, 2] if shape.startswith("bulk") else [])


def assert_writes_follow_fresh_reads(calls: list[RecordedRequest]) -> None:
    """Each write is sent right after a read of its device showing the user first read."""
    by_device: dict[str, list[RecordedRequest]] = defaultdict(list)
    for sent in calls:
        if sent.path.startswith(DEVICES_PATH + "/"):
            by_device[sent.path.removeprefix(DEVICES_PATH + "/").split("/")[0]].append(sent)
    for device_id, seen in by_device.items():
        first = next((c.shown_user for c in seen if c.shown_user is not None), None)
        assert seen[0].method == "GET", (device_id, seen)
        for before, call in itertools.pairwise(seen):
            if call.method != "POST":
                continue
            assert before.method == "GET", (device_id, seen)
            assert first and before.shown_user and same_user(before.shown_user, first), seen


def assert_success_is_true(graph: GraphEmulator, doc: dict[str, Any]) -> None:
    """A device reported unassigned (or already so) has no user now."""
    results = doc.get("results", [doc])
    for result in results:
        if result.get("status") in ("unassigned", "alreadyUnassigned"):
            device = graph.device(result["deviceId"])
            assert device is not None and device["userPrincipalName"] == "", (result, device)


@FAULTS
@given(shape=requests_, injected=st.lists(faults(), min_size=1, max_size=3))
def test_any_graph_misbehaviour_gets_one_honest_answer(
    fault_stack: Stack, _graph_emulator: GraphEmulator, shape: str, injected: list[Fault]
) -> None:
    graph, stack = _graph_emulator, fault_stack
    reset(graph)
    graph.inject(*injected)
    cid = f"fault-{uuid.uuid4().hex}"
    response = send(stack, shape, cid)
    answered = time.time()
    doc = assert_well_formed(response, shape)
    ANSWERED[doc["graphClientRequestId"]] = answered  # checked again at the end, failed or not
    assert_audited_once(stack, cid, shape, response.status_code)
    calls = [c for c in graph.requests if c.client_request_id == doc["graphClientRequestId"]]
    assert all(c.time <= answered for c in calls)
    assert_writes_follow_fresh_reads(calls)
    assert_success_is_true(graph, doc)


def test_no_write_of_any_example_landed_after_its_answer(
    fault_stack: Stack, _graph_emulator: GraphEmulator
) -> None:
    """Runs after the property: a stray write would arrive within a deadline of its answer."""
    assert len(ANSWERED) >= FAULTS.max_examples // 2  # the property ran, in this module
    time.sleep(5)  # longer than the bulk deadline: anything still pending has landed by now
    writes = [
        c
        for c in _graph_emulator.requests
        if c.method == "POST" and c.client_request_id in ANSWERED
    ]
    assert writes, "positive control: the examples did write"
    assert [c for c in writes if c.time > ANSWERED[c.client_request_id or ""]] == []


def _seen(*steps: tuple[str, str | None]) -> list[RecordedRequest]:
    path = f"{DEVICES_PATH}/{DEVICES[0][0]}"
    return [
        RecordedRequest(
            m,
            path if m == "GET" else f"{path}/unassignUserFromDevice",
            "",
            None,
            None,
            float(n),
            shown_user=user,
        )
        for n, (m, user) in enumerate(steps)
    ]


def test_positive_control_the_write_probe_sees_writes_without_a_fresh_read() -> None:
    alex, bob = "alex@contoso.example", "bob@contoso.example"
    assert_writes_follow_fresh_reads(
        _seen(("GET", alex), ("POST", None), ("GET", alex), ("POST", None))
    )
    for bad in (
        _seen(("GET", alex), ("POST", None), ("POST", None)),  # retried with no read between
        _seen(("GET", alex), ("POST", None), ("GET", bob), ("POST", None)),  # someone else now
        _seen(("GET", alex), ("POST", None), ("GET", None), ("POST", None)),  # the read failed
        _seen(
            ("POST", None),
        ),
    ):
        with pytest.raises(AssertionError):
            assert_writes_follow_fresh_reads(bad)
