"""By serial number, dry run and the status check, over real sockets."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs

import pytest

from devtools.graph_emulator import (
    DEMO_ASSIGNED_ID,
    DEMO_DEFAULT_STRING_IDS,
    DEMO_HYPHENATED_SERIAL_ID,
    DEMO_SPACED_SERIAL_ID,
    DEMO_UNASSIGNED_ID,
    GraphEmulator,
)
from tests.e2e import assert_problem
from tests.stack import Stack


def filters(graph: GraphEmulator) -> list[str]:
    return [parse_qs(c.query)["$filter"][0] for c in graph.graph_calls("GET") if c.query]


def test_exact_serial_is_found_among_substring_matches(stack: Stack, graph: GraphEmulator) -> None:
    target = str(uuid.uuid4())
    graph.add_device(str(uuid.uuid4()), "5CG1234XYZ-B", "other@contoso.example")
    graph.add_device(str(uuid.uuid4()), "X5CG1234XYZ", "other@contoso.example")
    graph.add_device(target, "ABCD1234", "kim@contoso.example")
    graph.add_device(str(uuid.uuid4()), "ABCD12345", "other@contoso.example")
    response = stack.post(json={"serialNumber": "abcd1234", "ticketId": "INC1"})
    assert response.status_code == 200, response.text
    assert response.json()["deviceId"] == target
    assert response.json()["previousUserPrincipalName"] == "kim@contoso.example"
    device = graph.device(target)
    assert device is not None and device["userPrincipalName"] == ""
    assert filters(graph) == ["contains(serialNumber,'abcd1234')"]


def test_serial_with_spaces(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(json={"serialNumber": "  MXL 4411 22X "})
    assert response.status_code == 200, response.text
    assert response.json()["deviceId"] == DEMO_SPACED_SERIAL_ID


def test_serial_with_a_quote_is_escaped_the_odata_way(stack: Stack, graph: GraphEmulator) -> None:
    device_id = str(uuid.uuid4())
    graph.add_device(device_id, "O'BRIEN-01", "pat@contoso.example")
    graph.add_device(str(uuid.uuid4()), "OBRIEN01", "other@contoso.example")
    # "O'BRIEN01" is a substring of neither: an exact match only, so 404.
    assert_problem(stack.post(json={"serialNumber": "O'BRIEN01"}), 404)
    response = stack.post(json={"serialNumber": "o'brien-01"})
    assert response.status_code == 200, response.text
    assert response.json()["deviceId"] == device_id
    assert "contains(serialNumber,'o''brien-01')" in filters(graph)


def test_hyphenated_serial_falls_back_to_a_hyphen_free_search(
    stack: Stack, graph: GraphEmulator
) -> None:
    response = stack.post(json={"serialNumber": "R90-ABC-123"})
    assert response.status_code == 200, response.text
    assert response.json()["deviceId"] == DEMO_HYPHENATED_SERIAL_ID
    assert filters(graph) == [
        "contains(serialNumber,'R90-ABC-123')",
        "contains(serialNumber,'R90')",
    ]


def test_no_fallback_search_on_a_hyphen_free_part_too_short_to_search(
    stack: Stack, graph: GraphEmulator
) -> None:
    doc = assert_problem(stack.post(json={"serialNumber": "AB-CD-EF"}), 502)
    assert "device id" in doc["detail"]
    assert filters(graph) == ["contains(serialNumber,'AB-CD-EF')"]


def test_ambiguous_serial_is_409_with_at_most_ten_candidates(
    stack: Stack, graph: GraphEmulator
) -> None:
    for n in range(10):
        graph.add_device(str(uuid.uuid4()), "Default string", f"user{n}@contoso.example")
    doc = assert_problem(stack.post(json={"serialNumber": "default STRING"}), 409)
    assert doc["totalCount"] == 12
    assert len(doc["candidates"]) == 10
    assert {"deviceId", "serialNumber", "userPrincipalName"} == set(doc["candidates"][0])
    assert {c["serialNumber"] for c in doc["candidates"]} == {"Default string"}
    assert len({c["deviceId"] for c in doc["candidates"]}) == 10
    assert not graph.graph_calls("POST")
    for device_id in DEMO_DEFAULT_STRING_IDS:
        device = graph.device(device_id)
        assert device is not None and device["userPrincipalName"]


def test_search_pages_are_followed(stack: Stack, graph: GraphEmulator) -> None:
    target = str(uuid.uuid4())
    for n in range(150):
        graph.add_device(str(uuid.uuid4()), f"PAGE{n:04d}X", "")
    graph.add_device(target, "PAGE", "last@contoso.example")
    response = stack.post(json={"serialNumber": "page"})
    assert response.status_code == 200, response.text
    assert response.json()["deviceId"] == target
    assert len([c for c in graph.graph_calls("GET") if "skiptoken" in c.query.lower()]) == 1


def test_unknown_serial_is_404(stack: Stack, graph: GraphEmulator) -> None:
    doc = assert_problem(stack.post(json={"serialNumber": "NOPE0000"}), 404)
    assert "NOPE0000" in doc["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"serialNumber": "ABC"},
        {"serialNumber": "x"},
        {"serialNumber": " AB "},
        {"serialNumber": "A" * 129},
        {"serialNumber": "ABCD\n1234"},
        {"serialNumber": "ABCD\x001234"},
        {"serialNumber": 12345678},
        {"serialNumber": "5CG1234XYZ", "deviceId": DEMO_ASSIGNED_ID},
        {"ticketId": "INC1"},
    ],
)
def test_bad_serial_requests_are_400_without_a_graph_call(
    stack: Stack, graph: GraphEmulator, body: dict[str, object]
) -> None:
    assert_problem(stack.post(json=body), 400)
    assert graph.requests == []


def test_dry_run_reads_and_checks_but_never_writes(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(json={"serialNumber": "5CG1234XYZ", "dryRun": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "wouldUnassign"
    assert body["previousUserPrincipalName"] == "alex.wilber@contoso.example"
    assert "Dry run" in body["message"]
    assert graph.graph_calls("GET") and not graph.graph_calls("POST")
    # Positive control: the same request without dryRun does write, seen by the same probe.
    stack.post(json={"serialNumber": "5CG1234XYZ", "dryRun": False})
    assert len(graph.graph_calls("POST")) == 1


def test_dry_run_still_guards_the_expected_user(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(
        json={
            "deviceId": DEMO_ASSIGNED_ID,
            "dryRun": True,
            "expectedUserPrincipalName": "leaver@contoso.example",
        }
    )
    assert_problem(response, 409)


@pytest.mark.parametrize("value", ["true", 1, 0, None, "false"])
def test_dry_run_must_be_a_json_boolean(stack: Stack, graph: GraphEmulator, value: object) -> None:
    response = stack.post(json={"deviceId": DEMO_ASSIGNED_ID, "dryRun": value})
    assert "dryRun" in assert_problem(response, 400)["detail"]
    assert graph.requests == []


def test_status_check_confirms_the_change_took(stack: Stack, graph: GraphEmulator) -> None:
    before = stack.client.get(f"/api/UnassignUser/{DEMO_ASSIGNED_ID}")
    assert before.status_code == 200, before.text
    assert before.json()["assigned"] is True
    assert before.json()["userPrincipalName"] == "alex.wilber@contoso.example"
    assert before.json()["enrollmentState"] == "enrolled"
    assert before.json()["lastContactedDateTime"]
    stack.post(json={"deviceId": DEMO_ASSIGNED_ID})
    after = stack.client.get("/api/UnassignUser", params={"serialNumber": "5CG1234XYZ"})
    assert after.status_code == 200, after.text
    assert after.json()["assigned"] is False
    assert after.json()["userPrincipalName"] is None
    assert after.json()["deviceId"] == DEMO_ASSIGNED_ID
    assert len(graph.graph_calls("POST")) == 1


def test_status_check_never_writes(stack: Stack, graph: GraphEmulator) -> None:
    stack.client.get(f"/api/UnassignUser/{DEMO_UNASSIGNED_ID}")
    stack.client.get("/api/UnassignUser", params={"serialNumber": "MXL 4411 22X"})
    assert len(graph.graph_calls("GET")) == 3 and not graph.graph_calls("POST")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/UnassignUser", {}),
        ("/api/UnassignUser", {"serialNumber": "AB"}),
        ("/api/UnassignUser/not-a-guid", {}),
        (f"/api/UnassignUser/{DEMO_ASSIGNED_ID}", {"serialNumber": "5CG1234XYZ"}),
    ],
)
def test_bad_status_checks_are_400(
    stack: Stack, graph: GraphEmulator, path: str, params: dict[str, str]
) -> None:
    assert_problem(stack.client.get(path, params=params), 400)
    assert graph.requests == []
