"""The service against odd Graph answers (httpx.MockTransport): a guess is never a success."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shared.graph import Call, GraphClient
from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.request import UnassignRequest
from shared.retry import Deadline
from shared.service import Outcome, unassign
from shared.settings import load_settings
from tests.fakes import CountingCredential, FakeClock, credential_factory

GUID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
DEVICE = {"id": GUID, "serialNumber": "S1", "userPrincipalName": "a@contoso.example"}


def run(
    answers: list[httpx.Response | Exception], expected_upn: str | None = None
) -> tuple[Outcome | Problem, list[str]]:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        reply = answers.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))
    clock = FakeClock()

    async def go() -> Outcome | Problem:
        client = GraphClient(
            settings,
            tokens,
            transport=httpx.MockTransport(answer),
            clock=clock,
            sleep=clock.sleep,
            random_source=lambda: 0.5,
        )
        request = UnassignRequest(GUID, None, expected_upn=expected_upn)
        try:
            return await unassign(client, request, Call(Deadline.after(10, clock), "c"))
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


ALEX = DEVICE["userPrincipalName"]
THROTTLED = httpx.Response(
    429, json={"error": {"code": "TooManyRequests", "message": "m"}}, headers={"Retry-After": "1"}
)
BUSY = httpx.Response(503, json={"error": {"code": "ServiceUnavailable", "message": "m"}})


def read_as(user: str) -> httpx.Response:
    return httpx.Response(200, json={**DEVICE, "userPrincipalName": user})


@pytest.mark.parametrize("expected", [None, ALEX])
def test_a_device_reassigned_during_a_retry_wait_is_409_and_never_written(
    expected: str | None,
) -> None:
    result, seen = run([read_as(ALEX), THROTTLED, read_as("new.owner@contoso.example")], expected)
    assert isinstance(result, Problem) and result.failure is Failure.USER_MISMATCH
    assert result.extra["currentUserPrincipalName"] == "new.owner@contoso.example"
    assert ALEX in result.detail and "nothing was changed" in result.detail
    assert seen == ["GET", "POST", "GET"]  # the 429 was not acted on; no second POST


def test_positive_control_still_the_same_user_after_the_wait_is_written() -> None:
    result, seen = run([read_as(ALEX), THROTTLED, read_as(ALEX.upper()), httpx.Response(204)])
    assert isinstance(result, Outcome) and result.status == "unassigned"
    assert result.device.user_principal_name == ALEX
    assert seen == ["GET", "POST", "GET", "POST"]


def test_nobody_after_a_refused_attempt_is_already_unassigned() -> None:
    result, seen = run([read_as(ALEX), THROTTLED, read_as("")])
    assert isinstance(result, Outcome) and result.status == "alreadyUnassigned"
    assert result.device.user_principal_name == ""
    assert seen == ["GET", "POST", "GET"]


@pytest.mark.parametrize(
    "failed", [BUSY, httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped")]
)
def test_nobody_after_an_attempt_that_may_have_acted_is_unassigned_naming_the_first_user(
    failed: httpx.Response | Exception,
) -> None:
    result, seen = run([read_as(ALEX), failed, read_as("")])
    assert isinstance(result, Outcome) and result.status == "unassigned"
    assert result.device.user_principal_name == ALEX
    assert seen == ["GET", "POST", "GET"]


def test_someone_else_after_an_attempt_that_may_have_acted_is_409_nothing_more() -> None:
    result, seen = run([read_as(ALEX), BUSY, read_as("new.owner@contoso.example")])
    assert isinstance(result, Problem) and result.failure is Failure.USER_MISMATCH
    assert "nothing more was changed" in result.detail
    assert seen == ["GET", "POST", "GET"]


def test_a_rejected_write_then_nobody_is_already_unassigned_not_our_doing() -> None:
    rejected = httpx.Response(400, json={"error": {"code": "BadRequest", "message": "no user"}})
    result, seen = run([read_as(ALEX), rejected, read_as("")])
    assert isinstance(result, Outcome) and result.status == "alreadyUnassigned"
    assert seen == ["GET", "POST", "GET"]


def test_a_2xx_to_the_write_that_is_not_graphs_is_not_taken_as_done() -> None:
    portal = httpx.Response(200, text="<html>Sign in to continue</html>")
    result, seen = run([read_as(ALEX), portal, read_as(ALEX)])
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_ERROR
    assert seen == ["GET", "POST", "GET"]  # the device decided: still assigned
    # Positive control: Graph's own 204 is done without another read.
    result, seen = run([read_as(ALEX), httpx.Response(204)])
    assert isinstance(result, Outcome) and result.status == "unassigned" and seen == ["GET", "POST"]


def test_a_503_that_may_have_acted_is_read_again_when_no_retry_fits() -> None:
    long_wait = httpx.Response(
        503,
        json={"error": {"code": "ServiceUnavailable", "message": "m"}},
        headers={"Retry-After": "120"},
    )
    result, seen = run([read_as(ALEX), long_wait, read_as("")])
    assert isinstance(result, Outcome) and result.status == "unassigned"
    assert seen == ["GET", "POST", "GET"]
    # Positive control: the device still shows the user, so the 503 is what happened.
    result, seen = run([read_as(ALEX), long_wait, read_as(ALEX)])
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_THROTTLED
    assert seen == ["GET", "POST", "GET"]


def test_a_429_that_no_retry_fits_is_not_read_again() -> None:
    refused = httpx.Response(
        429,
        json={"error": {"code": "TooManyRequests", "message": "m"}},
        headers={"Retry-After": "120"},
    )
    result, seen = run([read_as(ALEX), refused])
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_THROTTLED
    assert seen == ["GET", "POST"]  # Intune refused to count it: nothing to find out
