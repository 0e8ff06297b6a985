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
import re
import time
import uuid
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
    PaceWait,
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
# Bounds on reading an answer: a serial number search reads up to five pages of devices, and no
# Graph answer nests deeper than a few levels.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
MAX_ANSWER_DEPTH = 64
# Header values we keep (request ids) are short GUIDs; a huge one is cut, not carried along.
MAX_HEADER_CHARS = 128
_GUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)


@dataclass
class Call:
    """One caller request's Graph work: its deadline, correlation id, and what Graph told us."""

    deadline: Deadline
    correlation_id: str
    # Sent to Graph as `client-request-id`, which Graph documents as a client-generated GUID:
    # the caller's correlation id when it is one, else a GUID made for this request.
    client_request_id: str = ""
    request_ids: list[str] = field(default_factory=list)
    attempts: int = 0
    writes_sent: int = 0
    # A write attempt of this call failed in a way that does not prove Graph did not act on it.
    write_may_have_acted: bool = False
    # What the reads told us about the device, for the audit record even when a later step fails.
    device: dict[str, str] = field(default_factory=dict)
    # Asked right before every write is sent: a Problem means the request has already been
    # answered (a bulk request that stopped), so the write must not start.
    halted: Callable[[], Problem | None] | None = None
    # Set while a write's own place to talk to Graph is lent to the read that checks the device.
    lends_slot: bool = False

    def __post_init__(self) -> None:
        if not self.client_request_id:
            self.client_request_id = graph_request_id(self.correlation_id)


def graph_request_id(correlation_id: str) -> str:
    """The caller's correlation id when it is a GUID, else a new GUID (Graph's rule)."""
    if _GUID.fullmatch(correlation_id):
        return correlation_id
    return str(uuid.uuid4())


# Called before a write that follows a wait or a failed attempt: reads the device again and
# raises when the write must not be sent.
Recheck = Callable[[], Awaitable[None]]


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
    # A body came that is not a JSON document we can read (HTML from a proxy, garbage).
    unreadable: bool = False

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
    except (ValueError, RecursionError):
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
            f"permission {PERMISSION} (and the tenant an Intune licence). A new grant reaches an "
            "app that already holds a token only with its next token, which can take hours: "
            "this app reuses its token until 5 minutes before it expires.",
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


class UnreadableAnswer(Exception):
    """Graph's answer could not be read within our bounds (size)."""


# What sending a request or reading its answer can raise: each is Graph failing, not us.
# httpx's DecodingError (a body that does not decompress) is a RequestError but not a
# TransportError, so both are named.
SEND_FAILURES = (httpx.RequestError, UnreadableAnswer)


def parse_json(content: bytes) -> Any:
    """The JSON document in `content`, or None when it is not one we can read (too deep, too)."""
    if not content:
        return None
    try:
        value = json.loads(content)
    except (ValueError, RecursionError):
        return None
    if content.count(b"{") + content.count(b"[") > MAX_ANSWER_DEPTH and not _shallow(value):
        return None
    return value


