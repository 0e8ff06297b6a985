"""Hostile input at the whole HTTP surface, in process (thousands of cases) and over sockets.

For every case: a 4xx problem document, no 5xx, no Graph call, no unhandled exception, and
exactly one audit record that is one line of JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.entra_emulator import API_CLIENT_ID, TENANT_ID, EntraEmulator
from devtools.graph_emulator import GraphEmulator
from shared.audit import LOGGER_NAME
from shared.caller_auth import CallerAuth, load_caller_settings
from shared.graph import GraphClient
from shared.handler import HttpResult, handle_bulk, handle_status, handle_unassign
from shared.identity import TokenProvider
from shared.settings import load_settings
from tests.fakes import CountingCredential, credential_factory
from tests.hostile import CONTENT_TYPES, GUID, hostile_text, raw_bodies, socket_cases
from tests.stack import Stack


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def audit_lines() -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def run(
    kind: str,
    headers: dict[str, str],
    body: bytes,
    route: str | None,
    serial: str = "",
    params: dict[str, str] | None = None,
) -> tuple[HttpResult, int]:
    calls: list[httpx.Request] = []

    def graph_answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404, json={"error": {"code": "ResourceNotFound", "message": "no"}})

    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))

    async def go() -> HttpResult:
        client = GraphClient(settings, tokens, transport=httpx.MockTransport(graph_answer))
        try:
            if kind == "bulk":
                return await handle_bulk(headers, body, params or {}, graph=lambda: client)
            if kind == "status":
                query = {"serialNumber": serial} | (params or {})
                return await handle_status(headers, route, query, graph=lambda: client)
            return await handle_unassign(headers, body, route, params or {}, graph=lambda: client)
        finally:
            await client.aclose()

    return asyncio.run(go()), len(calls)


def assert_refused(result: HttpResult, calls: int, lines: list[str]) -> None:
    assert 400 <= result.status < 500, result.body
    assert result.headers["Content-Type"].startswith("application/problem+json")
    assert json.loads(result.body)["status"] == result.status
    assert calls == 0
    assert len(lines) == 1 and "\n" not in lines[0] and "\r" not in lines[0]
    assert json.loads(lines[0])["httpStatus"] == result.status


headers_strategy = st.fixed_dictionaries(
    {},
    optional={
        "Content-Type": st.sampled_from([c for c in CONTENT_TYPES if c is not None]),
        "X-Correlation-Id": hostile_text,
    },
)


@given(headers_strategy, raw_bodies(), st.none() | hostile_text)
def test_hostile_single_requests(
    audit_lines: Captured, headers: dict[str, str], body: bytes, route: str | None
) -> None:
    audit_lines.lines.clear()
    result, calls = run("unassign", headers, body, route)
    assert_refused(result, calls, audit_lines.lines)


@given(headers_strategy, raw_bodies())
def test_hostile_bulk_requests(audit_lines: Captured, headers: dict[str, str], body: bytes) -> None:
    audit_lines.lines.clear()
    result, calls = run("bulk", headers, body, None)
    if result.status == 207:  # a well-formed bulk whose entries are all refused one by one
        doc = json.loads(result.body)
        assert all(400 <= item["httpStatus"] < 500 for item in doc["results"])
        assert calls == 0
        assert len(audit_lines.lines) == len(doc["results"]) + 1
        return
    assert_refused(result, calls, audit_lines.lines)


@given(
    hostile_text.filter(
        lambda s: not (4 <= len(s.strip(" \t\r\n")) <= 128 and s.strip(" \t\r\n").isprintable())
    ),
    st.none() | hostile_text,
)
def test_hostile_status_checks(audit_lines: Captured, serial: str, route: str | None) -> None:
    audit_lines.lines.clear()
    result, calls = run("status", {}, b"", route, serial)
    assert_refused(result, calls, audit_lines.lines)


@given(st.sampled_from(["' or 1 eq 1 or '", "x') or true or ('", "abcd'',''", "'''';--"]))
def test_odata_injection_stays_one_escaped_literal(serial: str) -> None:
    calls: list[httpx.Request] = []

    def graph_answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, json={"value": []})

    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))

    async def go() -> HttpResult:
        client = GraphClient(settings, tokens, transport=httpx.MockTransport(graph_answer))
        body = json.dumps({"serialNumber": serial}).encode()
        try:
            return await handle_unassign({}, body, None, graph=lambda: client)
        finally:
            await client.aclose()

    result = asyncio.run(go())
    assert result.status == 404
    [call] = calls
    sent = call.url.params["$filter"]
    assert sent == "contains(serialNumber,'" + serial.replace("'", "''") + "')"
    inner = sent[len("contains(serialNumber,'") : -2]
    assert "'" not in inner.replace("''", "")  # every quote doubled: the literal never ends early


VALUE = "Q-VALUE-7f3a"  # a value no answer or record may ever show
query_names = st.one_of(
    st.sampled_from(["dryRun", "expectedUserPrincipalName", "deviceId", "serialNumber", "x"]),
    hostile_text.filter(lambda name: name.lower() != "code"),
)


@given(
    st.sampled_from(["unassign", "bulk"]), st.dictionaries(query_names, st.just(VALUE), min_size=1)
)
def test_query_strings_on_a_post_are_refused_and_never_echoed(
    audit_lines: Captured, kind: str, params: dict[str, str]
) -> None:
    audit_lines.lines.clear()
    body = {"deviceId": GUID} if kind == "unassign" else {"devices": [{"deviceId": GUID}]}
    result, calls = run(kind, {}, json.dumps(body).encode(), None, params=params)
    assert_refused(result, calls, audit_lines.lines)
    assert VALUE not in result.body.decode() and VALUE not in audit_lines.lines[0]


@given(
    st.dictionaries(query_names.filter(lambda n: n != "serialNumber"), st.just(VALUE), min_size=1)
)
def test_query_parameters_other_than_serial_number_on_a_get_are_refused(
    audit_lines: Captured, params: dict[str, str]
) -> None:
    audit_lines.lines.clear()
    result, calls = run("status", {}, b"", None, "5CG1234XYZ", params)
    assert_refused(result, calls, audit_lines.lines)
    assert VALUE not in result.body.decode()


@pytest.mark.parametrize("kind", ["unassign", "bulk"])
def test_positive_control_the_hosts_code_parameter_is_not_ours_to_refuse(
    audit_lines: Captured, kind: str
) -> None:
    audit_lines.lines.clear()
    body = {"deviceId": GUID} if kind == "unassign" else {"devices": [{"deviceId": GUID}]}
    result, calls = run(kind, {}, json.dumps(body).encode(), None, params={"CoDe": VALUE})
    assert calls > 0, result.body  # the same request, without a parameter of ours, reaches Graph
    assert VALUE not in result.body.decode() and VALUE not in "".join(audit_lines.lines)


SOCKET_CASES = socket_cases(300)


def test_hostile_requests_over_sockets(stack: Stack, graph: GraphEmulator) -> None:
    before = len(stack.audit())
    statuses = []
    for case in SOCKET_CASES:
        response = stack.client.request(
            case["method"],
            case["path"],
            json=case.get("json"),
            content=case.get("content"),
            params=case.get("params"),
            headers=case.get("headers"),
        )
        statuses.append(response.status_code)
        assert 400 <= response.status_code < 500, (case, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), case
    assert graph.requests == []
    assert len(stack.audit()) == before + len(SOCKET_CASES)  # one well-formed line each
    # Positive control: the same probe sees a Graph call when a request is valid.
    stack.post(json={"deviceId": GUID})
    assert graph.requests


def test_the_socket_suite_is_diverse() -> None:
    kinds: dict[str, Any] = {}
    for case in SOCKET_CASES:
        key = case["path"].split("/")[2] + ("/route" if case["path"].count("/") > 2 else "")
        kinds[key] = kinds.get(key, 0) + 1
    assert len(SOCKET_CASES) == 300
    assert set(kinds) == {"UnassignUser", "UnassignUser/route", "BulkUnassignUser"}
    assert sum(1 for case in SOCKET_CASES if case["method"] == "POST" and case.get("params")) > 10
    assert sum(1 for case in SOCKET_CASES if b"\\ud" in case.get("content", b"")) > 10


@pytest.fixture(scope="module")
def entra() -> Iterator[EntraEmulator]:
    with EntraEmulator() as emulator:
        yield emulator


authorization_headers = st.one_of(
    hostile_text,
    st.text(max_size=200),
    st.lists(
        st.sampled_from(["Bearer", " ", "bearer", "eyJ", ".", "=", "Basic", "\r\n"]), max_size=12
    ).map("".join),
    st.binary(max_size=120).map(lambda b: "Bearer " + b.decode("latin-1")),
)


@given(authorization_headers)
def test_hostile_authorization_headers_never_get_through(
    audit_lines: Captured, entra: EntraEmulator, authorization: str
) -> None:
    settings = load_caller_settings(
        {
            "CALLER_TENANT_ID": TENANT_ID,
            "CALLER_AUDIENCE": API_CLIENT_ID,
            "CALLER_JWKS_URL": entra.jwks_url,
        }
    )
    assert settings is not None
    auth = CallerAuth(settings)
    audit_lines.lines.clear()
    calls: list[httpx.Request] = []

    def graph_answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    async def go() -> HttpResult:
        body = json.dumps({"deviceId": GUID}).encode()
        return await handle_unassign(
            {"Authorization": authorization},
            body,
            None,
            graph=lambda: GraphClient(
                load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"}),
                TokenProvider(
                    load_settings({}), credential_factory=credential_factory(CountingCredential())
                ),
                transport=httpx.MockTransport(graph_answer),
            ),
            authorize=lambda headers, remaining: auth.authorize(headers, budget=remaining()),
        )

    result = asyncio.run(go())
    assert result.status == 401, result.body
    assert_refused(result, len(calls), audit_lines.lines)


@pytest.mark.parametrize("upn", ["alex\udc00@contoso.example", "\ud800@contoso.example"])
def test_a_lone_surrogate_in_an_otherwise_valid_request_is_400_naming_the_field(
    audit_lines: Captured, upn: str
) -> None:
    # Shaped to pass every other check: before it was refused, it reached Graph and the answer
    # could not be encoded (a bare 500, no audit record).
    body = {"deviceId": GUID, "expectedUserPrincipalName": upn}
    audit_lines.lines.clear()
    result, calls = run("unassign", {}, json.dumps(body).encode(), None)
    assert_refused(result, calls, audit_lines.lines)
    assert "expectedUserPrincipalName" in json.loads(result.body)["detail"]
    # Positive control: the same request with the surrogate taken out reaches Graph.
    body["expectedUserPrincipalName"] = "alex@contoso.example"
    _, calls = run("unassign", {}, json.dumps(body).encode(), None)
    assert calls > 0
