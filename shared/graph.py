"""The Graph client: one httpx client and one token provider per process, retries in a deadline.

`GraphClient.call` returns Graph's answer when it is final (any 2xx, and errors a retry would not
change, such as 404) and raises a `Problem` when retries ran out on throttling, server errors or a
silent network; the last failure decides which. What an error *means* for a device is the
service's business; what Graph *said* is decoded here.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx

from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.retry import (
    MIN_ATTEMPT_SECONDS,
    MIN_WRITE_SECONDS,
    Clock,
    Deadline,
    WritePacer,
    fits,
    parse_retry_after,
    plan_wait,
)
from shared.settings import Settings

API_VERSION = "v1.0"
AUTOPILOT = f"/{API_VERSION}/deviceManagement/windowsAutopilotDeviceIdentities"
PERMISSION = "DeviceManagementServiceConfig.ReadWrite.All"
RETRYABLE = frozenset({429, 500, 502, 503, 504})
THROTTLING = frozenset({429, 503})
USER_AGENT = "autopilot-unassign/1.0"
# Graph calls in flight per process. Past a few dozen, httpx's pool spends more time managing
# connections than sending (hundreds of concurrent calls took 5x longer in total here), and
# Graph throttles bursts anyway; waiting callers queue on a semaphore, which costs nothing.
MAX_IN_FLIGHT = 16


@dataclass
class Call:
    """One caller request's Graph work: its deadline, correlation id, and what Graph told us."""

    deadline: Deadline
    correlation_id: str
    request_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    # What the reads told us about the device, for the audit record even when a later step fails.
    device: dict[str, str] = field(default_factory=dict)


class GraphError(NamedTuple):
    """Graph's error code and readable reason from an error answer."""

    code: str
    message: str
    request_id: str | None


class GraphResponse(NamedTuple):
    """A final answer from Graph: status, decoded JSON body and request id."""

    status: int
    body: Any
    request_id: str | None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> GraphError:
        return decode_error(self.status, self.body, self.request_id)


MAX_DETAIL_CHARS = 400


def _readable(message: str) -> str:
    """Intune nests a JSON document in `error.message`; keep its reason and support ids only."""
    try:
        inner = json.loads(message)
    except ValueError:
        return message[:MAX_DETAIL_CHARS]
    if isinstance(inner, dict) and isinstance(inner.get("Message"), str):
        return str(inner["Message"]).split(" - Url:", 1)[0][:MAX_DETAIL_CHARS]
    return "Graph gave no readable reason."


def decode_error(status: int, body: Any, request_id: str | None) -> GraphError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphError(f"HTTP{status}", f"Graph answered HTTP {status}.", request_id)
    code = error.get("code")
    message = error.get("message")
    return GraphError(
        code if isinstance(code, str) and code else f"HTTP{status}",
        _readable(message) if isinstance(message, str) else "",
        request_id,
    )


def problem_for(response: GraphResponse) -> Problem:
    """What a Graph error means for our caller (see the table in shared.problems)."""
    err = response.error()
    reason = f"Graph answered {response.status} {err.code}: {err.message}".rstrip(": ")
    if response.status == 403 or (
        response.status == 401 and err.code != "InvalidAuthenticationToken"
    ):
        return Problem(
            Failure.GRAPH_PERMISSION,
            f"{reason}. The Function App's managed identity needs the Microsoft Graph application "
            f"permission {PERMISSION} (and the tenant an Intune licence); after it is granted, "
            "Graph can keep refusing for up to an hour while the grant propagates.",
            graph_code=err.code,
            graph_request_id=err.request_id,
        )
    if response.status in THROTTLING:
        return Problem(
            Failure.GRAPH_THROTTLED,
            f"{reason}. Try again after the Retry-After interval.",
            retry_after=parse_retry_after(response.retry_after, time.time()) or 1.0,
            graph_code=err.code,
            graph_request_id=err.request_id,
        )
    return Problem(
        Failure.GRAPH_ERROR, f"{reason}.", graph_code=err.code, graph_request_id=err.request_id
    )


def _parse_json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


