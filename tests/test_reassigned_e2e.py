"""The guard holds at the moment of the write: a device reassigned while we waited is left alone.

Every wait between the read and the write (a retry after 429 or 5xx, a failed attempt) is
followed by a fresh read, over real sockets against the Graph emulator, which reassigns the
device at the moment the fault fires, as an admin in the portal would.
"""

from __future__ import annotations

import pytest

from devtools.graph_emulator import DEMO_ASSIGNED_ID, Fault, GraphEmulator
from tests.e2e import assert_problem
from tests.stack import Stack

ALEX = "alex.wilber@contoso.example"
NEW_OWNER = "new.owner@contoso.example"
BODY = {"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC0012345"}


def user_of(graph: GraphEmulator) -> str:
    device = graph.device(DEMO_ASSIGNED_ID)
    assert device is not None
    return device["userPrincipalName"]


@pytest.mark.parametrize("guarded", [False, True])
@pytest.mark.parametrize("status", [429, 503])
def test_a_device_reassigned_during_a_retry_wait_keeps_its_new_owner(
    stack: Stack, graph: GraphEmulator, status: int, guarded: bool
) -> None:
    graph.inject(
        Fault("status", method="POST", status=status, retry_after="0.2", reassign_to=NEW_OWNER)
    )
    body = {**BODY, "expectedUserPrincipalName": ALEX} if guarded else BODY
    doc = assert_problem(stack.post(json=body), 409)
    assert doc["currentUserPrincipalName"] == NEW_OWNER
    assert ALEX in doc["detail"]
    assert user_of(graph) == NEW_OWNER  # the new owner was not removed
    assert [c.method for c in graph.requests] == ["GET", "POST", "GET"]
    [record] = [r for r in stack.audit() if r["correlationId"] == doc["correlationId"]]
    assert record["httpStatus"] == 409 and record["previousUserPrincipalName"] is None


def test_positive_control_the_same_wait_without_a_reassignment_writes(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("status", method="POST", status=429, retry_after="0.2"))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "unassigned"
    assert [c.method for c in graph.requests] == ["GET", "POST", "GET", "POST"]


def test_a_write_that_acted_before_its_5xx_is_unassigned_naming_the_first_user(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("act_then", method="POST", status=503, retry_after="0.2"))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "unassigned"
    assert response.json()["previousUserPrincipalName"] == ALEX
    assert [c.method for c in graph.requests] == ["GET", "POST", "GET"]  # no second write


def test_someone_else_unassigning_during_a_429_wait_is_already_unassigned(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(Fault("status", method="POST", status=429, retry_after="0.2", reassign_to=""))
    response = stack.post(json=BODY)
    assert response.status_code == 200, response.text
    # Intune refused our only write (429), so this request removed nobody.
    assert response.json()["status"] == "alreadyUnassigned"
    assert response.json()["previousUserPrincipalName"] is None
    assert [c.method for c in graph.requests] == ["GET", "POST", "GET"]


def test_a_bulk_device_reassigned_while_throttled_is_reported_on_its_input(
    stack: Stack, graph: GraphEmulator
) -> None:
    graph.inject(
        Fault(
            "status",
            method="POST",
            device_id=DEMO_ASSIGNED_ID,
            status=429,
            retry_after="0.2",
            reassign_to=NEW_OWNER,
        )
    )
    response = stack.post(
        "/api/BulkUnassignUser", json={"devices": [{"deviceId": DEMO_ASSIGNED_ID}]}
    )
    assert response.status_code == 207, response.text
    [item] = response.json()["results"]
    assert item["status"] == "user-mismatch" and item["httpStatus"] == 409
    assert user_of(graph) == NEW_OWNER
