"""The request handler in process: hostile input never reaches Graph and never crashes it."""

from __future__ import annotations

import asyncio
import json
import logging

import azure.functions as func
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

import UnassignUser
from shared.graph import GraphClient
from shared.handler import HttpResult, handle_unassign
from shared.identity import TokenProvider
from shared.settings import load_settings
from tests.fakes import CountingCredential, credential_factory

GUID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"


class RecordingGraph:
    """A Graph client on a MockTransport that answers 'device has no user' and counts calls."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        return httpx.Response(200, json={"id": GUID, "serialNumber": "S1", "userPrincipalName": ""})

    def handle(self, headers: dict[str, str], body: bytes, route: str | None) -> HttpResult:
        settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
        tokens = TokenProvider(
            settings, credential_factory=credential_factory(CountingCredential())
        )
        client = GraphClient(settings, tokens, transport=httpx.MockTransport(self))

        async def go() -> HttpResult:
            try:
                return await handle_unassign(headers, body, route, graph=lambda: client)
            finally:
                await client.aclose()

        return asyncio.run(go())


def test_positive_control_a_valid_request_reaches_graph() -> None:
    graph = RecordingGraph()
    result = graph.handle({}, json.dumps({"deviceId": GUID}).encode(), None)
    assert result.status == 200 and result.json()["status"] == "alreadyUnassigned"
    assert len(graph.calls) == 1


@given(
    st.dictionaries(
        st.sampled_from(["content-type", "x-correlation-id", "X-Correlation-Id"]), st.text()
    ),
    st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
    st.none() | st.text(max_size=60),
)
def test_hostile_input_gets_a_4xx_problem_and_no_graph_call(
    headers: dict[str, str], body: bytes, route: str | None
) -> None:
    graph = RecordingGraph()
    result = graph.handle(headers, body, route)
    if result.status == 200:  # hypothesis found a valid request: it must have been a real one
        assert len(graph.calls) == 1
        return
    assert 400 <= result.status < 500, result.body
    assert result.headers["Content-Type"].startswith("application/problem+json")
    assert graph.calls == []


def test_unexpected_errors_are_500_without_a_trace_but_logged_with_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken() -> GraphClient:
        raise RuntimeError("boom in a place nobody expected")

    with caplog.at_level(logging.INFO, logger="autopilot.audit"):
        result = asyncio.run(
            handle_unassign({}, json.dumps({"deviceId": GUID}).encode(), None, graph=broken)
        )
    assert result.status == 500
    doc = result.json()
    assert doc["title"] == "Unexpected error"
    assert "boom" not in result.body.decode() and "Traceback" not in result.body.decode()
    [record] = [json.loads(r.getMessage()) for r in caplog.records]
    assert record["outcome"] == "internal" and record["httpStatus"] == 500
    assert "RuntimeError: boom in a place nobody expected" in record["trace"]


@pytest.mark.parametrize(
    ("url", "detail"),
    [
        ("https://h/api/UnassignUser/?code=k", "takes serialNumber only"),
        ("https://h/api/UnassignUser/", "takes serialNumber only"),
        ("https://h/api/UnassignUser?code=a/", "not both"),  # a "/" in the query is no slash
        ("https://h/api/UnassignUser", "not both"),
    ],
)
def test_the_adapter_tells_the_by_serial_number_route_by_its_path(url: str, detail: str) -> None:
    """Both bodies are refused before Graph; which refusal shows which route was taken."""
    body = json.dumps({"deviceId": GUID, "serialNumber": "5CG1234XYZ"}).encode()
    request = func.HttpRequest(
        method="POST", url=url, headers={"Content-Type": "application/json"}, body=body
    )
    response = asyncio.run(UnassignUser.main(request))
    assert response.status_code == 400
    assert detail in json.loads(response.get_body())["detail"]
