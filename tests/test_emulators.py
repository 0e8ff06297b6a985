"""Sanity checks of the local emulators themselves, so a failing function test means the function."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from devtools import tokens
from devtools.graph_emulator import DEMO_ASSIGNED_ID, DEVICES_PATH, Fault, GraphEmulator
from devtools.identity_emulator import IdentityEmulator

CLIENT_ID = "5f0c7e2a-9b1d-4c3e-8a6f-2d4b9e1c7a05"


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


def _user(graph: GraphEmulator) -> str:
    device = graph.device(DEMO_ASSIGNED_ID)
    assert device is not None
    return device["userPrincipalName"]


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
    headers = _auth(graph) | {"client-request-id": CLIENT_ID}
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=headers)
    assert response.headers["client-request-id"] == CLIENT_ID
    [call] = graph.graph_calls("GET")
    assert call.client_request_id == CLIENT_ID
    assert call.path == f"{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"


@pytest.mark.parametrize(
    "client_id", ["corr-123", f"{{{CLIENT_ID}}}", CLIENT_ID.replace("-", ""), CLIENT_ID + "0", ""]
)
def test_a_client_request_id_that_is_not_a_guid_is_refused_first(
    graph: GraphEmulator, client_id: str
) -> None:
    graph.inject(Fault("status", status=429))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}/unassignUserFromDevice"
    response = httpx.post(url, headers={"client-request-id": client_id})  # no token either
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("BadRequest", "Client-Request-Id is not a guid.")
    assert [c.client_request_id for c in graph.requests] == [client_id]
    assert _user(graph) == "alex.wilber@contoso.example"
    # The fault was not used up: the next, valid request gets it.
    assert httpx.post(url, headers=_auth(graph)).status_code == 429


@pytest.mark.parametrize("headers", [{"client-request-id": CLIENT_ID.upper()}, {}])
def test_a_guid_or_absent_client_request_id_is_answered(
    graph: GraphEmulator, headers: dict[str, str]
) -> None:
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"
    assert httpx.get(url, headers=_auth(graph) | headers).status_code == 200


def test_garbage_is_labelled_json_but_is_not(graph: GraphEmulator) -> None:
    graph.inject(Fault("garbage", status=200), Fault("garbage", status=204))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"
    with httpx.Client(headers=_auth(graph)) as client:
        first, second, third = client.get(url), client.get(url), client.get(url)
    assert first.status_code == 200
    assert first.headers["Content-Type"] == "application/json" and first.content
    with pytest.raises(ValueError):  # not UTF-8, not JSON
        json.loads(first.content)
    # Bodies were framed right: the kept-alive connection still reads the next answers.
    assert (second.status_code, second.content) == (204, b"")
    assert third.json()["id"] == DEMO_ASSIGNED_ID


def test_garbage_claiming_gzip_cannot_be_decoded(graph: GraphEmulator) -> None:
    graph.inject(Fault("garbage", status=200, encoding="gzip"))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"
    with pytest.raises(httpx.DecodingError):
        httpx.get(url, headers=_auth(graph))


def test_content_type_answers_a_portal_page_and_does_not_unassign(graph: GraphEmulator) -> None:
    graph.inject(Fault("content_type", count=2))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"
    with httpx.Client(headers=_auth(graph)) as client:
        read, write = client.get(url), client.post(f"{url}/unassignUserFromDevice")
    for response in (read, write):
        assert response.status_code == 200  # a 204 cannot carry the page
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.text.startswith("<!DOCTYPE html>")
    assert _user(graph) == "alex.wilber@contoso.example"


def test_huge_error_is_valid_json_of_the_given_size(graph: GraphEmulator) -> None:
    graph.inject(Fault("huge", status=503))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"
    response = httpx.get(url, headers=_auth(graph))
    assert response.status_code == 503
    assert len(response.content) == int(response.headers["Content-Length"]) == 9 * 1024 * 1024
    assert response.json()["error"]["code"] == "ServiceUnavailable"


def test_huge_success_is_the_device_padded(graph: GraphEmulator) -> None:
    graph.inject(Fault("huge", status=200, size=100_000))
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=_auth(graph))
    assert len(response.content) == 100_000
    device = response.json()
    assert (device["id"], device["userPrincipalName"]) == (
        DEMO_ASSIGNED_ID,
        "alex.wilber@contoso.example",
    )


def test_nested_body_is_too_deep_to_parse(graph: GraphEmulator) -> None:
    graph.inject(Fault("nested", status=500))
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=_auth(graph))
    assert response.status_code == 500
    assert response.content.startswith(b'{"error":[[[')
    with pytest.raises(RecursionError):
        json.loads(response.content)


def test_nested_message_is_a_graph_error_holding_too_deep_json(graph: GraphEmulator) -> None:
    graph.inject(Fault("nested_message", status=400, depth=50_000))
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=_auth(graph))
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "BadRequest"
    assert len(error["message"]) > 100_000
    with pytest.raises(RecursionError):
        json.loads(error["message"])


def test_act_then_unassigns_but_answers_an_error(graph: GraphEmulator) -> None:
    graph.inject(Fault("act_then", method="POST", status=503, retry_after="5"))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}/unassignUserFromDevice"
    response = httpx.post(url, headers=_auth(graph))
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
    assert response.json()["error"]["code"] == "ServiceUnavailable"
    assert _user(graph) == ""


def test_reassignment_during_a_throttled_write_is_not_undone(graph: GraphEmulator) -> None:
    upn = "bob.jones@contoso.example"
    graph.inject(Fault("status", method="POST", status=429, reassign_to=upn))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}/unassignUserFromDevice"
    assert httpx.post(url, headers=_auth(graph)).status_code == 429
    device = graph.device(DEMO_ASSIGNED_ID)
    assert device is not None
    assert (device["userPrincipalName"], device["addressableUserName"]) == (upn, "Bob Jones")


def test_reassignment_to_nobody_shows_in_the_read(graph: GraphEmulator) -> None:
    graph.inject(Fault("slow", reassign_to=""))
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=_auth(graph))
    assert (response.json()["userPrincipalName"], response.json()["addressableUserName"]) == (
        "",
        "",
    )


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status"),
        Fault("expired_token"),
        Fault("garbage", status=200, encoding="gzip"),
        Fault("content_type"),
        Fault("huge", size=10),
        Fault("nested", depth=1),
        Fault("nested_message", depth=1),
        Fault("act_then", status=500),
    ],
    ids=lambda fault: fault.kind,
)
@pytest.mark.parametrize("retry_after", ["86400", "1e308", "nan", "soon, maybe"])
def test_every_answering_fault_sends_retry_after_verbatim(
    graph: GraphEmulator, fault: Fault, retry_after: str
) -> None:
    graph.inject(dataclasses.replace(fault, retry_after=retry_after))
    url = f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}"
    with httpx.stream("GET", url, headers=_auth(graph)) as response:  # headers only: no decoding
        assert response.headers["Retry-After"] == retry_after


@pytest.mark.parametrize(
    "fields",
    [
        {"encoding": "br"},
        {"size": 0},
        {"size": True},
        {"depth": 0},
        {"reassign_to": 7},
        {"retry_after": "1\r\nX-Injected: yes"},
    ],
)
def test_bad_fault_fields_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Fault("garbage", **fields)  # type: ignore[arg-type]


def test_new_fault_fields_can_be_set_over_http(graph: GraphEmulator) -> None:
    spec = {"kind": "huge", "status": 200, "size": 5000, "deviceId": DEMO_ASSIGNED_ID,
            "reassignTo": "", "encoding": "gzip", "depth": 3}  # fmt: skip
    assert httpx.post(f"{graph.base_url}/_emulator/faults", json=spec).status_code == 204
    response = httpx.get(f"{graph.base_url}{DEVICES_PATH}/{DEMO_ASSIGNED_ID}", headers=_auth(graph))
    assert len(response.content) == 5000 and response.json()["userPrincipalName"] == ""


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
