"""The Graph client's retry loop against httpx.MockTransport, with an injected clock.

No test here sleeps: the fake clock advances by exactly the waits the client asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
from collections.abc import Awaitable, Callable

import httpx
import pytest

from shared.graph import AUTOPILOT, Call, GraphClient
from shared.graph_answer import MAX_ANSWER_BYTES, MAX_ANSWER_DEPTH, GraphResponse
from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.retry import Deadline
from shared.settings import load_settings
from tests.fakes import CountingCredential, FakeClock, credential_factory

DEVICE = f"{AUTOPILOT}/fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
Answer = Callable[[httpx.Request], httpx.Response]


async def unchanged() -> None:
    """A fresh read that finds the device as it was."""


GUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def graph_error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": "m", "innerError": {"request-id": f"req-{status}"}}}
    return httpx.Response(
        status, json=body, headers={"request-id": f"req-{status}", **(headers or {})}
    )


class Scripted:
    """Answers requests in order from a script and records what it was sent."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def run(
    script: Scripted,
    method: str = "GET",
    deadline: float = 20.0,
    *,
    correlation_id: str = "corr-1",
    recheck: Callable[[], Awaitable[None]] | None = None,
) -> tuple[GraphResponse | Problem, FakeClock, Call, CountingCredential]:
    clock = FakeClock()
    credential = CountingCredential()
    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(credential))
    client = GraphClient(
        settings,
        tokens,
        transport=httpx.MockTransport(script),
        clock=clock,
        sleep=clock.sleep,
        random_source=lambda: 0.5,
    )
    call = Call(Deadline.after(deadline, clock), correlation_id)

    async def go() -> GraphResponse | Problem:
        await tokens.token(call.deadline)  # as after the device read that precedes every write
        check = recheck if recheck is not None or method == "GET" else unchanged
        try:
            return await client.call(method, DEVICE, call, recheck=check)
        except Problem as problem:
            return problem
        finally:
            await client.aclose()

    return asyncio.run(go()), clock, call, credential


def test_throttled_twice_then_succeeds_waiting_what_graph_asked() -> None:
    script = Scripted(
        graph_error(429, "TooManyRequests", {"Retry-After": "2.5"}),
        graph_error(429, "TooManyRequests", {"Retry-After": "1"}),
        httpx.Response(200, json={"id": "x"}, headers={"request-id": "ok"}),
    )
    result, clock, call, _ = run(script)
    assert isinstance(result, GraphResponse) and result.status == 200
    assert clock.sleeps == [2.5, 1.0]
    assert call.attempts == 3
    assert call.request_ids == ["req-429", "req-429", "ok"]


def test_throttled_past_the_deadline_stops_at_once_with_retry_after() -> None:
    script = Scripted(graph_error(429, "TooManyRequests", {"Retry-After": "30"}))
    result, clock, _, _ = run(script, deadline=20)
    assert isinstance(result, Problem)
    assert result.failure is Failure.GRAPH_THROTTLED and result.status == 503
    assert result.retry_after_header() == "30"
    assert clock.sleeps == []  # never sat idle waiting for a deadline it could not meet


def test_fractional_retry_after_is_rounded_up_for_the_caller() -> None:
    script = Scripted(graph_error(503, "ServiceUnavailable", {"Retry-After": "20.2"}))
    result, _, _, _ = run(script, deadline=20)
    assert isinstance(result, Problem) and result.retry_after_header() == "21"


def test_server_errors_back_off_exponentially_until_the_deadline_then_502() -> None:
    script = Scripted(*[graph_error(500, "InternalServerError") for _ in range(20)])
    result, clock, call, _ = run(script, deadline=5)
    assert isinstance(result, Problem)
    assert result.failure is Failure.GRAPH_ERROR and result.status == 502
    assert result.graph_code == "InternalServerError"
    assert clock.sleeps == [0.375, 0.75, 1.5]  # 0.25-0.5, 0.5-1, 1-2 s with jitter 0.5
    assert call.attempts == 4


