"""The audit trail: one well-formed record per request, and never a secret."""

from __future__ import annotations

import uuid

from devtools.graph_emulator import DEMO_ASSIGNED_ID, GraphEmulator
from tests.stack import Stack

ALEX = "alex.wilber@contoso.example"


def records_for(stack: Stack, correlation_id: str) -> list[dict[str, object]]:
    return [r for r in stack.audit() if r["correlationId"] == correlation_id]


def test_a_success_leaves_one_complete_record(stack: Stack, graph: GraphEmulator) -> None:
    cid = f"audit-{uuid.uuid4().hex}"
    response = stack.post(
        json={"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC0012345"},
        headers={"X-Correlation-Id": cid},
    )
    [record] = records_for(stack, cid)
    assert record["event"] == "unassignUser"
    assert record["outcome"] == "unassigned"
    assert record["httpStatus"] == 200
    assert record["ticketId"] == "INC0012345"
    assert record["deviceId"] == DEMO_ASSIGNED_ID
    assert record["serialNumber"] == "5CG1234XYZ"
    assert record["previousUserPrincipalName"] == ALEX
    assert record["graphRequestIds"] == response.json()["graphRequestIds"]
    assert record["attempts"] == 2
    assert isinstance(record["durationMs"], int)


def test_a_refusal_leaves_one_record_with_the_reason(stack: Stack, graph: GraphEmulator) -> None:
    cid = f"audit-{uuid.uuid4().hex}"
    stack.post(
        json={"deviceId": DEMO_ASSIGNED_ID, "expectedUserPrincipalName": "leaver@contoso.example"},
        headers={"X-Correlation-Id": cid},
    )
    [record] = records_for(stack, cid)
    assert record["outcome"] == "user-mismatch"
    assert record["httpStatus"] == 409
    assert record["previousUserPrincipalName"] is None  # nobody was removed
    assert ALEX in str(record["detail"]) and "leaver@contoso.example" in str(record["detail"])


def test_a_rejected_request_is_audited_without_its_raw_input(
    stack: Stack, graph: GraphEmulator
) -> None:
    cid = f"audit-{uuid.uuid4().hex}"
    stack.post(
        json={"deviceId": "evil\r\nINFO autopilot.audit {forged}", "ticketId": "INC1"},
        headers={"X-Correlation-Id": cid},
    )
    [record] = records_for(stack, cid)
    assert record["httpStatus"] == 400 and record["outcome"] == "invalid-request"
    assert record["deviceId"] is None
    assert "forged" not in stack.log_text()


def test_tokens_keys_and_query_strings_never_reach_the_log(
    stack: Stack, graph: GraphEmulator
) -> None:
    cid = f"audit-{uuid.uuid4().hex}"
    stack.post(
        "/api/UnassignUser?code=query-key-4711",
        json={"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC0099887"},
        headers={"X-Correlation-Id": cid, "x-functions-key": "header-key-0815"},
    )
    stack.client.get(
        f"/api/UnassignUser/{DEMO_ASSIGNED_ID}?code=query-key-4712",
        headers={"X-Correlation-Id": cid + "-get"},
    )
    token = graph.requests[0].token
    assert token
    log = stack.log_text()
    assert cid + "-get" in log
    # Positive control: the probe sees what is meant to be logged from the same request.
    assert cid in log and "INC0099887" in log
    assert token not in log
    assert "query-key-471" not in log and "header-key-0815" not in log


def test_every_record_is_one_line_of_json(stack: Stack, graph: GraphEmulator) -> None:
    before = len(stack.audit())
    stack.post(json={"deviceId": "x\u2028y\nz\rINFO autopilot.audit {}", "ticketId": "a"})
    stack.post(json={"deviceId": DEMO_ASSIGNED_ID})
    assert len(stack.audit()) == before + 2  # every audit line parses as one JSON record
    assert "\u2028" not in stack.log_text()
