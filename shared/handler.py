"""From one HTTP request to one HTTP answer and one audit record, independent of azure.functions.

This is the composition root: it owns the process-wide Graph client (one httpx client, one
credential), made on first use so that importing the function stays cheap.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared import audit
from shared.graph import Call, GraphClient
from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.request import correlation_id, parse_unassign
from shared.retry import Deadline
from shared.service import Outcome, unassign
from shared.settings import load_settings

JSON = "application/json; charset=utf-8"
PROBLEM_JSON = "application/problem+json; charset=utf-8"

_graph: GraphClient | None = None


def default_graph() -> GraphClient:
    """The process's Graph client; a settings error is raised again on every request until fixed."""
    global _graph
    if _graph is None:
        settings = load_settings()
        _graph = GraphClient(settings, TokenProvider(settings))
    return _graph


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _result(status: int, content_type: str, doc: dict[str, Any], cid: str) -> HttpResult:
    headers = {"Content-Type": content_type, "X-Correlation-Id": cid, "Cache-Control": "no-store"}
    return HttpResult(status, headers, json.dumps(doc, ensure_ascii=False).encode("utf-8"))


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
        "graphRequestIds": call.request_ids,
        "message": outcome.message(),
    }
    return _result(200, JSON, doc, call.correlation_id)


def _problem(problem: Problem, cid: str, record: audit.AuditRecord) -> HttpResult:
    doc = problem.body(cid)
    for key in ("deviceId", "ticketId"):
        value = getattr(record, key)
        if value is not None:
            doc.setdefault(key, value)
    result = _result(problem.status, PROBLEM_JSON, doc, cid)
    retry_after = problem.retry_after_header()
    if retry_after is not None:
        result.headers["Retry-After"] = retry_after
    return result


async def handle_unassign(
    headers: Mapping[str, str],
    body: bytes,
    route_device_id: str | None,
    *,
    graph: Callable[[], GraphClient] = default_graph,
) -> HttpResult:
    started = time.perf_counter()
    lowered = {key.lower(): value for key, value in headers.items()}
    cid = correlation_id(lowered)
    record = audit.AuditRecord(correlationId=cid)
    try:
        result = await _run(lowered, body, route_device_id, graph, record)
    except Problem as problem:
        record.outcome, record.detail = problem.failure.slug, problem.detail
        result = _problem(problem, cid, record)
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
        )
    record.httpStatus = result.status
    record.durationMs = round((time.perf_counter() - started) * 1000)
    audit.emit(record)
    return result


async def _run(
    headers: Mapping[str, str],
    body: bytes,
    route_device_id: str | None,
    graph: Callable[[], GraphClient],
    record: audit.AuditRecord,
) -> HttpResult:
    request = parse_unassign(body, route_device_id, headers.get("content-type"))
    record.deviceId, record.ticketId = request.device_id, request.ticket_id
    client = graph()
    deadline = Deadline.after(client.settings.deadline_seconds, client.clock)
    call = Call(deadline, record.correlationId)
    try:
        outcome = await unassign(client, request, call)
    finally:
        record.graphRequestIds, record.attempts = call.request_ids, call.attempts
        record.serialNumber = call.device.get("serialNumber")
        record.previousUserPrincipalName = call.device.get("userPrincipalName") or None
    record.outcome = outcome.status
    return _success(outcome, request.ticket_id, call)
