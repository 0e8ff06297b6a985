"""Bulk never acts after it has answered, and never calls a started write "nothing changed"."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping

import httpx

from devtools.graph_emulator import Fault, GraphEmulator
from shared.bulk import BulkRequest, ItemResult, report
from shared.caller_auth import FUNCTION_KEY, Caller
from shared.graph import Call, GraphClient
from shared.handler import HttpResult, handle_bulk
from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.retry import Deadline
from shared.settings import load_settings
from tests.fakes import CountingCredential, credential_factory
from tests.stack import Stack

BULK = "/api/BulkUnassignUser"
CRASHING = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"
WAITING = "1d2e3f4a-5b6c-4d7e-9f80-91a2b3c4d5e6"


class Tenant:
    """Graph on a MockTransport: WAITING's first write is throttled briefly; CRASHING's read
    raises an error nothing expects (standing in for a bug of ours) once WAITING is waiting."""

    def __init__(self, crash: bool, first_write: int = 429) -> None:
        self.crash = crash
        self.first_write = first_write
        self.posts: list[float] = []  # when each write arrived (monotonic)
        self.throttled = asyncio.Event()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        device_id = request.url.path.split("/")[4]
        if request.method == "POST":
            self.posts.append(time.monotonic())
            if len(self.posts) == 1:
                self.throttled.set()
                return httpx.Response(
                    self.first_write,
                    json={"error": {"code": "TooManyRequests"}},
                    headers={"Retry-After": "0.3"},
                )
            return httpx.Response(204)
        if device_id == CRASHING:
            await self.throttled.wait()
            if self.crash:
                raise RuntimeError("a bug of ours")
        user = f"user.{device_id[:4]}@contoso.example"
        return httpx.Response(
            200, json={"id": device_id, "serialNumber": "S", "userPrincipalName": user}
        )


def run_bulk_then_linger(tenant: Tenant) -> tuple[HttpResult, float]:
    """The bulk answer, when it came, and a second of the same event loop after it."""
    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))
    client = GraphClient(settings, tokens, transport=httpx.MockTransport(tenant))
    body = json.dumps({"devices": [{"deviceId": WAITING}, {"deviceId": CRASHING}]}).encode()

    async def go() -> tuple[HttpResult, float]:
        result = await handle_bulk({}, body, graph=lambda: client, authorize=_function_key)
        answered = time.monotonic()
        await asyncio.sleep(1.0)  # a long-lived worker's loop keeps running after the answer
        await client.aclose()
        return result, answered

    return asyncio.run(go())


async def _function_key(headers: Mapping[str, str], remaining: Callable[[], float]) -> Caller:
    return FUNCTION_KEY


def test_an_unexpected_error_stops_writes_and_answers_per_input_after_a_write() -> None:
    tenant = Tenant(crash=True)
    result, answered = run_bulk_then_linger(tenant)
    assert [t for t in tenant.posts if t > answered] == []  # nothing written after the answer
    assert len(tenant.posts) == 1  # the throttled write; its retry was never sent
    # A write had been sent, so the answer is the per-input report, not "nothing changed".
    assert result.status == 207, result.body
    statuses = {r["input"]["deviceId"]: r["status"] for r in result.json()["results"]}
    # WAITING's write was refused (429) and never retried: it is to be sent again, as it says.
    assert statuses == {WAITING: "graph-throttled", CRASHING: "internal"}
    assert result.json()["resend"] == [{"deviceId": WAITING}]
    assert "Traceback" not in result.body.decode()


def test_a_stop_after_a_write_that_may_have_acted_reads_the_device_instead_of_writing() -> None:
    tenant = Tenant(crash=True, first_write=500)
    result, answered = run_bulk_then_linger(tenant)
    assert len(tenant.posts) == 1 and all(t <= answered for t in tenant.posts)
    assert result.status == 207, result.body
    [waiting] = [r for r in result.json()["results"] if r["input"]["deviceId"] == WAITING]
    # The device still shows its user, so the 500 is what happened to it: never "nothing changed".
    assert waiting["status"] == "graph-error" and waiting["httpStatus"] == 502
    assert "nothing" not in waiting["detail"]


def test_positive_control_without_the_error_the_retried_write_is_seen() -> None:
    tenant = Tenant(crash=False)
    result, answered = run_bulk_then_linger(tenant)
    assert result.status == 200, result.body
    assert len(tenant.posts) == 3  # WAITING's 429 and retry, CRASHING's write
    assert all(t <= answered for t in tenant.posts)


def test_a_refused_write_is_reported_per_input_not_as_a_whole_request_failure(
    stack: Stack, graph: GraphEmulator
) -> None:
    device_id = "2e3f4a5b-6c7d-4e8f-a091-a2b3c4d5e6f7"
    graph.add_device(device_id, "WRITE403", "leaver@contoso.example")
    graph.inject(
        Fault("status", method="POST", status=503, retry_after="0"),
        Fault("status", method="POST", status=403, intune=True),
    )
    response = stack.post(BULK, json={"devices": [{"deviceId": device_id}]})
    # The first write may have acted before its 503: only the per-input report is honest.
    assert response.status_code == 207, response.text
    [item] = response.json()["results"]
    assert item["status"] == "graph-permission" and item["httpStatus"] == 502
    assert [c.method for c in graph.requests] == ["GET", "POST", "GET", "POST", "GET"]


def test_positive_control_a_refusal_before_any_write_answers_the_whole_request(
    stack: Stack, graph: GraphEmulator
) -> None:
    device_id = "2e3f4a5b-6c7d-4e8f-a091-a2b3c4d5e6f7"
    graph.add_device(device_id, "READ403", "leaver@contoso.example")
    graph.inject(Fault("status", method="GET", status=403, intune=True))
    response = stack.post(BULK, json={"devices": [{"deviceId": device_id}]})
    assert response.status_code == 502, response.text
    assert graph.graph_calls("POST") == []


def test_the_bulk_report_never_asks_for_more_than_five_minutes() -> None:
    # A wait for the app's own write pace can be as long as GRAPH_WRITE_WINDOW_SECONDS (3600).
    bulk = BulkRequest(inputs=[{"deviceId": WAITING}], items=[], ticket_id=None, dry_run=False)
    waits = [Problem(Failure.OUT_OF_TIME, "later", retry_after=1000.0)]
    doc = report(
        [ItemResult(input=bulk.inputs[0], problem=waits[0])],
        bulk,
        Call(Deadline.after(1, time.monotonic), "c"),
    )
    assert doc["retryAfter"] == 300 and doc["resend"] == bulk.inputs
    # Positive control: a wait under the cap is passed on as it is.
    waits[0].retry_after = 12.2
    doc = report(
        [ItemResult(input=bulk.inputs[0], problem=waits[0])],
        bulk,
        Call(Deadline.after(1, time.monotonic), "c"),
    )
    assert doc["retryAfter"] == 13


def test_caller_text_that_is_not_text_is_echoed_as_replacement_characters() -> None:
    odd = {"deviceId": "x\ud800", "\udfffkey": ["\ud83d"]}
    bulk = BulkRequest(inputs=[odd], items=[], ticket_id=None, dry_run=False)
    problem = Problem(Failure.GRAPH_THROTTLED, "later", retry_after=1.0)
    doc = report(
        [ItemResult(input=odd, problem=problem)], bulk, Call(Deadline.after(1, time.monotonic), "c")
    )
    echoed = {"deviceId": "x\ufffd", "\ufffdkey": ["\ufffd"]}
    assert doc["results"][0]["input"] == echoed and doc["resend"] == [echoed]
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # encodes as UTF-8 without error