def _shallow(value: Any) -> bool:
    """Whether no list or object in `value` sits deeper than MAX_ANSWER_DEPTH (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_ANSWER_DEPTH:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


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
        self,
        method: str,
        path: str,
        call: Call,
        params: dict[str, str] | None = None,
        *,
        recheck: Recheck | None = None,
    ) -> GraphResponse:
        """`path` is relative to GRAPH_ENDPOINT, or an absolute link Graph gave us.

        A write that follows any wait (for a token, the write pace, a place to talk to Graph, a
        retry) or a failed attempt is sent only after `recheck` has read the device again.
        """
        write = method != "GET"
        attempt = 0
        refreshed = False
        last: Problem | None = None
        while True:
            self._check_time_left(method, call.deadline, last)
            waited = attempt > 0 or not self.tokens.ready()
            token = await self.tokens.token(call.deadline)
            self._check_time_left(method, call.deadline, last)
            if write:
                waited = await self._pace(call.deadline, last) or waited
            own_slot = not call.lends_slot
            if own_slot:
                try:
                    waited = await self._take_slot(method, call.deadline, last) or waited
                except BaseException:
                    if write:
                        self.pacer.unsent()
                    raise
            sent = False
            try:
                if write:
                    await self._before_write(method, call, recheck if waited else None, last)
                    call.writes_sent += 1
                sent = True
                attempt += 1
                call.attempts += 1
                answer = await self._attempt(method, path, params, token, call)
            finally:
                if own_slot:
                    self._slots_release()
                if write:
                    self.pacer.sent() if sent else self.pacer.unsent()
            retry_after: float | None = None
            if isinstance(answer, Problem):
                last = answer
                call.write_may_have_acted |= write
            else:
                if answer.status == 401 and not refreshed and self._expired(answer):
                    # An expired or revoked token: one retry with a freshly fetched one.
                    self.tokens.invalidate(token)
                    refreshed = True
                    continue
                if answer.status not in RETRYABLE:
                    return answer
                retry_after = parse_retry_after(answer.retry_after, time.time())
                last = problem_for(answer)
                # A 429 is Intune refusing to count the write; any other 5xx may come after it acted.
                call.write_may_have_acted |= write and answer.status != 429
            wait = plan_wait(attempt, retry_after, self._random)
            if write and isinstance(answer, GraphResponse) and answer.status == 429:
                # Intune's write limit is per app: what one write hears, every write would.
                self.pacer.hold(wait)
            if not fits(wait, call.deadline.remaining(), self._margin(method)):
                if last.failure is Failure.GRAPH_THROTTLED:
                    last.retry_after = wait
                raise last
            await self._sleep(wait)

    async def _before_write(
        self, method: str, call: Call, recheck: Recheck | None, last: Problem | None
    ) -> None:
        """Send nothing once the request is answered, nor after a wait without a fresh read."""
        halted = call.halted() if call.halted is not None else None
        if halted is not None:
            raise halted
        if recheck is None:
            return
        call.lends_slot = True  # the read uses this write's place: no second wait for one
        try:
            await recheck()
        except Problem as problem:
            # A failed read leaves the write's own failure the better account, when there is one.
            if last is None or problem.failure is Failure.USER_MISMATCH:
                raise
            raise last from None
        finally:
            call.lends_slot = False
        halted = call.halted() if call.halted is not None else None
        if halted is not None:
            raise halted
        self._check_time_left(method, call.deadline, last)

    async def _attempt(
        self, method: str, path: str, params: dict[str, str] | None, token: str, call: Call
    ) -> GraphResponse | Problem:
        """One request to Graph: its answer, or the failure that stood in for one."""
        try:
            # httpx's timeout bounds each read, not the whole answer: a server trickling
            # bytes could otherwise hold an attempt far past the deadline.
            async with asyncio.timeout(call.deadline.attempt_timeout()):
                return await self._send(method, path, params, token, call)
        except (httpx.TimeoutException, TimeoutError):
            return Problem(Failure.GRAPH_UNREACHABLE, "Microsoft Graph did not answer in time.")
        except httpx.TransportError as exc:
            return Problem(
                Failure.GRAPH_UNREACHABLE,
                f"The connection to Microsoft Graph failed ({type(exc).__name__}).",
            )
        except SEND_FAILURES as exc:
            return Problem(
                Failure.GRAPH_ERROR, f"Microsoft Graph's answer could not be read ({exc})."
            )

    async def _take_slot(self, method: str, deadline: Deadline, last: Problem | None) -> bool:
        """One of MAX_IN_FLIGHT places to talk to Graph, and whether it had to wait for it.

        No waiting past what an attempt needs. The caller gives it back with `_slots_release`.
        """
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        if not self._slots.locked():  # the common case: no timer, no extra turn of the loop
            await self._slots.acquire()
            return False
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
        return True

    def _slots_release(self) -> None:
        assert self._slots is not None  # taken by _take_slot
        self._slots.release()

    @staticmethod
    def _expired(response: GraphResponse) -> bool:
        return response.error().code == "InvalidAuthenticationToken"

    async def _pace(self, deadline: Deadline, last: Problem | None) -> bool:
        """A place in the write pace, and whether it had to wait for it."""
        wait = await self.pacer.acquire(deadline)
        if not isinstance(wait, PaceWait):
            return wait
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
        request = self._http.build_request(
            method,
            path,
            params=params,
            headers={
                "Authorization": f"Bearer {token}",
                "client-request-id": call.client_request_id,
            },
            timeout=call.deadline.attempt_timeout(),
        )
        response = await self._http.send(request, stream=True)
        try:
            request_id = response.headers.get("request-id")
            if request_id:
                call.request_ids.append(request_id[:MAX_HEADER_CHARS])
            content = await _read_bounded(response)
        finally:
            await response.aclose()
        body = parse_json(content)
        return GraphResponse(
            response.status_code,
            body,
            request_id[:MAX_HEADER_CHARS] if request_id else request_id,
            response.headers.get("retry-after") if response.status_code in RETRYABLE else None,
            unreadable=body is None and bool(content.strip()),
        )


async def _read_bounded(response: httpx.Response) -> bytes:
    """The decoded body, refusing more than MAX_ANSWER_BYTES (declared or sent)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise UnreadableAnswer(f"it declares more than {MAX_ANSWER_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise UnreadableAnswer(f"it is larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
