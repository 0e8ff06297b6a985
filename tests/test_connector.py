"""The Power Automate connector definition: valid Swagger 2.0, and the response check bites."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from devtools.graph_emulator import DEMO_ASSIGNED_ID, GraphEmulator
from tests.contract import check_response, spec
from tests.stack import Stack


def schemas(node: Any) -> list[dict[str, Any]]:
    """Every object schema in the document."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found += schemas(value)
    elif isinstance(node, list):
        for value in node:
            found += schemas(value)
    return found


def test_the_definition_is_valid_swagger_2() -> None:
    validate(spec())


def test_it_has_what_a_custom_connector_needs() -> None:
    document = spec()
    assert document["securityDefinitions"] == {
        "function_key": {"type": "apiKey", "in": "header", "name": "x-functions-key"}
    }
    for methods in document["paths"].values():
        for operation in methods.values():
            assert re.fullmatch(r"[A-Z][A-Za-z]+", operation["operationId"])
            assert operation["summary"] and operation["description"]
    for schema in schemas(document["definitions"]):
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            assert "x-ms-summary" in prop or "$ref" in prop, name


def test_a_real_response_conforms_and_an_altered_one_is_rejected(
    stack: Stack, graph: GraphEmulator
) -> None:
    response = stack.post(json={"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC1"})
    path = "/api/UnassignUser"
    check_response("POST", path, 200, response.content)  # passes, as the hook already saw
    body = response.json()
    for altered in (
        {k: v for k, v in body.items() if k != "status"},
        {**body, "status": "done"},
        {**body, "extra": 1},
        {**body, "graphRequestIds": "one"},
    ):
        with pytest.raises(AssertionError):
            check_response("POST", path, 200, json.dumps(altered).encode())
    with pytest.raises(AssertionError, match="not in the definition"):
        check_response("POST", path, 418, response.content)


def test_a_problem_that_drops_a_required_field_is_rejected(
    stack: Stack, graph: GraphEmulator
) -> None:
    response = stack.post(json={"deviceId": "bad"})
    assert response.status_code == 400
    altered = {k: v for k, v in response.json().items() if k != "correlationId"}
    with pytest.raises(AssertionError):
        check_response("POST", "/api/UnassignUser", 400, json.dumps(altered).encode())