def test_the_last_failure_decides() -> None:
    script = Scripted(
        graph_error(429, "TooManyRequests", {"Retry-After": "1"}),
        graph_error(502, "BadGateway", {"Retry-After": "60"}),
    )
    result, _, _, _ = run(script, deadline=10)
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_ERROR
    assert result.graph_code == "BadGateway"


def test_silent_network_until_the_deadline_is_504() -> None:
    script = Scripted(*[httpx.ConnectError("refused") for _ in range(20)])
    result, _, _, _ = run(script, deadline=3)
    assert isinstance(result, Problem)
    assert result.failure is Failure.GRAPH_UNREACHABLE and result.status == 504


def test_timeouts_are_retried_then_succeed() -> None:
    script = Scripted(httpx.ReadTimeout("slow"), httpx.Response(200, json={}))
    result, _, call, _ = run(script)
    assert isinstance(result, GraphResponse) and result.ok
    assert call.attempts == 2


def test_expired_token_is_refetched_once() -> None:
    script = Scripted(graph_error(401, "InvalidAuthenticationToken"), httpx.Response(200, json={}))
    result, clock, _, credential = run(script)
    assert isinstance(result, GraphResponse) and result.ok
    assert credential.issued == 2
    tokens = [r.headers["Authorization"] for r in script.requests]
    assert tokens == ["Bearer token-1", "Bearer token-2"]
    assert clock.sleeps == []


def test_a_second_expired_token_answer_is_final() -> None:
    script = Scripted(
        graph_error(401, "InvalidAuthenticationToken"),
        graph_error(401, "InvalidAuthenticationToken"),
    )
    result, _, _, credential = run(script)
    assert isinstance(result, GraphResponse) and result.status == 401
    assert credential.issued == 2


@pytest.mark.parametrize("status", [400, 403, 404, 409])
def test_answers_a_retry_would_not_change_are_returned_at_once(status: int) -> None:
    script = Scripted(graph_error(status, "Whatever"))
    result, clock, call, _ = run(script)
    assert isinstance(result, GraphResponse) and result.status == status
    assert call.attempts == 1 and clock.sleeps == []


def test_no_write_starts_with_too_little_time_left() -> None:
    script = Scripted(httpx.Response(204))
    result, _, call, _ = run(script, method="POST", deadline=0.5)
    assert isinstance(result, Problem)
    assert result.failure is Failure.OUT_OF_TIME and result.status == 503
    assert result.retry_after_header() == "1"
    assert script.requests == [] and call.attempts == 0


def test_a_write_with_time_left_is_sent_with_a_guid_correlation_id_as_is() -> None:
    cid = "5b1f0c1e-8a5d-4f55-9d8e-3a1c2b4d6e7f"
    script = Scripted(httpx.Response(204))
    result, _, call, _ = run(script, method="POST", deadline=5, correlation_id=cid)
    assert isinstance(result, GraphResponse) and result.status == 204
    assert script.requests[0].headers["client-request-id"] == cid == call.client_request_id
    assert script.requests[0].url.path.endswith(DEVICE)


def test_a_correlation_id_that_is_no_guid_never_reaches_graph() -> None:
    # Graph documents client-request-id as a client-generated GUID; ServiceNow sends INC numbers.
    script = Scripted(httpx.Response(204), httpx.Response(204))
    run(script, method="POST", correlation_id="INC0012345")
    run(script, method="POST", correlation_id="INC0012345")
    sent = [r.headers["client-request-id"] for r in script.requests]
    assert all(GUID_PATTERN.fullmatch(value) for value in sent), sent
    assert sent[0] != sent[1]  # one per request, not one for everybody
    assert "INC0012345" not in sent


