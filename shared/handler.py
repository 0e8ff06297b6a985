"""From one HTTP request to one HTTP answer and one audit record, independent of azure.functions.

This is the composition root: it owns the process-wide Graph client (one httpx client, one
credential), made on first use so that importing the function stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from shared import audit
from shared.caller_auth import FUNCTION_KEY, Caller, CallerAuth, load_caller_settings
from shared.graph import Call, GraphClient, graph_request_id
from shared.identity import TokenProvider
from shared.media import JSON, problem_media_type
from shared.problems import Failure, Problem
from shared.request import check_query, correlation_id, parse_lookup, parse_unassign
from shared.retry import Deadline
from shared.service import UNASSIGNED, Device, Outcome, current, unassign
from shared.settings import Settings, load_settings
from shared.startup import loading

if TYPE_CHECKING:
    from shared.bulk import ItemResult

_graph: GraphClient | None = None
# Held while the Graph client is made: functions ask for it from the event loop and from worker
# threads at the same moment, and a second copy would be a second token fetch. Nothing slow
# (no storage, no network) happens under it, so the event loop never waits on it for long.
_making_graph = threading.Lock()
_caller_auth: CallerAuth | None = None


def default_graph() -> GraphClient:
    """The process's Graph client; a settings error is raised again on every request until fixed."""
    global _graph
    if _graph is None:
        with _making_graph:
            if _graph is None:
                settings = load_settings()
                tokens = TokenProvider(settings)
                tokens.prefetch()  # the token arrives while the client below is built
                with loading():  # httpx loads httpcore and the TLS trust store with its client
                    _graph = GraphClient(settings, tokens)
    return _graph


async def default_authorize(headers: Mapping[str, str], remaining: Callable[[], float]) -> Caller:
    """The function key only, or also an Entra ID token with our app role (CALLER_* settings).

    Settings are read on every request, so a half-done configuration fails every request (500)
    rather than letting any through. Fetching the tenant's signing keys counts against the
    request's deadline (`remaining` seconds).
    """
    global _caller_auth
    settings = load_caller_settings(os.environ)
    if settings is None:
        return FUNCTION_KEY
    if _caller_auth is None or _caller_auth.settings != settings:
        _caller_auth = CallerAuth(settings)
    return await _caller_auth.authorize(headers, budget=remaining())


# Who is calling, from the request's headers and the seconds its deadline leaves.
Authorize = Callable[[Mapping[str, str], Callable[[], float]], Awaitable[Caller]]
NO_PARAMS: Mapping[str, str] = MappingProxyType({})


