"""Sanity checks of the local emulators themselves, so a failing function test means the function."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from devtools import tokens
from devtools.graph_emulator import DEMO_ASSIGNED_ID, DEVICES_PATH, Fault, GraphEmulator
from devtools.identity_emulator import IdentityEmulator


@pytest.fixture
def identity() -> Iterator[IdentityEmulator]:
    with IdentityEmulator() as emulator:
        yield emulator


@pytest.fixture
def graph() -> Iterator[GraphEmulator]:
    with GraphEmulator() as emulator:
        yield emulator


def _auth(graph: GraphEmulator) -> dict[str, str]:
    token, _ = tokens.mint(graph.base_url, client_id="tests", lifetime_seconds=600, now=time.time())
    return {"Authorization": f"Bearer {token}"}


def test_identity_token_with_the_right_header(identity: IdentityEmulator) -> None:
    response = httpx.get(
        identity.endpoint,
        params={"api-version": "2019-08-01", "resource": "https://graph.example"},
        headers={"X-IDENTITY-HEADER": identity.identity_header},
    )
    assert response.status_code == 200
    body = response.json()
    claims = tokens.read(body["access_token"])
    assert claims is not None and claims["aud"] == "https://graph.example"
    assert int(body["expires_on"]) > time.time()
    assert (identity.token_requests, identity.tokens_issued) == (1, 1)


def test_identity_refuses_a_wrong_header(identity: IdentityEmulator) -> None:
    response = httpx.get(
        identity.endpoint,
        params={"api-version": "2019-08-01", "resource": "https://graph.example"},
        headers={"X-IDENTITY-HEADER": "wrong"},
    )
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401
    assert (identity.token_requests, identity.tokens_issued) == (1, 0)


def test_azure_identity_token_from_the_emulator_opens_graph(
    identity: IdentityEmulator, graph: GraphEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT", "IDENTITY_SERVER_THUMBPRINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", identity.endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", identity.identity_header)
    access = ManagedIdentityCredential().get_token(graph.base_url + "/.default")
    claims = tokens.read(access.token)
    assert claims is not None and claims["aud"] == graph.base_url
    assert identity.tokens_issued == 1
    headers = {"Authorization": f"Bearer {access.token}"}
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=headers)
    assert response.status_code == 200


def test_get_device_with_a_minted_token(graph: GraphEmulator) -> None:
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=_auth(graph))
    assert response.status_code == 200
    assert response.json()["userPrincipalName"] == "alex.wilber@contoso.example"
    assert response.headers["request-id"]


def test_no_token_is_refused(graph: GraphEmulator) -> None:
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_unassign_clears_the_user(graph: GraphEmulator) -> None:
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}/unassignUserFromDevice"
    assert httpx.post(url, headers=_auth(graph)).status_code == 204
    device = graph.device(DEMO_ASSIGNED_ID)
    assert device is not None
    assert (device["userPrincipalName"], device["addressableUserName"]) == ("", "")
    again = httpx.post(url, headers=_auth(graph))
    assert again.status_code == 400 and "no user assigned" in again.json()["error"]["message"]


def test_throttle_fault_is_served_once(graph: GraphEmulator) -> None:
    graph.inject(Fault("status", status=429, retry_after="7"))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"
    with httpx.Client(headers=_auth(graph)) as client:
        first, second = client.get(url), client.get(url)
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    assert first.json()["error"]["code"] == "TooManyRequests"
    assert second.status_code == 200


def test_drop_after_unassigns_but_never_answers(graph: GraphEmulator) -> None:
    graph.inject(Fault("drop_after", method="POST"))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}/unassignUserFromDevice"
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url, headers=_auth(graph))
    device = graph.device(DEMO_ASSIGNED_ID)
    assert device is not None and device["userPrincipalName"] == ""


def test_request_log_keeps_the_client_request_id(graph: GraphEmulator) -> None:
    headers = _auth(graph) | {"client-request-id": "corr-123"}
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=headers)
    assert response.headers["client-request-id"] == "corr-123"
    [call] = graph.graph_calls("GET")
    assert call.client_request_id == "corr-123"
    assert call.path == f"{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"


def test_serial_search_pages_with_next_link(graph: GraphEmulator) -> None:
    params = {"$filter": "contains(serialNumber,'default STRING')", "$top": "1"}
    with httpx.Client(headers=_auth(graph)) as client:
        first = client.get(graph.base_url + DEVICES_PATH, params=params).json()
        second = client.get(first["@odata.nextLink"]).json()
    assert len(first["value"]) == len(second["value"]) == 1
    assert "@odata.nextLink" not in second
    assert first["value"][0]["id"] != second["value"][0]["id"]


def test_a_stopped_emulator_refuses_even_kept_alive_connections(graph: GraphEmulator) -> None:
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"
    with httpx.Client(headers=_auth(graph)) as client:
        assert client.get(url).status_code == 200
        graph.stop()
        with pytest.raises(httpx.ConnectError):
            client.get(url)