def test_an_answer_that_does_not_decompress_is_a_graph_failure_not_a_crash() -> None:
    garbage = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    script = Scripted(
        *[
            httpx.Response(200, stream=httpx.ByteStream(b"not gzip"), headers=garbage)
            for _ in range(20)
        ]
    )
    result, _, call, _ = run(script, deadline=3)
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_ERROR
    assert result.status == 502 and "could not be read" in result.detail
    assert call.attempts > 1  # retried like any other failed answer
    # Positive control: the same header with a real gzip body is read.
    body = gzip.compress(json.dumps({"id": "x"}).encode())
    script = Scripted(httpx.Response(200, stream=httpx.ByteStream(body), headers=garbage))
    result, _, _, _ = run(script)
    assert isinstance(result, GraphResponse) and result.body == {"id": "x"}


def test_an_answer_over_the_size_bound_is_not_read_to_the_end() -> None:
    huge = b'{"id": "' + b"x" * (MAX_ANSWER_BYTES + 1) + b'"}'
    script = Scripted(*[httpx.Response(200, stream=httpx.ByteStream(huge)) for _ in range(20)])
    result, _, _, _ = run(script, deadline=3)
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_ERROR
    assert "larger than" in result.detail or "declares more than" in result.detail
    # Positive control: a serial search's five pages fit well inside the bound.
    page = json.dumps({"value": [{"serialNumber": "x" * 100}] * 5000}).encode()
    result, _, _, _ = run(Scripted(httpx.Response(200, content=page)))
    assert isinstance(result, GraphResponse) and len(result.body["value"]) == 5000


@pytest.mark.parametrize("depth", [MAX_ANSWER_DEPTH + 1, 100_000])
def test_a_body_nested_too_deeply_is_no_body(depth: int) -> None:
    nested = b'{"error":' + b"[" * depth + b"]" * depth + b"}"
    result, _, _, _ = run(Scripted(httpx.Response(404, content=nested)))
    assert isinstance(result, GraphResponse) and result.body is None
    assert result.error().code == "HTTP404"
    # Positive control: the same shape within the bound is read.
    shallow = b'{"error":' + b"[" * 10 + b"]" * 10 + b"}"
    result, _, _, _ = run(Scripted(httpx.Response(404, content=shallow)))
    assert isinstance(result, GraphResponse) and result.body is not None


def test_a_deeply_nested_intune_message_gives_no_reason_and_no_crash() -> None:
    message = "[" * 100_000 + "]" * 100_000
    body = {"error": {"code": "BadRequest", "message": message}}
    result, _, _, _ = run(Scripted(httpx.Response(400, json=body)))
    assert isinstance(result, GraphResponse)
    assert result.error().code == "BadRequest"
    assert len(result.error().message) <= 400


@pytest.mark.parametrize("retry_after", ["86400", "1e308"])
def test_a_hostile_retry_after_is_capped_in_what_we_wait_and_answer(retry_after: str) -> None:
    script = Scripted(graph_error(429, "TooManyRequests", {"Retry-After": retry_after}))
    result, clock, _, _ = run(script, method="POST", deadline=20)
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_THROTTLED
    assert result.retry_after_header() == "300"
    assert clock.sleeps == []


def test_a_write_after_a_failed_attempt_is_sent_only_after_a_fresh_read() -> None:
    checks: list[int] = []

    async def recheck() -> None:
        checks.append(len(script.requests))

    script = Scripted(
        graph_error(429, "TooManyRequests", {"Retry-After": "1"}),
        graph_error(503, "ServiceUnavailable"),
        httpx.Response(204),
    )
    result, _, call, _ = run(script, method="POST", recheck=recheck)
    assert isinstance(result, GraphResponse) and result.status == 204
    assert checks == [1, 2]  # before the second and the third attempt, after each failure
    assert call.write_may_have_acted  # the 503 may have come after Graph acted; the 429 not


