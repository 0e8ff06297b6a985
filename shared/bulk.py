"""Bulk unassign: every unique device goes through the single-device path, a few at a time.

    parse ──▶ each input: a request, or its own 400
      │
    resolve serial numbers (once per serial) ──▶ device ids
      │
    group inputs by device id ──▶ one unassign per device (its inputs must agree on the
      │                           expected user), at most CONCURRENCY in flight; writes share
      │                           the process's write pace (shared.retry.WritePacer)
    report one result per input, in input order

A failure that would fail every device alike (identity, permission, settings), or an error of
our own, stops new work at once: no further write starts (one already sent is awaited), and every
input not yet done reports that failure. Once any write has been sent, the answer is the
per-input report, never a problem saying that nothing changed.
"""

from __future__ import annotations

import asyncio
import math
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared.graph import Call, GraphClient
from shared.lookup import find_by_serial
from shared.problems import MAX_RETRY_AFTER_SECONDS, Failure, Problem
from shared.request import (
    UnassignRequest,
    check_content_type,
    dry_run,
    expected_upn,
    invalid,
    known_fields,
    parse_body,
    printable_echo,
    target,
    ticket_id,
    user_key,
)
from shared.service import ALREADY_UNASSIGNED, UNASSIGNED, WOULD_UNASSIGN, Outcome, unassign

MAX_DEVICES = 100
# The largest body the connector's definition allows (100 devices, every string at its longest,
# every character escaped as \uXXXX, pretty-printed) is about 395 KB: it must never be 413.
MAX_BODY_BYTES = 512 * 1024
CONCURRENCY = 4
FIELDS = ("devices", "ticketId", "dryRun")
ITEM_FIELDS = ("deviceId", "serialNumber", "expectedUserPrincipalName")
RETRYABLE = frozenset({Failure.GRAPH_THROTTLED, Failure.OUT_OF_TIME})
WHOLE_REQUEST = frozenset(
    {
        Failure.IDENTITY_MISCONFIGURED,
        Failure.IDENTITY_UNAVAILABLE,
        Failure.GRAPH_PERMISSION,
        Failure.CONFIGURATION,
    }
)
SUCCESSES = (UNASSIGNED, ALREADY_UNASSIGNED, WOULD_UNASSIGN)
T = TypeVar("T")


@dataclass(frozen=True)
class BulkRequest:
    """A validated bulk body: the inputs as sent, and what applies to all of them."""

    inputs: list[Any]
    items: list[UnassignRequest | Problem]
    ticket_id: str | None
    dry_run: bool


@dataclass
class ItemResult:
    """The answer for one input of a bulk request."""

    input: Any
    device_id: str | None = None
    outcome: Outcome | None = None
    problem: Problem | None = None
    call: Call | None = None
    rejected: bool = False  # the entry itself failed validation

    @property
    def status(self) -> str:
        if self.outcome is not None:
            return self.outcome.status
        assert self.problem is not None
        return self.problem.failure.slug

    @property
    def http_status(self) -> int:
        return 200 if self.problem is None else self.problem.status

    @property
    def previous_user(self) -> str | None:
        """The user this input removed (or, in a dry run, would remove)."""
        outcome = self.outcome
        if outcome is None or outcome.status == ALREADY_UNASSIGNED:
            return None
        return outcome.device.user_principal_name or None

    @property
    def detail(self) -> str:
        if self.outcome is not None:
            return self.outcome.message()
        assert self.problem is not None
        return self.problem.detail


def _item(raw: Any, dry: bool) -> UnassignRequest:
    if not isinstance(raw, dict):
        raise invalid("Each entry of devices must be a JSON object.")
    known_fields(raw, ITEM_FIELDS, " in a devices entry")
    device_id, serial = target(raw, None)
    upn = raw.get("expectedUserPrincipalName")
    return UnassignRequest(
        device_id=device_id,
        serial_number=serial,
        expected_upn=None if "expectedUserPrincipalName" not in raw else expected_upn(upn),
        dry_run=dry,
    )


def parse_bulk(
    body: bytes,
    content_type: str | None,
    max_devices: int = MAX_DEVICES,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> BulkRequest:
    check_content_type(content_type)
    data = parse_body(body, FIELDS, max_body_bytes)
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices:
        raise invalid(
            "devices must be a non-empty JSON array of {deviceId | serialNumber} objects."
        )
    if len(devices) > max_devices:
        raise invalid(f"devices holds {len(devices)} entries; at most {max_devices} are allowed.")
    dry = dry_run(data["dryRun"]) if "dryRun" in data else False
    items: list[UnassignRequest | Problem] = []
    for raw in devices:
        try:
            items.append(_item(raw, dry))
        except Problem as problem:
            items.append(problem)
    return BulkRequest(
        inputs=devices,
        items=items,
        ticket_id=ticket_id(data["ticketId"]) if "ticketId" in data else None,
        dry_run=dry,
    )


@dataclass
class _Runner:
    """One bulk request's shared state while its devices are worked through."""

    graph: GraphClient
    new_call: Callable[[], Call]
    limit: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(CONCURRENCY))
    stopped: Problem | None = None

    def halted(self) -> Problem | None:
        return self.stopped

    async def run(self, work: Callable[[Call], Awaitable[T]], call: Call) -> T | Problem:
        call.halted = self.halted  # no write starts once the request has stopped
        async with self.limit:
            if self.stopped is not None:
                return self.stopped
            try:
                return await work(call)
            except Problem as problem:
                if problem.failure in WHOLE_REQUEST:
                    self.stopped = self.stopped or problem
                return problem
            except Exception:  # noqa: BLE001 - ours, not the device's: stop, report, log the trace
                self.stopped = self.stopped or Problem(
                    Failure.INTERNAL,
                    "Not done: the request stopped after an unexpected error on another input; "
                    "nothing was changed for this device. Send it again.",
                )
                return Problem(
                    Failure.INTERNAL,
                    "An unexpected error occurred; nothing is known to have changed. Quote the "
                    "correlation id when reporting it.",
                    trace=traceback.format_exc(),
                )


