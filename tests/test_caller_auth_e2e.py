"""Entra ID caller authorization through the dev host, and secrets that never reach the log."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from devtools.entra_emulator import API_CLIENT_ID, TENANT_ID, EntraEmulator
from devtools.graph_emulator import DEMO_ASSIGNED_ID, GraphEmulator
from tests.e2e import assert_problem
from tests.stack import Stack

BODY = {"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC7"}


@pytest.fixture(scope="module")
def entra() -> Iterator[EntraEmulator]:
    with EntraEmulator() as emulator:
        yield emulator


def guarded(
    start: Callable[..., Stack], entra: EntraEmulator, *host_args: str, **extra: str
) -> Stack:
    settings = {
        "CALLER_TENANT_ID": TENANT_ID,
        "CALLER_AUDIENCE": API_CLIENT_ID,
        "CALLER_JWKS_URL": entra.jwks_url,
    }
    return start(*host_args, **(settings | extra))


def test_token_required_when_configured(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, entra: EntraEmulator
) -> None:
    stack = guarded(fresh_stack, entra)
    missing = stack.post(json=BODY)
    assert_problem(missing, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    without_role = stack.post(
        json=BODY, headers={"Authorization": f"Bearer {entra.token(roles=[])}"}
    )
    assert_problem(without_role, 403)
    status = stack.client.get(f"/api/UnassignUser/{DEMO_ASSIGNED_ID}")
    assert_problem(status, 401)
    bulk = stack.post("/api/BulkUnassignUser", json={"devices": [BODY]})
    assert_problem(bulk, 401)
    assert graph.requests == []
    # Positive control: the same stack lets a token with the role through to Graph.
    allowed = stack.post(json=BODY, headers={"Authorization": f"Bearer {entra.token()}"})
    assert allowed.status_code == 200, allowed.text
    assert graph.requests


def test_the_audit_record_names_the_caller(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, entra: EntraEmulator
) -> None:
    stack = guarded(fresh_stack, entra)
    token = entra.token(idtyp="user", scp="access", upn="kim@contoso.example")
    stack.post(json=BODY, headers={"Authorization": f"Bearer {token}", "X-Correlation-Id": "who-1"})
    [record] = [r for r in stack.audit() if r["correlationId"] == "who-1"]
    assert record["caller"] == {
        "kind": "entraToken",
        "appId": "3c2b1a09-8f7e-4d6c-5b4a-39281706f5e4",
        "objectId": "0b5f2c1e-9d3a-4e7b-8c6f-1a2b3c4d5e6f",
        "user": "kim@contoso.example",
        "tenantId": TENANT_ID,
    }


def test_function_key_callers_are_named_so(stack: Stack, graph: GraphEmulator) -> None:
    stack.post(json=BODY, headers={"X-Correlation-Id": "who-2"})
    [record] = [r for r in stack.audit() if r["correlationId"] == "who-2"]
    assert record["caller"] == {"kind": "functionKey"}


def test_signing_keys_unreachable_is_503_never_open(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, entra: EntraEmulator
) -> None:
    stack = guarded(fresh_stack, entra)
    entra.down = True
    try:
        response = stack.post(json=BODY, headers={"Authorization": f"Bearer {entra.token()}"})
    finally:
        entra.down = False
    assert_problem(response, 503)
    assert graph.requests == []


@pytest.mark.parametrize(
    "setting", [{"CALLER_AUDIENCE": ""}, {"CALLER_JWKS_URL": "http://keys.example.com/k"}]
)
def test_incomplete_settings_fail_every_request_closed(
    fresh_stack: Callable[..., Stack],
    graph: GraphEmulator,
    entra: EntraEmulator,
    setting: dict[str, str],
) -> None:
    stack = guarded(fresh_stack, entra, **setting)
    token = {"Authorization": f"Bearer {entra.token()}"}
    for response in (
        stack.post(json=BODY, headers=token),
        stack.client.get(f"/api/UnassignUser/{DEMO_ASSIGNED_ID}", headers=token),
        stack.post("/api/BulkUnassignUser", json={"devices": [BODY]}, headers=token),
    ):
        assert next(iter(setting)) in assert_problem(response, 500)["detail"]
    assert graph.requests == []


def test_neither_key_nor_token_ever_reaches_the_log(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, entra: EntraEmulator
) -> None:
    stack = guarded(fresh_stack, entra, "--function-key", "CANARY-KEY-7f3a9c")
    token = entra.token(upn="CANARY-USER-TOKENONLY@x", jti="CANARY-JTI-55aa")
    for path in ("/api/UnassignUser", "/api/UnassignUser?code=CANARY-KEY-7f3a9c"):
        response = stack.post(
            path,
            json=BODY,
            headers={
                "x-functions-key": "CANARY-KEY-7f3a9c",
                "Authorization": f"Bearer {token}",
                "X-Correlation-Id": "canary-run",
            },
        )
        assert response.status_code == 200, response.text
    records = [r for r in stack.audit() if r["correlationId"] == "canary-run"]
    assert len(records) == 2  # the records were captured: the probe reads the right log
    log = stack.log_text()
    assert "canary-run" in log
    assert "CANARY-KEY-7f3a9c" not in log
    assert token not in log and token.split(".")[2] not in log and "CANARY-JTI-55aa" not in log


@pytest.mark.parametrize("deadline", ["1", "20"])
def test_a_slow_signing_key_fetch_counts_against_the_requests_deadline(
    fresh_stack: Callable[..., Stack],
    graph: GraphEmulator,
    entra: EntraEmulator,
    trickling_server: str,
    deadline: str,
) -> None:
    # The key endpoint trickles a byte every 0.2 s: the fetch alone runs into its own 5 s bound.
    stack = guarded(
        fresh_stack, entra, CALLER_JWKS_URL=trickling_server, UNASSIGN_DEADLINE_SECONDS=deadline
    )
    started = time.monotonic()
    doc = assert_problem(
        stack.post(json=BODY, headers={"Authorization": f"Bearer {entra.token()}"}), 503
    )
    took = time.monotonic() - started
    assert doc["type"].endswith(":signing-keys-unavailable")
    assert graph.requests == []
    if deadline == "1":
        assert took < 3.5  # liveness: the 1 s deadline ends the wait, long before 5 s
    else:  # positive control: with time to spare, the same probe sees the fetch's own bound
        assert took >= 4.0
