"""The answers the ServiceNow script include's tests replay stay the function's real answers.

`integrations/servicenow/test/fixtures/*.json` hold answers of the function ({method, path,
status, headers, body}). Each must conform to the connector definition, and the running function
(dev host and emulators) must still answer the same request with the same shape: status, the
headers the script include reads, and the body's keys. A changed answer fails here first, so the
Node tests cannot go on replaying a stale one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import pytest

from devtools.graph_emulator import Fault, GraphEmulator
from tests.contract import check_response, spec
from tests.stack import ROOT, Stack

FIXTURES = ROOT / "integrations" / "servicenow" / "test" / "fixtures"
# The headers the script include reads.
READ_HEADERS = ("content-type", "x-correlation-id", "retry-after")
TICKET = "INC0012345"
ASSIGNED = "alex.wilber@contoso.example"
# How the running function is brought to give each answer again: the body sent, and a Graph fault.
REQUESTS: dict[str, tuple[dict[str, str], Fault | None]] = {
    "unassigned": ({"expectedUserPrincipalName": ASSIGNED}, None),
    "user_mismatch": ({"expectedUserPrincipalName": "leaver@contoso.example"}, None),
    # Retry-After beyond the shared host's 4 s deadline: answered at once, without waiting.
    "throttled": (
        {"expectedUserPrincipalName": ASSIGNED},
        Fault("status", method="GET", status=503, retry_after="12", count=5),
    ),
}
HOST_401 = "host_unauthorized"


def stored(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def body_bytes(answer: Mapping[str, Any]) -> bytes:
    return b"" if answer["body"] == "" else json.dumps(answer["body"]).encode()


def shape(answer: Mapping[str, Any]) -> dict[str, Any]:
    """What must not drift: status, headers read, body keys, and the kind of answer."""
    body = answer["body"]
    headers = {key.lower(): value for key, value in answer["headers"].items()}
    return {
        "request": (answer["method"], answer["path"]),
        "status": answer["status"],
        "headers": sorted(name for name in READ_HEADERS if name in headers),
        "content-type": headers.get("content-type"),
        "keys": sorted(body) if isinstance(body, dict) else body,
        "kind": body.get("type", body.get("status")) if isinstance(body, dict) else None,
    }


def recorded(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
    return {
        "method": method,
        "path": path,
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": response.json() if response.content else "",
    }


def operation(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The definition's operation for the answer's request (the path must be one of ours)."""
    document = spec()
    template = answer["path"].removeprefix(document["basePath"])
    assert template in document["paths"], answer["path"]
    found: dict[str, Any] = document["paths"][template][answer["method"].lower()]
    return found


def test_every_fixture_is_checked_here() -> None:
    assert {path.stem for path in FIXTURES.glob("*.json")} == {*REQUESTS, HOST_401}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_stored_answer_conforms_to_the_connector_definition(name: str) -> None:
    answer = stored(name)
    operation(answer)
    check_response(answer["method"], answer["path"], answer["status"], body_bytes(answer))


def test_the_check_refuses_an_answer_the_definition_does_not_allow() -> None:
    # Positive control: the same check fails once a required field is missing.
    answer = stored("unassigned")
    del answer["body"]["message"]
    with pytest.raises(AssertionError, match="message"):
        check_response(answer["method"], answer["path"], answer["status"], body_bytes(answer))


def test_the_host_401_is_declared_for_the_request() -> None:
    answer = stored(HOST_401)
    assert answer["status"] == 401 and answer["body"] == "" and answer["headers"] == {}
    assert "401" in operation(answer)["responses"]


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_the_running_function_still_gives_the_stored_answer(
    name: str, stack: Stack, graph: GraphEmulator
) -> None:
    fields, fault = REQUESTS[name]
    if fault is not None:
        graph.inject(fault)
    answer = stored(name)
    response = stack.post(
        answer["path"],
        json={"serialNumber": "5CG1234XYZ", "ticketId": TICKET, **fields},
        headers={"X-Correlation-Id": TICKET},
    )
    assert shape(recorded("POST", answer["path"], response)) == shape(answer)


def test_the_host_still_answers_a_missing_key_with_an_empty_401(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator
) -> None:
    answer = stored(HOST_401)
    stack = fresh_stack("--function-key", "servicenow-key")
    response = stack.post(answer["path"], json={"serialNumber": "5CG1234XYZ", "ticketId": TICKET})
    assert shape(recorded("POST", answer["path"], response)) == shape(answer)
    assert graph.requests == []
