"""The Graph client: one httpx client and one token provider per process, retries in a deadline.

`GraphClient.call` returns Graph's answer when it is final (any 2xx, and errors a retry would not
change, such as 404) and raises a `Problem` when retries ran out on throttling, server errors or a
silent network; the last failure decides which. What an error *means* for a device is the
service's business; what Graph *said* is decoded here.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from shared.graph_answer import (
    MAX_HEADER_CHARS,
    GraphResponse,
    UnreadableAnswer,
    parse_json,
    problem_for,
    read_bounded,
)
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
from shared.settings import GUID, Settings

API_VERSION = "v1.0"
AUTOPILOT = f"/{API_VERSION}/deviceManagement/windowsAutopilotDeviceIdentities"
RETRYABLE = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "autopilot-unassign/1.0"
# Graph calls in flight per process. Past a few dozen, httpx's pool spends more time managing
# connections than sending (hundreds of concurrent calls took 5x longer in total here), and
# Graph throttles bursts anyway; waiting callers queue on a semaphore, which costs nothing.
MAX_IN_FLIGHT = 16
# Failures that prove the request never left us: no connection was made to send it on.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


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
    # Asked right before every write is sent: a Problem means the request has stopped (a bulk
    # request whose answer no longer waits for new writes), so the write must not start.
    halted: Callable[[], Problem | None] | None = None
    # Set while a write's own place to talk to Graph is lent to the read that checks the device.
    lends_slot: bool = False
    # Awaited right before every write is sent, after any fresh read: a write budget shared with
    # other processes (bulk jobs). It raises to put the write off; then nothing is sent.
    before_write: Callable[[], Awaitable[None]] | None = None
    # Awaited with the wait Intune asked for when it throttled a write, so that every writer
    # sharing the budget holds, not only this one.
    on_throttle: Callable[[float], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if not self.client_request_id:
            self.client_request_id = graph_request_id(self.correlation_id)


def graph_request_id(correlation_id: str) -> str:
    """The caller's correlation id when it is a GUID, else a new GUID (Graph's rule)."""
    if GUID.fullmatch(correlation_id):
        return correlation_id
    return str(uuid.uuid4())


# Called before a write that follows a wait or a failed attempt: reads the device again and
# raises when the write must not be sent.
Recheck = Callable[[], Awaitable[None]]


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
        if not url.isascii():  # Graph's links are percent-encoded; anything else is not one
            return False
        base = self._http.base_url
        try:
            link = httpx.URL(url)
            return (link.scheme, link.host, link.port) == (base.scheme, base.host, base.port)
        except ValueError:  # httpx.InvalidURL, and idna's errors for a malformed host
            return False

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

        A write needs `recheck`: when any wait (for a token, the write pace, a place to talk to
        Graph, a retry) or a failed attempt lies between the last read and the write, the write
        is sent only after `recheck` has read the device again.
        """
        write = method != "GET"
        if write and recheck is None:
            raise TypeError("a write needs a recheck")
        attempt = 0
        refreshed = False
        last: Problem | None = None
        while True:
            self._check_time_left(method, call.deadline, last)
            try:
                token = await self.tokens.token(call.deadline)
            except Problem:
                if last is not None:  # the failed attempt is the better account
                    raise last from None
                raise
            waited = attempt > 0 or self.tokens.waited
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
                answer, reached = await self._attempt(method, path, params, token, call)
            finally:
                if own_slot:
                    self._slots_release()
                if write:
                    self.pacer.sent() if sent else self.pacer.unsent()
            retry_after: float | None = None
            if isinstance(answer, Problem):
                last = answer
                call.write_may_have_acted |= write and reached
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
                if call.on_throttle is not None:
                    await call.on_throttle(wait)
            if not fits(wait, call.deadline.remaining(), self._margin(method)):
                if last.failure is Failure.GRAPH_THROTTLED:
                    last.retry_after = wait
                raise last
            await self._sleep(wait)

    async def _before_write(
        self, method: str, call: Call, recheck: Recheck | None, last: Problem | None
    ) -> None:
        """Send nothing once the request has stopped, nor after a wait without a fresh read.

        After a failed attempt, its failure is what is raised instead of a write: the device may
        have changed because of it, which only a read can tell.
        """
        self._check_halted(call, last)
        if recheck is None:
            await self._shared_budget(call)
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
        self._check_halted(call, last)
        self._check_time_left(method, call.deadline, last)
        await self._shared_budget(call)

    @staticmethod
    async def _shared_budget(call: Call) -> None:
        if call.before_write is not None:
            await call.before_write()

    @staticmethod
    def _check_halted(call: Call, last: Problem | None) -> None:
        halted = call.halted() if call.halted is not None else None
        if halted is not None:
            raise last or halted

    async def _attempt(
        self, method: str, path: str, params: dict[str, str] | None, token: str, call: Call
    ) -> tuple[GraphResponse | Problem, bool]:
        """One request to Graph: its answer, or the failure that stood in for one; and whether
        the request may have reached Graph."""
        try:
            # httpx's timeout bounds each read, not the whole answer: a server trickling
            # bytes could otherwise hold an attempt far past the deadline.
            async with asyncio.timeout(call.deadline.attempt_timeout()):
                return await self._send(method, path, params, token, call), True
        except NOT_SENT as exc:
            failure = (
                "did not answer in time"
                if isinstance(exc, httpx.TimeoutException)
                else (f"could not be reached ({type(exc).__name__})")
            )
            return Problem(Failure.GRAPH_UNREACHABLE, f"Microsoft Graph {failure}."), False
        except (httpx.TimeoutException, TimeoutError):
            return Problem(
                Failure.GRAPH_UNREACHABLE, "Microsoft Graph did not answer in time."
            ), True
        except httpx.TransportError as exc:
            message = f"The connection to Microsoft Graph failed ({type(exc).__name__})."
            return Problem(Failure.GRAPH_UNREACHABLE, message), True
        except (httpx.RequestError, UnreadableAnswer) as exc:
            # The answer came but cannot be read: httpx's DecodingError (a body that does not
            # decompress) is a RequestError but no TransportError; ours is a size bound.
            message = f"Microsoft Graph's answer could not be read ({exc})."
            return Problem(Failure.GRAPH_ERROR, message), True

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
            content = await read_bounded(response)
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