class HttpResult(NamedTuple):
    """The HTTP answer to give the caller, independent of azure.functions."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _result(status: int, content_type: str, doc: dict[str, Any], cid: str) -> HttpResult:
    headers = {"Content-Type": content_type, "X-Correlation-Id": cid, "Cache-Control": "no-store"}
    # ASCII-escaped: no string, not even a lone surrogate, can make the answer fail to encode.
    return HttpResult(status, headers, json.dumps(doc).encode("ascii"))


def _success(outcome: Outcome, ticket_id: str | None, call: Call) -> HttpResult:
    device = outcome.device
    doc = {
        "deviceId": device.id,
        "serialNumber": device.serial_number,
        "status": outcome.status,
        "previousUserPrincipalName": device.user_principal_name or None,
        "previousAddressableUserName": device.addressable_user_name or None,
        "ticketId": ticket_id,
        "correlationId": call.correlation_id,
        "graphClientRequestId": call.client_request_id,
        "graphRequestIds": call.request_ids,
        "message": outcome.message(),
    }
    return _result(200, JSON, doc, call.correlation_id)


def _problem(problem: Problem, cid: str, record: audit.AuditRecord, media_type: str) -> HttpResult:
    doc = problem.body(cid)
    doc["graphClientRequestId"] = record.graphClientRequestId
    for key in ("deviceId", "ticketId"):
        value = getattr(record, key)
        if value is not None:
            doc.setdefault(key, value)
    result = _result(problem.status, media_type, doc, cid)
    if problem.failure is Failure.CALLER_UNAUTHENTICATED:
        result.headers["WWW-Authenticate"] = "Bearer"
    retry_after = problem.retry_after_header()
    if retry_after is not None:
        result.headers["Retry-After"] = retry_after
    return result


# The work of one request: its lowered headers, its audit record, and when it started (monotonic).
Work = Callable[[dict[str, str], audit.AuditRecord, float], Awaitable[HttpResult]]
DeadlineOf = Callable[[Settings], float]


async def serve(
    headers: Mapping[str, str],
    event: str,
    work: Work,
    authorize: Authorize,
    deadline_of: DeadlineOf = lambda settings: settings.deadline_seconds,
) -> HttpResult:
    """Check the caller, run the work: every failure becomes a problem, every request one record."""
    started = time.monotonic()
    lowered = {key.lower(): value for key, value in headers.items()}
    cid = correlation_id(lowered)
    record = audit.AuditRecord(cid, graph_request_id(cid), event)

    def remaining() -> float:
        return deadline_of(load_settings()) - (time.monotonic() - started)

    try:
        caller = await authorize(lowered, remaining)
        record.caller = caller.audit()  # recorded before the role check: a 403 names who tried
        caller.require_role()
        result = await work(lowered, record, started)
    except Problem as problem:
        record.outcome, record.detail = problem.failure.slug, problem.detail
        record.trace = problem.trace
        result = _problem(problem, cid, record, problem_media_type(lowered.get("accept")))
    except Exception:  # noqa: BLE001 - the caller gets a correlation id, the log the trace
        record.outcome, record.trace = Failure.INTERNAL.slug, traceback.format_exc()
        result = _problem(
            Problem(
                Failure.INTERNAL,
                "An unexpected error occurred; nothing is known to have changed. "
                "Quote the correlation id when reporting it.",
            ),
            cid,
            record,
            problem_media_type(lowered.get("accept")),
        )
    record.httpStatus = result.status
    record.durationMs = round((time.monotonic() - started) * 1000)
    audit.emit(record)
    return result


def new_call(
    client: GraphClient, record: audit.AuditRecord, seconds: float, started: float
) -> Call:
    """The request's Graph work, in what is left of its deadline since it `started`."""
    left = seconds - (time.monotonic() - started)
    return Call(
        Deadline.after(left, client.clock), record.correlationId, record.graphClientRequestId
    )


@contextlib.contextmanager
def recorded(call: Call, record: audit.AuditRecord) -> Iterator[None]:
    """Copy what Graph told us into the audit record, however the work ends."""
    try:
        yield
    finally:
        record.graphRequestIds, record.attempts = call.request_ids, call.attempts
        record.serialNumber = call.device.get("serialNumber")
        record.deviceId = record.deviceId or call.device.get("id")


async def handle_unassign(
    headers: Mapping[str, str],
    body: bytes,
    route_device_id: str | None,
    params: Mapping[str, str] = NO_PARAMS,
    *,
    serial_only: bool = False,
    graph: Callable[[], GraphClient] = default_graph,
    authorize: Authorize = default_authorize,
) -> HttpResult:
    async def work(
        lowered: dict[str, str], record: audit.AuditRecord, started: float
    ) -> HttpResult:
        check_query(params)  # an option in the URL would be silently ignored: refuse it
        request = parse_unassign(
            body, route_device_id, lowered.get("content-type"), serial_only=serial_only
        )
        record.deviceId, record.ticketId = request.device_id, request.ticket_id
        record.dryRun = request.dry_run
        client = graph()
        call = new_call(client, record, client.settings.deadline_seconds, started)
        with recorded(call, record):
            outcome = await unassign(client, request, call)
        record.outcome = outcome.status
        if outcome.status == UNASSIGNED:
            record.previousUserPrincipalName = outcome.device.user_principal_name
        return _success(outcome, request.ticket_id, call)

    return await serve(headers, "unassignUser", work, authorize)


