"""Entra ID caller tokens: locally generated RSA keys, a local JWKS endpoint, a fake clock."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from devtools.emulator_http import Incoming, Reply
from devtools.entra_emulator import (
    API_CLIENT_ID,
    API_URI,
    ROLE,
    TENANT_ID,
    EntraEmulator,
    SigningKey,
)
from shared import caller_auth
from shared.caller_auth import Caller, CallerAuth, SigningKeys, load_caller_settings
from shared.problems import Failure, Problem
from tests.fakes import FakeClock

OTHER_TENANT = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def entra() -> Iterator[EntraEmulator]:
    with EntraEmulator() as emulator:
        yield emulator


def env(entra: EntraEmulator, **extra: str) -> dict[str, str]:
    return {
        "CALLER_TENANT_ID": TENANT_ID,
        "CALLER_AUDIENCE": f"{API_CLIENT_ID}, {API_URI}",
        "CALLER_JWKS_URL": entra.jwks_url,
        **extra,
    }


class Checker:
    def __init__(self, entra: EntraEmulator) -> None:
        settings = load_caller_settings(env(entra))
        assert settings is not None
        self.clock = FakeClock()
        self.keys = SigningKeys(settings.jwks_url, clock=self.clock)
        self.auth = CallerAuth(settings, self.keys)

    def __call__(self, *tokens: str | None) -> list[Caller | Problem]:
        async def one(token: str | None) -> Caller | Problem:
            headers = {} if token is None else {"authorization": f"Bearer {token}"}
            try:
                caller = await self.auth.authorize(headers)
                caller.require_role()  # as the request handler does, after recording the caller
                return caller
            except Problem as problem:
                return problem

        async def all_of() -> list[Caller | Problem]:
            return list(await asyncio.gather(*(one(t) for t in tokens)))

        return asyncio.run(all_of())


def refused(result: Caller | Problem, failure: Failure = Failure.CALLER_UNAUTHENTICATED) -> str:
    assert isinstance(result, Problem), result
    assert result.failure is failure, result.detail
    return result.detail


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_an_app_token_with_the_role_v2_issuer(entra: EntraEmulator) -> None:
    [caller] = Checker(entra)(entra.token())
    assert caller == Caller(
        kind="entraToken",
        app_id="3c2b1a09-8f7e-4d6c-5b4a-39281706f5e4",
        object_id="0b5f2c1e-9d3a-4e7b-8c6f-1a2b3c4d5e6f",
        user=None,
        tenant_id=TENANT_ID,
    )


def test_a_v1_token_for_the_app_id_uri(entra: EntraEmulator) -> None:
    token = entra.token(
        iss=f"https://sts.windows.net/{TENANT_ID}/",
        aud=API_URI,
        ver="1.0",
        azp=None,
        appid="abc-app",
    )
    [caller] = Checker(entra)(token)
    assert isinstance(caller, Caller) and caller.app_id == "abc-app"


def test_a_user_token_names_the_user(entra: EntraEmulator) -> None:
    token = entra.token(idtyp="user", scp="user_impersonation", upn="kim@contoso.example")
    [caller] = Checker(entra)(token)
    assert isinstance(caller, Caller) and caller.user == "kim@contoso.example"


def test_without_the_role_is_403(entra: EntraEmulator) -> None:
    missing, absent = Checker(entra)(entra.token(roles=["Other.Role"]), entra.token(roles=None))
    assert ROLE in refused(missing, Failure.CALLER_FORBIDDEN)
    refused(absent, Failure.CALLER_FORBIDDEN)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": -600}, "expired"),  # seconds from now, resolved inside the test
        ({"nbf": 600}, "not valid yet"),
        ({"aud": "api://someone-else"}, "another audience"),
        ({"iss": f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"}, "another issuer"),
        (
            {"iss": f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0", "tid": OTHER_TENANT},
            "another issuer",
        ),
        ({"tid": OTHER_TENANT}, "another tenant"),
        ({"tid": None}, "required claim"),
    ],
)
def test_bad_claims_are_401(entra: EntraEmulator, overrides: dict[str, Any], reason: str) -> None:
    now = int(time.time())
    claims = {k: now + v if k in ("exp", "nbf") else v for k, v in overrides.items()}
    [result] = Checker(entra)(entra.token(**claims))
    assert reason in refused(result)


def test_a_little_clock_skew_is_tolerated(entra: EntraEmulator) -> None:
    [caller] = Checker(entra)(entra.token(exp=int(time.time()) - 30, nbf=int(time.time()) + 30))
    assert isinstance(caller, Caller)


def test_no_token_or_not_a_bearer_token_is_401(entra: EntraEmulator) -> None:
    check = Checker(entra)
    for result in check(None, "", "not-a-jwt", "a.b.c"):
        refused(result)
    assert isinstance(Checker(entra).auth, CallerAuth)


def test_alg_none_is_refused(entra: EntraEmulator) -> None:
    header = {"alg": "none", "typ": "JWT", "kid": entra.keys[0].kid}
    payload = entra.claims()
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."
    [result] = Checker(entra)(token)
    refused(result)


def test_hs256_signed_with_the_public_key_is_refused(entra: EntraEmulator) -> None:
    public_pem = (
        entra.keys[0]
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": entra.keys[0].kid}).encode())
    payload = b64(json.dumps(entra.claims()).encode())
    signature = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    [result] = Checker(entra)(f"{header}.{payload}.{b64(signature)}")
    refused(result)


def test_signed_by_another_key_under_a_known_kid_is_refused(entra: EntraEmulator) -> None:
    impostor = SigningKey(kid=entra.keys[0].kid)
    [result] = Checker(entra)(entra.token(key=impostor))
    assert "signature" in refused(result)


def test_a_tampered_payload_is_refused(entra: EntraEmulator) -> None:
    header, _, signature = entra.token(roles=["Reader"]).split(".")
    payload = b64(json.dumps(entra.claims()).encode())  # now claims the role
    [result] = Checker(entra)(f"{header}.{payload}.{signature}")
    assert "signature" in refused(result)


def test_a_rotated_key_is_picked_up_after_the_refresh_interval(entra: EntraEmulator) -> None:
    check = Checker(entra)
    assert isinstance(check(entra.token())[0], Caller)
    new_key = entra.rotate()
    refused(check(entra.token(key=new_key))[0])  # just after the last fetch: not yet
    check.clock.now += 301
    assert isinstance(check(entra.token(key=new_key))[0], Caller)
    assert check.keys.fetches == 2


def test_many_unknown_kids_cause_at_most_one_refresh_per_window(entra: EntraEmulator) -> None:
    check = Checker(entra)
    check(entra.token())
    check.clock.now += 301
    strangers = [entra.token(key=SigningKey()) for _ in range(20)]
    results = check(*strangers)
    results += check(*strangers[:5])
    assert all(isinstance(r, Problem) and r.status == 401 for r in results)
    assert check.keys.fetches == 2 and entra.jwks_requests == 2


def test_jwks_down_is_503_never_open_and_recovers(entra: EntraEmulator) -> None:
    check = Checker(entra)
    entra.down = True
    [result] = check(entra.token())
    assert refused(result, Failure.SIGNING_KEYS_UNAVAILABLE)
    assert isinstance(result, Problem) and result.status == 503
    [again] = check(entra.token())  # within the retry interval: still 503, no new fetch
    refused(again, Failure.SIGNING_KEYS_UNAVAILABLE)
    assert check.keys.fetches == 1
    entra.down = False
    check.clock.now += 11
    assert isinstance(check(entra.token())[0], Caller)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"CALLER_AUDIENCE": ""}, "CALLER_AUDIENCE"),
        ({"CALLER_TENANT_ID": "contoso.onmicrosoft.com"}, "CALLER_TENANT_ID"),
        ({"CALLER_JWKS_URL": "http://keys.example.com/keys"}, "CALLER_JWKS_URL"),
        ({"CALLER_ROLE": "Two words"}, "CALLER_ROLE"),
        ({"AZURE_AUTHORITY_HOST": "http://login.example"}, "AZURE_AUTHORITY_HOST"),
    ],
)
def test_incomplete_or_invalid_settings_are_500_naming_them(
    entra: EntraEmulator, extra: dict[str, str], named: str
) -> None:
    with pytest.raises(Problem) as caught:
        load_caller_settings(env(entra, **extra))
    assert caught.value.status == 500 and named in caught.value.detail


def test_unset_tenant_means_function_keys_only() -> None:
    assert load_caller_settings({}) is None
    assert load_caller_settings({"CALLER_TENANT_ID": "", "CALLER_ROLE": "X"}) is None


@pytest.mark.parametrize(
    "settings",
    [
        {"CALLER_AUDIENCE": API_CLIENT_ID},
        {"CALLER_JWKS_URL": "https://keys.example.com/k"},
        {"CALLER_TENANT_ID": "   ", "CALLER_AUDIENCE": API_CLIENT_ID},
    ],
)
def test_half_a_configuration_fails_closed(settings: dict[str, str]) -> None:
    with pytest.raises(Problem) as caught:
        load_caller_settings(settings)
    assert caught.value.status == 500 and "CALLER_TENANT_ID" in caught.value.detail


@pytest.mark.parametrize("document", [{"keys": None}, {"keys": 5}, {}, [1], {"keys": []}])
def test_a_malformed_key_document_is_503_and_never_replaces_good_keys(
    entra: EntraEmulator, document: object
) -> None:
    check = Checker(entra)
    entra.document = document
    refused(check(entra.token())[0], Failure.SIGNING_KEYS_UNAVAILABLE)
    entra.document = None
    check.clock.now += 11
    assert isinstance(check(entra.token())[0], Caller)  # good keys now cached
    entra.document = document
    check.clock.now += 301
    rotated = entra.rotate()
    assert isinstance(check(entra.token())[0], Caller)  # the bad refresh kept the good keys
    refused(check(entra.token(key=rotated))[0], Failure.SIGNING_KEYS_UNAVAILABLE)


def trickling_auth(url: str) -> CallerAuth:
    """Caller checks whose signing keys come from `url`, a byte at a time."""
    settings = load_caller_settings(
        {"CALLER_TENANT_ID": TENANT_ID, "CALLER_AUDIENCE": API_CLIENT_ID, "CALLER_JWKS_URL": url}
    )
    assert settings is not None
    return CallerAuth(settings)


def test_a_trickling_key_endpoint_cannot_hold_callers(trickling_server: str) -> None:
    auth = trickling_auth(trickling_server)
    token = EntraEmulator().token()  # never served: its keys are only used to sign
    started = time.monotonic()

    async def go() -> Problem:
        try:
            await auth.authorize({"authorization": f"Bearer {token}"})
        except Problem as problem:
            return problem
        raise AssertionError("accepted")

    refused(asyncio.run(go()), Failure.SIGNING_KEYS_UNAVAILABLE)
    assert time.monotonic() - started < 30  # liveness only: the fetch is bounded at 5 s


def test_sovereign_authority_gives_its_issuers(entra: EntraEmulator) -> None:
    settings = load_caller_settings(
        env(entra, AZURE_AUTHORITY_HOST="https://login.chinacloudapi.cn/")
    )
    assert settings is not None
    assert settings.issuers == (
        f"https://login.chinacloudapi.cn/{TENANT_ID}/v2.0",
        f"https://sts.chinacloudapi.cn/{TENANT_ID}/",
    )
    default = load_caller_settings(
        {"CALLER_TENANT_ID": TENANT_ID, "CALLER_AUDIENCE": str(uuid.uuid4())}
    )
    assert default is not None
    assert default.jwks_url == f"https://login.microsoftonline.com/{TENANT_ID}/discovery/v2.0/keys"


INTERNAL = "https://internal.example.invalid/secret-path"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"CALLER_TENANT_ID": INTERNAL}, "CALLER_TENANT_ID"),
        ({"CALLER_AUDIENCE": f"{INTERNAL} two"}, "CALLER_AUDIENCE"),
        ({"CALLER_JWKS_URL": "http://internal.example.invalid/secret-path"}, "CALLER_JWKS_URL"),
        (
            {"CALLER_JWKS_URL": "ftp://internal.example.invalid/secret-path"},
            "CALLER_JWKS_URL",
        ),
        ({"CALLER_ROLE": f"secret-path {INTERNAL}"}, "CALLER_ROLE"),
        ({"AZURE_AUTHORITY_HOST": INTERNAL}, "AZURE_AUTHORITY_HOST"),
    ],
)
def test_a_bad_caller_setting_is_named_but_its_value_never_shown(
    entra: EntraEmulator, extra: dict[str, str], named: str
) -> None:
    with pytest.raises(Problem) as caught:
        load_caller_settings(env(entra, **extra))
    detail = caught.value.detail
    assert "internal.example.invalid" not in detail and "secret-path" not in detail
    # Positive control: the same probe finds the setting's name.
    assert f"App setting {named} is invalid" in detail


def test_half_a_configuration_names_the_missing_setting_not_the_others_value() -> None:
    with pytest.raises(Problem) as caught:
        load_caller_settings({"CALLER_JWKS_URL": INTERNAL})
    assert "internal.example.invalid" not in caught.value.detail
    assert "CALLER_TENANT_ID" in caught.value.detail and "CALLER_JWKS_URL" in caught.value.detail


class SlowEntra(EntraEmulator):
    """Hands out its keys only after `delay` seconds (each request on its own thread)."""

    delay = 4.0

    def _respond(self, incoming: Incoming) -> Reply:
        time.sleep(self.delay)
        return super()._respond(incoming)


async def timed(
    auth: CallerAuth, token: str, budget: float | None
) -> tuple[Caller | Problem, float]:
    started = time.monotonic()
    try:
        result: Caller | Problem = await auth.authorize(
            {"authorization": f"Bearer {token}"}, budget=budget
        )
    except Problem as problem:
        result = problem
    return result, time.monotonic() - started


def test_a_caller_waits_for_the_signing_keys_no_longer_than_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Room for a busy machine: the delayed fetch itself must still succeed.
    monkeypatch.setattr(caller_auth, "FETCH_TIMEOUT_SECONDS", 15.0)
    with SlowEntra() as entra:
        check = Checker(entra)
        token = entra.token()

        async def both() -> list[tuple[Caller | Problem, float]]:
            return list(
                await asyncio.gather(timed(check.auth, token, 0.3), timed(check.auth, token, None))
            )

        (hurried, hurried_took), (patient, patient_took) = asyncio.run(both())
        assert entra.jwks_requests == 1
    refused(hurried, Failure.SIGNING_KEYS_UNAVAILABLE)
    assert isinstance(hurried, Problem) and hurried.status == 503 and hurried.retry_after
    assert hurried_took < 3.0
    # Positive control: without a budget the same wait lasts until the keys arrive, and the
    # fetch the hurried caller gave up on served this caller.
    assert isinstance(patient, Caller)
    assert patient_took >= SlowEntra.delay - 0.1
    assert check.keys.fetches == 1


def test_no_time_left_fails_at_once_without_a_fetch(entra: EntraEmulator) -> None:
    check = Checker(entra)
    token = entra.token()

    async def go(budget: float | None) -> Caller | Problem:
        return (await timed(check.auth, token, budget))[0]

    for budget in (0.0, -1.0):
        refused(asyncio.run(go(budget)), Failure.SIGNING_KEYS_UNAVAILABLE)
    assert check.keys.fetches == 0 and entra.jwks_requests == 0
    # Positive control: with time left the same call fetches the keys.
    assert isinstance(asyncio.run(go(5.0)), Caller)
    assert check.keys.fetches == 1 and entra.jwks_requests == 1
    # Keys held for the token's kid are used even with no time left, stale or not.
    assert isinstance(asyncio.run(go(0.0)), Caller)
    check.clock.now += 25 * 3600
    assert isinstance(asyncio.run(go(0.0)), Caller)
    assert check.keys.fetches == 1


def test_a_budget_caps_the_wait_on_a_trickling_key_endpoint(trickling_server: str) -> None:
    auth = trickling_auth(trickling_server)
    token = EntraEmulator().token()  # never served: its keys are only used to sign
    result, took = asyncio.run(timed(auth, token, 0.3))
    refused(result, Failure.SIGNING_KEYS_UNAVAILABLE)
    assert took < 3.0  # well inside the fetch's own 5 s bound