def _agreed_upn(requests: list[UnassignRequest]) -> str | None:
    wanted = {user_key(r.expected_upn): r.expected_upn for r in requests if r.expected_upn}
    if len(wanted) > 1:
        raise invalid(
            "The same device is named more than once with different expectedUserPrincipalName "
            "values; nothing was changed for it."
        )
    return next(iter(wanted.values()), None)


async def run_bulk(
    graph: GraphClient, bulk: BulkRequest, new_call: Callable[[], Call]
) -> list[ItemResult]:
    runner = _Runner(graph, new_call)
    results = [ItemResult(input=raw) for raw in bulk.inputs]
    requests: dict[int, UnassignRequest] = {}
    for index, item in enumerate(bulk.items):
        if isinstance(item, Problem):
            results[index].problem, results[index].rejected = item, True
        else:
            requests[index] = item

    serials = sorted({r.serial_number for r in requests.values() if r.serial_number is not None})
    serial_calls = {serial: new_call() for serial in serials}

    def lookup(serial: str) -> Callable[[Call], Awaitable[str]]:
        return lambda call: find_by_serial(graph, serial, call)

    found = await asyncio.gather(
        *(runner.run(lookup(serial), serial_calls[serial]) for serial in serials)
    )
    device_of = dict(zip(serials, found, strict=True))

    by_device: dict[str, list[int]] = {}
    for index, request in requests.items():
        resolved = request.device_id or device_of[request.serial_number or ""]
        if isinstance(resolved, Problem):
            results[index].problem = resolved
            results[index].call = serial_calls[request.serial_number or ""]
            continue
        results[index].device_id = resolved
        by_device.setdefault(resolved, []).append(index)

    async def one_device(device_id: str, indexes: list[int]) -> None:
        call = new_call()
        for index in indexes:
            results[index].call = call
        try:
            upn = _agreed_upn([requests[i] for i in indexes])
        except Problem as problem:
            outcome: Outcome | Problem = problem
        else:
            single = UnassignRequest(device_id, None, expected_upn=upn, dry_run=bulk.dry_run)
            outcome = await runner.run(lambda c: unassign(graph, single, c), call)
        for index in indexes:
            if isinstance(outcome, Problem):
                results[index].problem = outcome
            else:
                results[index].outcome = outcome

    await asyncio.gather(*(one_device(d, ix) for d, ix in by_device.items()))
    return results


def whole_request_failure(results: list[ItemResult]) -> Problem | None:
    """The one failure that answers the whole request, when no write was sent for any input.

    Once a write has started, only the per-input report tells the truth about what changed.
    """
    if any(r.call is not None and r.call.writes_sent for r in results):
        return None
    problems = [r.problem for r in results]
    for problem in problems:
        if problem is not None and problem.failure is Failure.INTERNAL and problem.trace:
            return problem
    if any(p is None for p in problems):
        return None
    failures = {p.failure for p in problems if p is not None}
    first = problems[0]
    if len(failures) == 1 and first is not None and first.failure in WHOLE_REQUEST:
        return first
    return None


def report(results: list[ItemResult], bulk: BulkRequest, call: Call) -> dict[str, Any]:
    entries = []
    for index, result in enumerate(results):
        seen = result.call.device if result.call is not None else {}
        entry = {
            "index": index,
            # Caller text that failed validation is not repeated: the index says which entry.
            "input": None if result.rejected else printable_echo(result.input),
            "deviceId": result.device_id,
            "serialNumber": seen.get("serialNumber"),
            "status": result.status,
            "httpStatus": result.http_status,
            "previousUserPrincipalName": result.previous_user,
            "detail": result.detail,
        }
        if result.problem is not None and "candidates" in result.problem.extra:
            entry["candidates"] = result.problem.extra["candidates"]
        entries.append(entry)
    retry = [r for r in results if r.problem is not None and r.problem.failure in RETRYABLE]
    succeeded = sum(1 for r in results if r.problem is None)
    summary = {"total": len(results), "succeeded": succeeded, "failed": len(results) - succeeded}
    summary["retryable"] = len(retry)
    for status in SUCCESSES:
        summary[status] = sum(1 for r in results if r.outcome and r.outcome.status == status)
    doc: dict[str, Any] = {
        "ticketId": bulk.ticket_id,
        "correlationId": call.correlation_id,
        "graphClientRequestId": call.client_request_id,
        "dryRun": bulk.dry_run,
        "summary": summary,
        "results": entries,
        "message": (
            f"{succeeded} of {len(results)} devices done"
            + (f", {len(retry)} to send again later" if retry else "")
            + (
                f", {summary['failed'] - len(retry)} failed"
                if summary["failed"] > len(retry)
                else ""
            )
            + ". Intune can take several minutes to show changes."
        ),
    }
    # Always a list, empty when nothing is to be sent again: a flow's loop over it must not
    # meet a missing field (which its Array variable would take as null).
    doc["resend"] = [printable_echo(r.input) for r in retry]
    if retry:
        waits = [r.problem.retry_after or 1.0 for r in retry if r.problem is not None]
        doc["retryAfter"] = min(MAX_RETRY_AFTER_SECONDS, max(1, math.ceil(max(waits))))
    return doc