async def handle_status(
    headers: Mapping[str, str],
    route_device_id: str | None,
    params: Mapping[str, str],
    *,
    graph: Callable[[], GraphClient] = default_graph,
    authorize: Authorize = default_authorize,
) -> HttpResult:
    async def work(
        lowered: dict[str, str], record: audit.AuditRecord, started: float
    ) -> HttpResult:
        request = parse_lookup(route_device_id, params)
        record.deviceId = request.device_id
        client = graph()
        call = new_call(client, record, client.settings.deadline_seconds, started)
        with recorded(call, record):
            device = await current(client, request, call)
        record.outcome = "assigned" if device.user_principal_name else "notAssigned"
        return _result(200, JSON, _assignment(device, call), call.correlation_id)

    return await serve(headers, "getAssignment", work, authorize)


def _assignment(device: Device, call: Call) -> dict[str, Any]:
    user = device.user_principal_name
    return {
        "deviceId": device.id,
        "serialNumber": device.serial_number,
        "assigned": bool(user),
        "userPrincipalName": user or None,
        "addressableUserName": device.addressable_user_name or None,
        "enrollmentState": device.enrollment_state or None,
        "lastContactedDateTime": device.last_contacted or None,
        "correlationId": call.correlation_id,
        "graphClientRequestId": call.client_request_id,
        "graphRequestIds": call.request_ids,
        "message": (
            f"{device.name()} is assigned to {user}."
            if user
            else f"{device.name()} has no assigned user."
        ),
    }


def _item_record(
    index: int, result: ItemResult, ticket: str | None, dry: bool, parent: audit.AuditRecord
) -> audit.AuditRecord:
    call = result.call
    device = call.device if call is not None else {}
    problem = result.problem
    return audit.AuditRecord(
        correlationId=parent.correlationId,
        graphClientRequestId=parent.graphClientRequestId,
        caller=parent.caller,
        event="bulkUnassignItem",
        itemIndex=index,
        ticketId=ticket,
        deviceId=result.device_id,
        serialNumber=device.get("serialNumber"),
        dryRun=dry,
        previousUserPrincipalName=result.previous_user if result.status == UNASSIGNED else None,
        outcome=result.status,
        httpStatus=result.http_status,
        graphRequestIds=call.request_ids if call is not None else [],
        attempts=call.attempts if call is not None else 0,
        detail=problem.detail if problem is not None else None,
        trace=problem.trace if problem is not None else None,
    )


async def handle_bulk(
    headers: Mapping[str, str],
    body: bytes,
    params: Mapping[str, str] = NO_PARAMS,
    *,
    graph: Callable[[], GraphClient] = default_graph,
    authorize: Authorize = default_authorize,
) -> HttpResult:
    # Imported here: only the bulk function needs it, and every cold start would pay for it.
    from shared.bulk import parse_bulk, report, run_bulk, whole_request_failure

    async def work(
        lowered: dict[str, str], record: audit.AuditRecord, started: float
    ) -> HttpResult:
        check_query(params)  # an option in the URL would be silently ignored: refuse it
        bulk = parse_bulk(body, lowered.get("content-type"))
        record.ticketId, record.dryRun = bulk.ticket_id, bulk.dry_run
        client = graph()
        seconds = client.settings.bulk_deadline_seconds
        request_call = new_call(client, record, seconds, started)
        deadline = request_call.deadline
        results = await run_bulk(
            client,
            bulk,
            lambda: Call(deadline, record.correlationId, record.graphClientRequestId),
        )
        for index, result in enumerate(results):
            audit.emit(_item_record(index, result, bulk.ticket_id, bulk.dry_run, record))
        whole = whole_request_failure(results)
        if whole is not None:
            raise whole
        doc = report(results, bulk, request_call)
        record.outcome = "completed" if doc["summary"]["failed"] == 0 else "partial"
        record.detail = doc["message"]
        return _result(
            200 if record.outcome == "completed" else 207, JSON, doc, record.correlationId
        )

    return await serve(
        headers,
        "bulkUnassignUser",
        work,
        authorize,
        lambda settings: settings.bulk_deadline_seconds,
    )