def test_a_first_write_with_no_wait_needs_no_fresh_read() -> None:
    checks: list[int] = []

    async def recheck() -> None:
        checks.append(1)

    result, _, call, _ = run(Scripted(httpx.Response(204)), method="POST", recheck=recheck)
    assert isinstance(result, GraphResponse) and checks == []
    assert not call.write_may_have_acted


def test_a_recheck_that_refuses_stops_the_write() -> None:
    async def recheck() -> None:
        raise Problem(Failure.USER_MISMATCH, "reassigned")

    script = Scripted(
        graph_error(429, "TooManyRequests", {"Retry-After": "1"}), httpx.Response(204)
    )
    result, _, call, _ = run(script, method="POST", recheck=recheck)
    assert isinstance(result, Problem) and result.failure is Failure.USER_MISMATCH
    assert len(script.requests) == 1 and call.writes_sent == 1


@pytest.mark.parametrize(("deadline", "expected"), [(20.0, 10.0), (4.0, 4.0)])
def test_each_attempt_waits_at_most_the_cap_or_the_time_left(
    deadline: float, expected: float
) -> None:
    script = Scripted(httpx.Response(200, json={}))
    run(script, deadline=deadline)
    assert script.requests[0].extensions["timeout"]["read"] == expected


def test_a_write_does_not_wait_when_too_little_would_be_left_to_write() -> None:
    script = Scripted(graph_error(503, "ServiceUnavailable", {"Retry-After": "1.2"}))
    result, clock, call, _ = run(script, method="POST", deadline=2.0)
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_THROTTLED
    assert clock.sleeps == []  # 1.2 s of waiting would leave less than a write needs
    assert result.retry_after_header() == "2"
    assert call.attempts == 1


def test_intune_text_without_a_reason_is_not_passed_through() -> None:
    nested = '{"_version": 3, "HttpHeaders": "{\\"x-internal\\": \\"secret\\"}"}'
    body = {"error": {"code": "BadRequest", "message": nested}}
    script = Scripted(httpx.Response(400, json=body))
    result, _, _, _ = run(script)
    assert isinstance(result, GraphResponse)
    assert result.error().message == "Graph gave no readable reason."


def test_a_throttled_write_holds_the_next_write_of_the_process() -> None:
    # Intune's write limit is per app: once one write hears 429, the others wait it out too
    # instead of each finding the limit for itself.
    def second_write_after(first: httpx.Response) -> tuple[GraphResponse | Problem, Scripted]:
        script = Scripted(first, httpx.Response(204, headers={"request-id": "ok"}))
        clock = FakeClock()
        settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
        client = GraphClient(
            settings,
            TokenProvider(settings, credential_factory=credential_factory(CountingCredential())),
            transport=httpx.MockTransport(script),
            clock=clock,
            sleep=clock.sleep,
            random_source=lambda: 0.5,
        )

        async def go() -> GraphResponse | Problem:
            try:
                first_call = Call(Deadline.after(20, clock), "corr-1")
                with contextlib.suppress(Problem):  # 30 s of Retry-After does not fit in 20 s
                    await client.call("POST", DEVICE, first_call, recheck=unchanged)
                try:
                    second = Call(Deadline.after(20, clock), "c2")
                    return await client.call("POST", DEVICE, second, recheck=unchanged)
                except Problem as problem:
                    return problem
            finally:
                await client.aclose()

        return asyncio.run(go()), script

    held, script = second_write_after(graph_error(429, "TooManyRequests", {"Retry-After": "30"}))
    assert isinstance(held, Problem) and held.failure is Failure.GRAPH_THROTTLED
    assert "Intune is throttling this app's writes" in held.detail
    assert held.retry_after_header() == "30"
    assert len(script.requests) == 1  # the second write was never sent

    # A 503 is one busy node, not the app's write limit: it holds nothing but its own retry.
    sent, script = second_write_after(graph_error(503, "ServiceUnavailable", {"Retry-After": "30"}))
    assert isinstance(sent, GraphResponse) and sent.status == 204
    assert len(script.requests) == 2

    # Positive control: after a write that was not throttled, the next one is sent.
    sent, script = second_write_after(httpx.Response(204, headers={"request-id": "first"}))
    assert isinstance(sent, GraphResponse) and sent.status == 204
    assert len(script.requests) == 2


