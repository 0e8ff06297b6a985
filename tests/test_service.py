"""The service against odd Graph answers (httpx.MockTransport): a guess is never a success."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from shared.graph import Call, GraphClient
from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.request import UnassignRequest
from shared.retry import Deadline
from shared.service import Outcome, unassign
from shared.settings import load_settings
from tests.fakes import CountingCredential, credential_factory

GUID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
DEVICE = {"id": GUID, "serialNumber": "S1", "userPrincipalName": "a@contoso.example"}


def run(answers: list[httpx.Response]) -> tuple[Outcome | Problem, list[str]]:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return answers.pop(0)

    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))

    async def go() -> Outcome | Problem:
        client = GraphClient(settings, tokens, transport=httpx.MockTransport(answer))
        try:
            return await unassign(
                client, UnassignRequest(GUID, None), Call(Deadline.after(10, time.monotonic), "c")
            )
        except Problem as problem:
            return problem
        finally:
            await client.aclose()

    return asyncio.run(go()), seen


@pytest.mark.parametrize(
    "read",
    [
        httpx.Response(200, text="<html>sign in</html>"),
        httpx.Response(204),
        httpx.Response(200, json={"id": GUID, "serialNumber": "S1"}),
        httpx.Response(200, json={"id": GUID, "userPrincipalName": None}),
        httpx.Response(200, json=[DEVICE]),
        httpx.Response(200, json={**DEVICE, "id": "0e3c5a7f-2b4d-4c6e-9a8b-1d3f5e7a9c20"}),
    ],
)
def test_a_device_read_without_a_user_field_is_502_not_already_unassigned(
    read: httpx.Response,
) -> None:
    result, seen = run([read])
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_ERROR
    assert seen == ["GET"]


def test_positive_control_a_proper_read_leads_to_a_write() -> None:
    result, seen = run([httpx.Response(200, json=DEVICE), httpx.Response(204)])
    assert isinstance(result, Outcome) and result.status == "unassigned"
    assert seen == ["GET", "POST"]


def test_an_unreadable_reread_after_a_failed_write_is_not_a_success() -> None:
    result, seen = run(
        [
            httpx.Response(200, json=DEVICE),
            httpx.Response(400, json={"error": {"code": "BadRequest", "message": "no"}}),
            httpx.Response(200, json={"id": GUID}),
        ]
    )
    assert isinstance(result, Problem) and result.graph_code == "BadRequest"
    assert seen == ["GET", "POST", "GET"]
