"""A job input attempted more than once: the first user read is the guard of every attempt.

A job worker can die after it read a device and before or after its write; the input is then
attempted again, maybe hours later. shared.service.unassign_remembering keeps the user the first
attempt read (stored before its write) and judges every later attempt against it.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from shared.graph import Call, GraphClient
from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.request import UnassignRequest
from shared.retry import Deadline
from shared.service import Outcome, unassign_remembering
from shared.settings import load_settings
from tests.fakes import CountingCredential, FakeClock, credential_factory

GUID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
ALEX, BOB = "alex@contoso.example", "bob@contoso.example"


def device(user: str) -> httpx.Response:
    return httpx.Response(200, json={"id": GUID, "serialNumber": "S1", "userPrincipalName": user})


class Stored:
    """The job's memory of one input, as the store keeps it."""

    def __init__(self, first_user: str | None = None, write_started: bool = True) -> None:
        self.first_user = first_user
        self.write_started = first_user is not None and write_started
        self.remembered: list[str] = []

    async def remember(self, user: str) -> None:
        self.remembered.append(user)
        self.first_user = user
        self.write_started = True


def attempt(
    answers: list[httpx.Response], memory: Stored, **request: object
) -> tuple[Outcome | Problem, list[str]]:
    sent: list[str] = []

    def answer(call: httpx.Request) -> httpx.Response:
        sent.append(call.method)
        return answers.pop(0)

    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))
    clock = FakeClock()

    async def go() -> Outcome | Problem:
        client = GraphClient(
            settings, tokens, transport=httpx.MockTransport(answer), clock=clock,
            sleep=clock.sleep, random_source=lambda: 0.5,
        )  # fmt: skip
        try:
            return await unassign_remembering(
                client,
                UnassignRequest(GUID, None, **request),  # type: ignore[arg-type]
                Call(Deadline.after(10, clock), "c"),
                memory,
            )
        except Problem as problem:
            return problem
        finally:
            await client.aclose()

    return asyncio.run(go()), sent


def test_the_first_attempt_stores_the_user_before_it_writes() -> None:
    memory = Stored()
    result, sent = attempt([device(ALEX), httpx.Response(204)], memory)
    assert isinstance(result, Outcome) and result.status == "unassigned"
    assert memory.remembered == [ALEX] and sent == ["GET", "POST"]


def test_nothing_is_stored_when_nothing_is_written() -> None:
    for answers, request in (([device("")], {}), ([device(ALEX)], {"dry_run": True})):
        memory = Stored()
        result, sent = attempt(list(answers), memory, **request)
        assert isinstance(result, Outcome) and sent == ["GET"]
        assert memory.remembered == []
    memory = Stored()
    refused, _ = attempt([device(ALEX)], memory, expected_upn=BOB)
    assert isinstance(refused, Problem) and refused.failure is Failure.USER_MISMATCH
    assert memory.remembered == []


def test_a_retry_finding_the_stored_user_writes() -> None:
    result, sent = attempt([device(ALEX), httpx.Response(204)], Stored(ALEX))
    assert isinstance(result, Outcome) and result.status == "unassigned"
    assert sent == ["GET", "POST"]


def test_a_retry_finding_nobody_reports_the_earlier_write() -> None:
    """Our write may have landed before the worker died: unassigned, naming the stored user."""
    result, sent = attempt([device("")], Stored(ALEX))
    assert isinstance(result, Outcome) and result.status == "unassigned"
    assert result.device.user_principal_name == ALEX and sent == ["GET"]


def test_a_retry_finding_nobody_when_no_write_was_ever_sent_is_already_unassigned() -> None:
    """Put off before its write was sent: someone else's doing, not ours."""
    result, sent = attempt([device("")], Stored(ALEX, write_started=False))
    assert isinstance(result, Outcome) and result.status == "alreadyUnassigned"
    assert sent == ["GET"]


@pytest.mark.parametrize("request_guard", [{}, {"expected_upn": ALEX}])
def test_a_retry_never_removes_a_new_owner(request_guard: dict[str, object]) -> None:
    """Reassigned between a crashed attempt and its retry: 409, and no write."""
    result, sent = attempt([device(BOB)], Stored(ALEX), **request_guard)
    assert isinstance(result, Problem) and result.failure is Failure.USER_MISMATCH
    assert result.extra["currentUserPrincipalName"] == BOB and sent == ["GET"]
    # The same probe sees a write when the stored user is still there.
    _, control = attempt([device(ALEX), httpx.Response(204)], Stored(ALEX), **request_guard)
    assert control == ["GET", "POST"]


# --- The hooks a job worker gives each call: a shared budget before every write, and a shared
# hold when Intune throttles one.


class Postponed(Exception):
    """What a budget with no room raises: the write is put off."""


def hooked(
    answers: list[httpx.Response], room: list[bool]
) -> tuple[Outcome | Exception, list[str], list[float]]:
    sent: list[str] = []
    holds: list[float] = []

    def answer(call: httpx.Request) -> httpx.Response:
        sent.append(call.method)
        return answers.pop(0)

    async def before_write() -> None:
        if not room.pop(0):
            raise Postponed

    async def on_throttle(seconds: float) -> None:
        holds.append(seconds)

    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))
    clock = FakeClock()

    async def go() -> Outcome | Exception:
        client = GraphClient(
            settings, tokens, transport=httpx.MockTransport(answer), clock=clock,
            sleep=clock.sleep, random_source=lambda: 0.5,
        )  # fmt: skip
        call = Call(
            Deadline.after(30, clock), "c", before_write=before_write, on_throttle=on_throttle
        )
        try:
            return await unassign_remembering(client, UnassignRequest(GUID, None), call, Stored())
        except (Problem, Postponed) as stopped:
            return stopped
        finally:
            await client.aclose()

    (result,) = [asyncio.run(go())]
    return result, sent, holds


def test_the_budget_is_asked_before_every_write_and_can_put_it_off() -> None:
    postponed, sent, _ = hooked([device(ALEX)], room=[False])
    assert isinstance(postponed, Postponed) and sent == ["GET"]  # no write went out
    done, sent, _ = hooked([device(ALEX), httpx.Response(204)], room=[True])
    assert isinstance(done, Outcome) and sent == ["GET", "POST"]  # the control


def test_a_throttled_write_holds_every_writer_and_asks_the_budget_again() -> None:
    throttled = httpx.Response(429, headers={"Retry-After": "3"}, json={"error": {"code": "x"}})
    result, sent, holds = hooked(
        [device(ALEX), throttled, device(ALEX), httpx.Response(204)], room=[True, True]
    )
    assert isinstance(result, Outcome) and result.status == "unassigned"
    assert holds == [3.0] and sent == ["GET", "POST", "GET", "POST"]
