"""Which credential the settings give (never a silent fallback), and how tokens are reused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import AzureCliCredential, ManagedIdentityCredential

from shared.identity import TokenProvider, make_credential
from shared.problems import Failure, Problem
from shared.retry import Deadline
from shared.settings import load_settings
from tests.fakes import FakeClock, FakeToken


def ignore(status: int) -> None:
    pass


def test_managed_identity_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "h")
    assert isinstance(make_credential(load_settings({}), ignore), ManagedIdentityCredential)


def test_without_the_platform_endpoint_it_refuses_rather_than_guessing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    monkeypatch.delenv("IDENTITY_HEADER", raising=False)
    with pytest.raises(Problem) as caught:
        make_credential(load_settings({}), ignore)
    assert caught.value.failure is Failure.IDENTITY_MISCONFIGURED
    assert "IDENTITY_ENDPOINT" in caught.value.detail


def test_the_workstation_credential_only_when_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDENTITY_ENDPOINT", raising=False)
    settings = load_settings({"GRAPH_CREDENTIAL": "azure_cli"})
    assert isinstance(make_credential(settings, ignore), AzureCliCredential)


class ExpiringCredential:
    """Hands out tokens that live `life` seconds from the fake clock; can be made to fail."""

    def __init__(self, clock: FakeClock, life: float) -> None:
        self.clock, self.life, self.issued, self.failing = clock, life, 0, False

    def get_token(self, *scopes: str) -> Any:
        self.issued += 1
        if self.failing:
            raise ServiceRequestError("identity endpoint down")
        return FakeToken(f"token-{self.issued}", int(self.clock() + self.life))


def tokens_over(credential: ExpiringCredential, clock: FakeClock) -> TokenProvider:
    return TokenProvider(
        load_settings({}), credential_factory=lambda s, on_status: credential, clock=clock
    )


def test_a_token_near_expiry_keeps_serving_while_it_refreshes_once() -> None:
    clock = FakeClock()
    credential = ExpiringCredential(clock, life=1000)
    tokens = tokens_over(credential, clock)

    async def go() -> list[str]:
        deadline = Deadline.after(5, clock)
        first = await tokens.token(deadline)
        clock.now += 800  # 200 s of life left: inside the refresh margin
        credential.failing = True
        during = [await tokens.token(deadline) for _ in range(5)]
        await asyncio.sleep(0.05)  # let the background refresh finish (and fail)
        later = await tokens.token(deadline)
        return [first, *during, later]

    served = asyncio.run(go())
    assert set(served) == {"token-1"}  # the still-valid token served throughout
    assert credential.issued == 2  # one background refresh, not one per request


def test_an_expired_token_is_never_served() -> None:
    clock = FakeClock()
    credential = ExpiringCredential(clock, life=1000)
    tokens = tokens_over(credential, clock)

    async def go() -> str:
        await tokens.token(Deadline.after(5, clock))
        clock.now += 990
        credential.failing = True
        return await tokens.token(Deadline.after(5, clock))

    with pytest.raises(Problem) as caught:
        asyncio.run(go())
    assert caught.value.failure is Failure.IDENTITY_UNAVAILABLE


async def settled(tokens: TokenProvider) -> None:
    """Until no fetch is in flight (the worker thread is real; the wait is bounded)."""
    for _ in range(5000):
        if tokens._inflight is None:  # private, but the one thing a test cannot observe otherwise
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the token fetch never finished")


def test_a_prefetched_token_is_the_one_the_first_call_gets() -> None:
    clock = FakeClock()
    credential = ExpiringCredential(clock, life=3600)
    tokens = tokens_over(credential, clock)

    async def go() -> list[str]:
        tokens.prefetch()
        tokens.prefetch()  # a second prefetch adds nothing
        got = [await tokens.token(Deadline.after(5, clock)) for _ in range(3)]
        tokens.prefetch()  # a token is held: nothing to fetch
        return got

    assert asyncio.run(go()) == ["token-1"] * 3
    assert credential.issued == 1


def test_a_failed_prefetch_is_reported_once_then_the_next_call_fetches_again() -> None:
    clock = FakeClock()
    credential = ExpiringCredential(clock, life=3600)
    credential.failing = True
    tokens = tokens_over(credential, clock)

    async def go() -> tuple[Problem, str]:
        tokens.prefetch()
        await settled(tokens)  # it failed before anyone asked for the token
        assert credential.issued == 1
        with pytest.raises(Problem) as caught:
            await tokens.token(Deadline.after(5, clock))
        assert credential.issued == 1  # the prefetch's failure, not a second request
        credential.failing = False
        return caught.value, await tokens.token(Deadline.after(5, clock))

    problem, token = asyncio.run(go())
    assert problem.failure is Failure.IDENTITY_UNAVAILABLE
    assert token == "token-2"  # recovered: a failure is reported once, never cached
    assert credential.issued == 2


def test_prefetch_outside_an_event_loop_does_nothing() -> None:
    clock = FakeClock()
    credential = ExpiringCredential(clock, life=3600)
    tokens = tokens_over(credential, clock)
    tokens.prefetch()
    assert credential.issued == 0
    # Positive control: inside a loop, the same call starts the fetch.
    asyncio.run(_prefetch_and_wait(tokens))
    assert credential.issued == 1


async def _prefetch_and_wait(tokens: TokenProvider) -> None:
    tokens.prefetch()
    await settled(tokens)


CLIENT_ID = "0badc0de-1234-4abc-8def-0123456789ab"


def refusal(settings_env: dict[str, str]) -> str:
    tokens = TokenProvider(
        load_settings(settings_env),
        credential_factory=lambda s, on_status: ExpiringCredential(FakeClock(), 60),
    )
    tokens._last_status = 400  # what the identity endpoint answered (private: set by a hook)
    problem = tokens._classify(ClientAuthenticationError("refused"))
    assert problem.failure is Failure.IDENTITY_MISCONFIGURED
    return problem.detail


def test_a_refused_user_assigned_identity_is_named_by_its_setting_not_its_id() -> None:
    detail = refusal({"AZURE_CLIENT_ID": CLIENT_ID})
    assert CLIENT_ID not in detail and CLIENT_ID[:8] not in detail
    # Positive control: the same probe finds the setting's name.
    assert "user-assigned identity named by AZURE_CLIENT_ID" in detail
    assert "system-assigned" in refusal({})
