"""Throttling, Graph errors, stale reads and token trouble, over real sockets.

The shared dev host runs with UNASSIGN_DEADLINE_SECONDS=4. Time bounds here are loose liveness
checks (an answer well before the caller would give up), never performance assertions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from devtools.graph_emulator import DEMO_ASSIGNED_ID, Fault, GraphEmulator
from devtools.identity_emulator import IdentityEmulator
from tests.e2e import assert_problem
from tests.stack import Stack

ALEX = "alex.wilber@contoso.example"
PERMISSION = "DeviceManagementServiceConfig.ReadWrite.All"
BODY = {"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC0012345"}


def user_of(graph: GraphEmulator, device_id: str = DEMO_ASSIGNED_ID) -> str:
    device = graph.device(device_id)
    assert device is not None
    return device["userPrincipalName"]


def test_throttled_write_is_retried_after_retry_after(stack: Stack, graph: GraphEmulator) -> None:
    graph.inject(Fault("status", method="POST", status=429, retry_after="0.2"))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "unassigned"
    assert len(graph.graph_calls("POST")) == 2
    assert user_of(graph) == ""


def test_throttled_without_retry_after_backs_off_and_succeeds(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("status", method="GET", status=429, count=2))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    assert len(graph.graph_calls("GET")) == 3


def test_throttled_past_the_deadline_is_503_with_retry_after_at_once(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator
) -> None:
    stack = fresh_stack()  # its write pace is held for 30 s afterwards: no other test shares it
    graph.inject(Fault("status", method="POST", status=429, retry_after="30", count=5))
    started = time.monotonic()
    response = stack.post(json=BODY)
    elapsed = time.monotonic() - started
    doc = assert_problem(response, 503)
    assert response.headers["retry-after"] == "30"
    assert doc["code"] == "TooManyRequests"
    assert doc["request-id"]
    assert len(graph.graph_calls("POST")) == 1  # it did not sit out a wait it could not finish
    assert elapsed < 25  # liveness: far below Graph's 30 s, whatever the machine's load
    assert user_of(graph) == ALEX


def test_after_a_throttled_write_the_next_write_waits_without_asking_graph(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator
) -> None:
    other = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
    graph.add_device(other, "HOLD0001", "jo.leaver@contoso.example")
    stack = fresh_stack()
    graph.inject(Fault("status", method="POST", status=429, retry_after="30"))
    assert_problem(stack.post(json=BODY), 503)
    assert len(graph.graph_calls("POST")) == 1
    # Intune limits writes per app: a write for another device is held too, and says why.
    doc = assert_problem(stack.post(json={"deviceId": other}), 503)
    assert doc["type"].endswith(":graph-throttled")
    assert "Intune is throttling this app's writes" in doc["detail"]
    assert 25 <= int(stack.post(json={"deviceId": other}).headers["retry-after"]) <= 30
    assert len(graph.graph_calls("POST")) == 1  # neither of them reached Graph
    assert user_of(graph, other) == "jo.leaver@contoso.example"
    # Positive control: a host that was not throttled sends the same write at once.
    control = fresh_stack()
    assert control.post(json={"deviceId": other}).status_code == 200
    assert len(graph.graph_calls("POST")) == 2
    assert user_of(graph, other) == ""


def test_fractional_retry_after_is_rounded_up(stack: Stack, graph: GraphEmulator) -> None:
    graph.inject(Fault("status", method="GET", status=503, retry_after="12.1", count=5))
    response = stack.post(json=BODY)
    assert_problem(response, 503)
    assert response.headers["retry-after"] == "13"


def test_intune_permission_error_is_502_naming_the_permission(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("status", method="POST", status=403, intune=True))
    doc = assert_problem(stack.post(json=BODY), 502)
    assert PERMISSION in doc["detail"]
    # A new grant arrives with the app's next token, reused until 5 minutes before it expires.
    assert "can take hours" in doc["detail"] and "up to an hour" not in doc["detail"]
    assert doc["code"] == "Forbidden"
    assert "Application is not authorized" in doc["detail"]  # Intune's nested message, decoded
    assert "Url:" not in doc["detail"] and "_version" not in doc["detail"]
    assert user_of(graph) == ALEX


def test_intune_401_unknown_error_is_a_permission_problem_not_a_401(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("status", method="GET", status=401, code="UnknownError", intune=True))
    doc = assert_problem(stack.post(json=BODY), 502)
    assert PERMISSION in doc["detail"]
    assert not graph.graph_calls("POST")


def test_expired_token_is_refetched_once_then_succeeds(
    stack: Stack, graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    stack.post(json={"deviceId": DEMO_ASSIGNED_ID.replace("3f", "4f", 1)})  # warm the token
    before = identity.token_requests
    graph.clear_requests()
    graph.inject(Fault("expired_token", method="POST"))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    assert identity.token_requests == before + 1
    posts = graph.graph_calls("POST")
    assert len(posts) == 2 and posts[0].token != posts[1].token


def test_one_server_error_then_success(stack: Stack, graph: GraphEmulator) -> None:
    graph.inject(Fault("status", method="POST", status=500))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "unassigned"


def test_server_errors_until_the_deadline_are_502_with_graphs_code(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("status", method="GET", status=502, count=50))
    doc = assert_problem(stack.post(json=BODY), 502)
    assert doc["code"] == "BadGateway"
    assert len(graph.graph_calls("GET")) > 1


def test_unexpected_graph_answer_is_502(stack: Stack, graph: GraphEmulator) -> None:
    graph.inject(Fault("status", method="GET", status=409, code="Conflict"))
    doc = assert_problem(stack.post(json=BODY), 502)
    assert doc["code"] == "Conflict"


def test_stale_read_then_rejected_write_then_reread_is_already_unassigned(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.add_device(DEMO_ASSIGNED_ID, "5CG1234XYZ")  # someone already cleared it
    graph.inject(Fault("stale", method="GET", user_principal_name=ALEX))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    # Graph refused our only write, so this request removed nobody: it says so.
    assert response.json()["status"] == "alreadyUnassigned"
    assert response.json()["previousUserPrincipalName"] is None
    assert [c.method for c in graph.requests] == ["GET", "POST", "GET"]


def test_rejected_write_with_the_user_still_there_is_reported(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("status", method="POST", status=400, code="BadRequest", intune=True))
    doc = assert_problem(stack.post(json=BODY), 502)
    assert doc["code"] == "BadRequest"
    assert [c.method for c in graph.requests] == ["GET", "POST", "GET"]
    assert user_of(graph) == ALEX


def test_connection_dropped_after_the_write_landed_is_success(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("drop_after", method="POST"))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "unassigned"
    assert user_of(graph) == ""


def test_graph_never_answering_is_504(stack: Stack, graph: GraphEmulator) -> None:
    graph.inject(Fault("drop", method="GET", count=100))
    started = time.monotonic()
    doc = assert_problem(stack.post(json=BODY), 504)
    assert "did not answer" in doc["detail"] or "connection" in doc["detail"]
    assert time.monotonic() - started < 30  # liveness only: the deadline is 4 s


def test_slow_graph_times_out_as_504(stack: Stack, graph: GraphEmulator) -> None:
    graph.inject(Fault("slow", method="GET", delay=6.0, count=5))
    assert_problem(stack.post(json=BODY), 504)
    assert user_of(graph) == ALEX
