"""UnassignUser over real sockets: dev host, real azure-identity, Graph emulator."""

from __future__ import annotations

import uuid

import pytest

from devtools.graph_emulator import DEMO_ASSIGNED_ID, DEMO_UNASSIGNED_ID, GraphEmulator
from tests.e2e import assert_problem
from tests.stack import Stack

ALEX = "alex.wilber@contoso.example"
UNASSIGN_PATH = f"/v1.0/deviceManagement/windowsAutopilotDeviceIdentities/{DEMO_ASSIGNED_ID}"


def test_unassigns_the_user_and_says_so(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(
        json={"deviceId": "{" + DEMO_ASSIGNED_ID.upper() + "}", "ticketId": "INC0012345"}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "unassigned"
    assert body["deviceId"] == DEMO_ASSIGNED_ID
    assert body["serialNumber"] == "5CG1234XYZ"
    assert body["previousUserPrincipalName"] == ALEX
    assert body["previousAddressableUserName"] == "Alex Wilber"
    assert body["ticketId"] == "INC0012345"
    assert body["correlationId"] == response.headers["x-correlation-id"]
    assert len(body["graphRequestIds"]) == 2
    assert ALEX in body["message"] and "minutes" in body["message"]
    device = graph.device(DEMO_ASSIGNED_ID)
    assert device is not None and device["userPrincipalName"] == ""
    calls = [(c.method, c.path) for c in graph.graph_calls()]
    assert calls == [("GET", UNASSIGN_PATH), ("POST", UNASSIGN_PATH + "/unassignUserFromDevice")]


def test_device_id_in_the_route_needs_no_body(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(f"/api/UnassignUser/{DEMO_ASSIGNED_ID.upper()}")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "unassigned"
    assert response.json()["ticketId"] is None


def test_repeating_a_call_is_safe_and_writes_once(stack: Stack, graph: GraphEmulator) -> None:
    first = stack.post(json={"deviceId": DEMO_ASSIGNED_ID})
    second = stack.post(json={"deviceId": DEMO_ASSIGNED_ID})
    assert first.json()["status"] == "unassigned"
    assert second.status_code == 200
    assert second.json()["status"] == "alreadyUnassigned"
    assert len(graph.graph_calls("POST")) == 1


def test_a_device_without_user_is_not_written(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(json={"deviceId": DEMO_UNASSIGNED_ID})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "alreadyUnassigned"
    assert body["previousUserPrincipalName"] is None
    assert "nothing was changed" in body["message"]
    assert graph.graph_calls("GET") and not graph.graph_calls("POST")


def test_someone_else_on_the_device_is_409_and_no_write(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(
        json={"deviceId": DEMO_ASSIGNED_ID, "expectedUserPrincipalName": "leaver@contoso.example"}
    )
    doc = assert_problem(response, 409)
    assert doc["currentUserPrincipalName"] == ALEX
    assert ALEX in doc["detail"]
    assert graph.graph_calls("GET") and not graph.graph_calls("POST")
    device = graph.device(DEMO_ASSIGNED_ID)
    assert device is not None and device["userPrincipalName"] == ALEX


def test_the_expected_user_matches_whatever_its_case(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(
        json={"deviceId": DEMO_ASSIGNED_ID, "expectedUserPrincipalName": ALEX.upper()}
    )
    assert response.status_code == 200, response.text
    assert len(graph.graph_calls("POST")) == 1


def test_unknown_device_is_404_with_graphs_ids(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(json={"deviceId": str(uuid.uuid4())})
    doc = assert_problem(response, 404)
    assert doc["code"] == "ResourceNotFound"
    assert doc["request-id"]
    assert "not the Intune managed device id" in doc["detail"]
    assert not graph.graph_calls("POST")


BAD_BODIES = [
    {"deviceId": "00000000-0000-0000-0000-000000000000"},
    {"deviceId": "../" + DEMO_ASSIGNED_ID},
    {"deviceId": DEMO_ASSIGNED_ID + "/unassignUserFromDevice"},
    {"deviceId": DEMO_ASSIGNED_ID + "?$expand=x"},
    {"deviceId": DEMO_ASSIGNED_ID + "#x"},
    {"deviceId": "%7B" + DEMO_ASSIGNED_ID + "%7D"},
    {"deviceId": DEMO_ASSIGNED_ID + "\rx"},
    {"deviceId": 12345},
    {"deviceId": None},
    {"deviceId": [DEMO_ASSIGNED_ID]},
    {"deviceID": DEMO_ASSIGNED_ID},
    {"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC 1"},
    {"deviceId": DEMO_ASSIGNED_ID, "dryRun": "true"},
]


@pytest.mark.parametrize("body", BAD_BODIES)
def test_bad_bodies_are_400_before_any_graph_call(
    stack: Stack, graph: GraphEmulator, body: dict[str, object]
) -> None:
    assert_problem(stack.post(json=body), 400)
    assert graph.requests == []


BAD_ROUTES = [
    "00000000-0000-0000-0000-000000000000",
    "..%2F" + DEMO_ASSIGNED_ID,
    "%2E%2E%2F" + DEMO_ASSIGNED_ID,
    DEMO_ASSIGNED_ID + "%2FunassignUserFromDevice",
    DEMO_ASSIGNED_ID + "%3F%24select%3Did",
    DEMO_ASSIGNED_ID + "%23",
    "%24" + DEMO_ASSIGNED_ID,
    "%257B" + DEMO_ASSIGNED_ID + "%257D",
    DEMO_ASSIGNED_ID + "%00",
    DEMO_ASSIGNED_ID + "%0D%0Ax",
    "not-a-guid",
]


@pytest.mark.parametrize("route", BAD_ROUTES)
def test_bad_route_ids_are_400_before_any_graph_call(
    stack: Stack, graph: GraphEmulator, route: str
) -> None:
    assert_problem(stack.post(f"/api/UnassignUser/{route}"), 400)
    assert graph.requests == []


def test_positive_control_the_request_log_sees_graph_calls(
    stack: Stack, graph: GraphEmulator
) -> None:
    """The probe the two tests above rely on does see a call when one is made."""
    stack.post(f"/api/UnassignUser/%7B{DEMO_ASSIGNED_ID}%7D")
    assert [c.method for c in graph.requests] == ["GET", "POST"]


def test_route_and_body_ids_that_differ_are_400(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(
        f"/api/UnassignUser/{DEMO_ASSIGNED_ID}", json={"deviceId": DEMO_UNASSIGNED_ID}
    )
    assert "differ" in assert_problem(response, 400)["detail"]
    assert graph.requests == []


def test_oversized_body_is_413(stack: Stack, graph: GraphEmulator) -> None:
    body = (
        b'{"deviceId": "' + DEMO_ASSIGNED_ID.encode() + b'", "ticketId": "' + b"x" * 20000 + b'"}'
    )
    assert_problem(stack.post(content=body, headers={"Content-Type": "application/json"}), 413)
    assert graph.requests == []


def test_malformed_json_is_400_naming_the_problem(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(content=b'{"deviceId": ', headers={"Content-Type": "application/json"})
    assert "not valid JSON" in assert_problem(response, 400)["detail"]


def test_a_form_post_is_415(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(
        content=b"deviceId=x", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_problem(response, 415)
    assert graph.requests == []


def test_other_methods_are_not_served(stack: Stack, graph: GraphEmulator) -> None:
    assert stack.client.delete(f"/api/UnassignUser/{DEMO_ASSIGNED_ID}").status_code == 405
    assert stack.client.put("/api/UnassignUser", json={}).status_code == 405
    assert graph.requests == []


def test_callers_correlation_id_reaches_graph_and_comes_back(
    stack: Stack, graph: GraphEmulator
) -> None:
    response = stack.post(
        json={"deviceId": DEMO_ASSIGNED_ID}, headers={"X-Correlation-Id": "flow-run:0858.1_a"}
    )
    assert response.headers["x-correlation-id"] == "flow-run:0858.1_a"
    assert response.json()["correlationId"] == "flow-run:0858.1_a"
    # Graph takes only a GUID as client-request-id: one made for this request, for every call.
    made = response.json()["graphClientRequestId"]
    assert str(uuid.UUID(made)) == made
    assert {c.client_request_id for c in graph.requests} == {made}
    assert [c.method for c in graph.requests] == ["GET", "POST"]
    [record] = [r for r in stack.audit() if r["correlationId"] == "flow-run:0858.1_a"]
    assert record["graphClientRequestId"] == made


def test_a_guid_correlation_id_is_graphs_client_request_id(
    stack: Stack, graph: GraphEmulator
) -> None:
    cid = "0b7e6f3a-5c2d-4e1f-8a9b-7c6d5e4f3a2b"
    response = stack.post(json={"deviceId": DEMO_ASSIGNED_ID}, headers={"X-Correlation-Id": cid})
    assert response.status_code == 200, response.text
    assert response.json()["correlationId"] == response.json()["graphClientRequestId"] == cid
    assert {c.client_request_id for c in graph.requests} == {cid}


def test_servicenow_incident_numbers_as_correlation_ids_get_their_own_guid(
    stack: Stack, graph: GraphEmulator
) -> None:
    headers = {"X-Correlation-Id": "INC0012345"}
    first = stack.post(json={"deviceId": DEMO_ASSIGNED_ID}, headers=headers)
    second = stack.client.get(f"/api/UnassignUser/{DEMO_ASSIGNED_ID}", headers=headers)
    problem = stack.post(json={"deviceId": "not-a-guid"}, headers=headers)
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert problem.status_code == 400
    ids = [r.json()["graphClientRequestId"] for r in (first, second, problem)]
    assert len(set(ids)) == 3 and all(str(uuid.UUID(i)) == i for i in ids)
    assert all(r.headers["x-correlation-id"] == "INC0012345" for r in (first, second, problem))
    assert {c.client_request_id for c in graph.requests} == set(ids[:2])


def test_an_unsafe_correlation_id_is_replaced(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(
        json={"deviceId": DEMO_ASSIGNED_ID}, headers={"X-Correlation-Id": "a b;c"}
    )
    made = response.headers["x-correlation-id"]
    assert made != "a b;c" and uuid.UUID(made)
    assert {c.client_request_id for c in graph.requests} == {made}


@pytest.mark.parametrize("path", ["/api/UnassignUser", "/api/BulkUnassignUser"])
def test_a_problem_comes_as_plain_json_when_the_request_asks(
    stack: Stack, graph: GraphEmulator, path: str
) -> None:
    """The connector sends Accept: application/json (a setheader policy): same document."""
    headers = {"X-Correlation-Id": "accept-1"}
    default = stack.post(path, json={"deviceId": "nope"}, headers=headers)
    assert_problem(default, 400)  # application/problem+json: the same probe sees the other type
    asked = stack.post(
        path, json={"deviceId": "nope"}, headers={**headers, "Accept": "application/json"}
    )
    assert asked.status_code == 400
    assert asked.headers["content-type"] == "application/json; charset=utf-8"
    assert {**asked.json(), "graphClientRequestId": None} == {
        **default.json(),
        "graphClientRequestId": None,
    }
    assert not graph.graph_calls()