def cold_client(script: Scripted) -> tuple[GraphClient, FakeClock]:
    """A client that holds no token yet, on a clock that only moves when told to."""
    clock = FakeClock()
    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))
    return GraphClient(settings, tokens, transport=httpx.MockTransport(script), clock=clock), clock


def test_a_write_without_a_way_to_read_the_device_again_is_refused() -> None:
    script = Scripted(httpx.Response(204))
    client, clock = cold_client(script)

    async def go() -> None:
        try:
            await client.call("POST", DEVICE, Call(Deadline.after(20, clock), "c"))
        finally:
            await client.aclose()

    with pytest.raises(TypeError):
        asyncio.run(go())
    assert script.requests == []


def test_a_connection_never_made_is_not_a_write_that_may_have_acted() -> None:
    script = Scripted(*[httpx.ConnectError("refused") for _ in range(20)])
    result, _, call, _ = run(script, method="POST", deadline=3)
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_UNREACHABLE
    assert call.writes_sent > 1 and not call.write_may_have_acted
    # Positive control: a connection dropped after the write was sent may have acted.
    script = Scripted(*[httpx.RemoteProtocolError("dropped") for _ in range(20)])
    result, _, call, _ = run(script, method="POST", deadline=3)
    assert isinstance(result, Problem) and call.write_may_have_acted


def test_a_write_that_waited_for_a_token_is_sent_only_after_a_fresh_read() -> None:
    checks: list[int] = []

    async def recheck() -> None:
        checks.append(1)

    script = Scripted(httpx.Response(204))
    client, clock = cold_client(script)

    async def go() -> None:
        try:  # no token held yet: the write waits for the first fetch
            await client.call("POST", DEVICE, Call(Deadline.after(20, clock), "c"), recheck=recheck)
        finally:
            await client.aclose()

    asyncio.run(go())
    assert checks == [1] and len(script.requests) == 1


def test_an_overflowing_retry_after_date_counts_as_absent() -> None:
    hostile = "Mon, 01 Jan 2024 00:00:00 +99999999999999999999"
    script = Scripted(
        *[graph_error(503, "ServiceUnavailable", {"Retry-After": hostile}) for _ in range(20)]
    )
    result, clock, _, _ = run(script, method="POST", deadline=3)
    assert isinstance(result, Problem) and result.failure is Failure.GRAPH_THROTTLED
    assert clock.sleeps == [0.375, 0.75]  # the backoff, as for no Retry-After at all


@pytest.mark.parametrize("link", ["https://xn--zz.com/x", "http://127.0.0.1:9/x\udcff", "://"])
def test_a_next_link_that_is_not_a_url_is_not_ours(link: str) -> None:
    settings = load_settings({"GRAPH_ENDPOINT": "http://127.0.0.1:9"})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))
    client = GraphClient(settings, tokens)
    assert not client.same_origin(link)
    assert client.same_origin("http://127.0.0.1:9/v1.0/x?$skiptoken=1")  # positive control
    asyncio.run(client.aclose())


def test_graphs_own_full_stop_is_not_doubled_in_the_detail() -> None:
    body = {"error": {"code": "ServiceUnavailable", "message": "The service is unavailable."}}
    script = Scripted(*[httpx.Response(503, json=body) for _ in range(20)])
    result, _, _, _ = run(script, deadline=1)
    assert isinstance(result, Problem)
    assert result.detail.startswith(
        "Graph answered 503 ServiceUnavailable: The service is unavailable. "
    )
    assert ".." not in result.detail
