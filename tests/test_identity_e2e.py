"""The managed identity, end to end: real azure-identity against the identity emulator."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx

from devtools.graph_emulator import DEMO_ASSIGNED_ID, GraphEmulator
from devtools.identity_emulator import IdentityEmulator
from tests.contract import async_hook
from tests.e2e import assert_problem
from tests.stack import Stack

BODY = {"deviceId": DEMO_ASSIGNED_ID}


async def post_many(base_url: str, device_ids: list[str]) -> list[httpx.Response]:
    hooks = {"response": [async_hook]}
    async with httpx.AsyncClient(base_url=base_url, timeout=120.0, event_hooks=hooks) as client:
        return await asyncio.gather(
            *(client.post("/api/UnassignUser", json={"deviceId": d}) for d in device_ids)
        )


def test_a_cold_burst_of_100_requests_fetches_one_token(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    devices = [str(uuid.uuid4()) for _ in range(100)]
    for n, device_id in enumerate(devices):
        graph.add_device(device_id, f"SN{n:05d}", f"user{n}@contoso.example")
    stack = fresh_stack()
    responses = asyncio.run(post_many(stack.base_url, devices))
    assert [r.status_code for r in responses] == [200] * 100
    assert {r.json()["status"] for r in responses} == {"unassigned"}
    assert identity.token_requests == 1
    assert len({c.token for c in graph.requests}) == 1
    assert len(stack.audit()) == 100


def test_the_token_scope_follows_graph_endpoint(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    fresh_stack().post(json=BODY)
    assert [q["resource"] for q in identity.requests] == [graph.base_url]
    assert "client_id" not in identity.requests[0]


def test_user_assigned_identity_is_asked_for_by_client_id(
    fresh_stack: Callable[..., Stack], identity: IdentityEmulator
) -> None:
    client_id = "5b9f7c1e-0d3a-4e6b-8f2c-9a1d7e3b5c40"
    response = fresh_stack(AZURE_CLIENT_ID=client_id.upper()).post(json=BODY)
    assert response.status_code == 200, response.text
    assert identity.requests[0]["client_id"] == client_id


def test_an_identity_not_assigned_to_the_app_is_500_naming_azure_client_id(
    graph: GraphEmulator,
) -> None:
    assigned = "5b9f7c1e-0d3a-4e6b-8f2c-9a1d7e3b5c40"
    with IdentityEmulator(client_ids=frozenset({assigned})) as identity:
        stack = Stack(graph, identity, AZURE_CLIENT_ID="0e3c5a7f-2b4d-4c6e-9a8b-1d3f5e7a9c20")
        try:
            doc = assert_problem(stack.post(json=BODY), 500)
            assert "AZURE_CLIENT_ID" in doc["detail"]
            assert identity.token_requests == 1
            assert graph.requests == []
            # Positive control: the same stack set up with the assigned identity gets through.
        finally:
            stack.close()
        stack = Stack(graph, identity, AZURE_CLIENT_ID=assigned)
        try:
            assert stack.post(json=BODY).status_code == 200
            assert graph.requests
        finally:
            stack.close()


def test_no_managed_identity_is_500_naming_the_settings(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    stack = fresh_stack(IDENTITY_ENDPOINT=None, IDENTITY_HEADER=None)
    doc = assert_problem(stack.post(json=BODY), 500)
    assert "IDENTITY_ENDPOINT" in doc["detail"] and "managed identity" in doc["detail"]
    assert identity.token_requests == 0 and graph.requests == []


def test_identity_endpoint_down_is_503_and_recovers_without_restart(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    stack = fresh_stack()
    identity.set_fault("drop")
    response = stack.post(json=BODY)
    doc = assert_problem(response, 503)
    assert "managed identity" in doc["detail"]
    assert response.headers["retry-after"]
    assert identity.token_requests >= 1
    assert graph.requests == []
    identity.clear_fault()
    recovered = stack.post(json=BODY)
    assert recovered.status_code == 200, recovered.text


def test_identity_endpoint_error_is_503(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    identity.set_fault("status", status=500)
    assert_problem(fresh_stack().post(json=BODY), 503)
    assert graph.requests == []


def test_identity_endpoint_too_slow_for_the_deadline_is_503(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    identity.set_fault("slow", delay=8.0)
    assert_problem(fresh_stack().post(json=BODY), 503)
    assert graph.requests == []


def test_a_bad_setting_is_500_naming_it_and_nothing_reaches_graph(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator, identity: IdentityEmulator
) -> None:
    stack = fresh_stack(UNASSIGN_DEADLINE_SECONDS="soon")
    doc = assert_problem(stack.post(json=BODY), 500)
    assert "UNASSIGN_DEADLINE_SECONDS" in doc["detail"]
    assert graph.requests == [] and identity.token_requests == 0