class GraphClient:
    def __init__(
        self,
        settings: Settings,
        tokens: TokenProvider,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.tokens = tokens
        self.clock = clock
        self._slots: asyncio.Semaphore | None = None
        self.pacer = WritePacer(
            settings.writes_per_window, settings.write_window_seconds, clock, sleep
        )
        self._sleep = sleep
        self._random = random_source
        self._http = httpx.AsyncClient(
            base_url=settings.graph_endpoint,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    def same_origin(self, url: str) -> bool:
        """Whether a link Graph gave us points at GRAPH_ENDPOINT (scheme, host and port)."""
        try:
            link = httpx.URL(url)
        except httpx.InvalidURL:
            return False
        base = self._http.base_url
        return (link.scheme, link.host, link.port) == (base.scheme, base.host, base.port)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self, method: str, path: str, call: Call, params: dict[str, str] | None = None
    ) -> GraphResponse:
        """`path` is relative to GRAPH_ENDPOINT, or an absolute link Graph gave us."""
        attempt = 0
        refreshed = False
        last: Problem | None = None
        while True:
            self._check_time_left(method, call.deadline, last)
            token = await self.tokens.token(call.deadline)
            self._check_time_left(method, call.deadline, last)
            write = method != "GET"
            if write:
                await self._pace(call.deadline, last)
            try:
                await self._take_slot(method, call.deadline, last)
            except BaseException:
                if write:
                    self.pacer.unsent()
                raise
            attempt += 1
            call.attempts += 1
            retry_after: float | None = None
            write_limited = False
            try:
                # httpx's timeout bounds each read, not the whole answer: a server trickling
                # bytes could otherwise hold an attempt far past the deadline.
                async with asyncio.timeout(call.deadline.attempt_timeout()):
                    response = await self._send(method, path, params, token, call)
            except (httpx.TimeoutException, TimeoutError):
                last = Problem(Failure.GRAPH_UNREACHABLE, "Microsoft Graph did not answer in time.")
            except httpx.TransportError as exc:
                last = Problem(
                    Failure.GRAPH_UNREACHABLE,
                    f"The connection to Microsoft Graph failed ({type(exc).__name__}).",
                )
            else:
                if response.status == 401 and not refreshed and self._expired(response):
                    # An expired or revoked token: one retry with a freshly fetched one.
                    self.tokens.invalidate(token)
                    refreshed = True
                    continue
                if response.status not in RETRYABLE:
                    return response
                retry_after = parse_retry_after(response.retry_after, time.time())
                last = problem_for(response)
                # Intune's write limit is per app: what one write hears, every write would.
                write_limited = write and response.status == 429
            finally:
                self._slots_release()
                if write:
                    self.pacer.sent()
            wait = plan_wait(attempt, retry_after, self._random)
            if write_limited:
                self.pacer.hold(wait)
            if not fits(wait, call.deadline.remaining(), self._margin(method)):
                if last.failure is Failure.GRAPH_THROTTLED:
                    last.retry_after = wait
                raise last
            await self._sleep(wait)

    async def _take_slot(self, method: str, deadline: Deadline, last: Problem | None) -> None:
        """One of MAX_IN_FLIGHT places to talk to Graph; no waiting past what an attempt needs.

        The caller gives it back with `_slots_release` once the attempt is over.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        if not self._slots.locked():  # the common case: no timer, no extra turn of the loop
            await self._slots.acquire()
            return
        wait = deadline.remaining() - self._margin(method)
        try:
            await asyncio.wait_for(self._slots.acquire(), max(0.0, wait))
        except TimeoutError:
            if last is not None:
                raise last from None
            raise Problem(
                Failure.OUT_OF_TIME,
                "This function app is too busy to reach Graph before the deadline; nothing was "
                "changed. Send the request again.",
                retry_after=1,
            ) from None

    def _slots_release(self) -> None:
        assert self._slots is not None  # taken by _take_slot
        self._slots.release()

    @staticmethod
    def _expired(response: GraphResponse) -> bool:
        return response.error().code == "InvalidAuthenticationToken"

    async def _pace(self, deadline: Deadline, last: Problem | None) -> None:
        wait = await self.pacer.acquire(deadline)
        if wait is None:
            return
        if last is not None:
            raise last
        if wait.throttled:
            raise Problem(
                Failure.GRAPH_THROTTLED,
                "Intune is throttling this app's writes (it answered 429 to another of them) for "
                "longer than this request has left; nothing was changed. Try again after the "
                "Retry-After interval.",
                retry_after=wait.seconds,
            )
        raise Problem(
            Failure.OUT_OF_TIME,
            "This app's own pace of Graph writes (Intune's limit) leaves no room for this change "
            "before the deadline; nothing was changed. Send the request again.",
            retry_after=wait.seconds,
        )

    @staticmethod
    def _margin(method: str) -> float:
        """The least time an attempt needs: more for a write, which must not land after we gave up."""
        return MIN_ATTEMPT_SECONDS if method == "GET" else MIN_WRITE_SECONDS

    def _check_time_left(self, method: str, deadline: Deadline, last: Problem | None) -> None:
        if deadline.remaining() >= self._margin(method):
            return
        if last is not None:
            raise last
        raise Problem(
            Failure.OUT_OF_TIME,
            "Too little time was left to finish the call to Graph; nothing was changed. "
            "Send the request again.",
            retry_after=1,
        )

    async def _send(
        self, method: str, path: str, params: dict[str, str] | None, token: str, call: Call
    ) -> GraphResponse:
        response = await self._http.request(
            method,
            path,
            params=params,
            headers={"Authorization": f"Bearer {token}", "client-request-id": call.correlation_id},
            timeout=call.deadline.attempt_timeout(),
        )
        request_id = response.headers.get("request-id")
        if request_id:
            call.request_ids.append(request_id)
        return GraphResponse(
            response.status_code,
            _parse_json(response),
            request_id,
            response.headers.get("retry-after") if response.status_code in RETRYABLE else None,
        )
