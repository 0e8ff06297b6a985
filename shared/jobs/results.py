"""One input's result document, and a job's report: the bulk report's shape, for any size.

A result is written once, when the input is final, as the synchronous bulk report writes its
entries (`index`, `input`, `deviceId`, `serialNumber`, `status`, `httpStatus`,
`previousUserPrincipalName`, `detail`, and `candidates` for an ambiguous serial number). Inputs
still open when the report is read are `cancelled` or `expired` once the job has ended that way.
"""

from __future__ import annotations

import json
from typing import Any

from shared import audit
from shared.jobs.store import InputState, Job
from shared.problems import Failure, Problem
from shared.service import ALREADY_UNASSIGNED, Outcome

SUCCESSES = ("unassigned", "alreadyUnassigned", "wouldUnassign")
CANCELLED = "cancelled"
EXPIRED = "expired"
# Inputs a caller may send again in a new request: what Graph or time refused, not the entry.
RESEND = frozenset({EXPIRED, Failure.GRAPH_THROTTLED.slug, Failure.OUT_OF_TIME.slug})


def from_outcome(
    index: int, entry: Any, outcome: Outcome, device_id: str | None = None
) -> dict[str, Any]:
    device = outcome.device
    removed = None if outcome.status == ALREADY_UNASSIGNED else device.user_principal_name or None
    return {
        "index": index,
        "input": entry,
        "deviceId": device_id or device.id,
        "serialNumber": device.serial_number or None,
        "status": outcome.status,
        "httpStatus": 200,
        "previousUserPrincipalName": removed,
        "detail": outcome.message(),
    }


def from_problem(
    index: int,
    entry: Any,
    problem: Problem,
    device_id: str | None = None,
    serial_number: str | None = None,
) -> dict[str, Any]:
    result = {
        "index": index,
        "input": entry,  # None for an entry refused at submission: its text is not repeated
        "deviceId": device_id,
        "serialNumber": serial_number,
        "status": problem.failure.slug,
        "httpStatus": problem.status,
        "previousUserPrincipalName": None,
        "detail": problem.detail,
    }
    if "candidates" in problem.extra:
        result["candidates"] = problem.extra["candidates"]
    return result


def open_result(state: InputState, job: Job) -> dict[str, Any] | None:
    """The result of an input not worked to the end: None while the job still runs."""
    if job.status == "running":
        return None
    if job.status == CANCELLED:
        status, http, detail = CANCELLED, 409, "Not done: the job was cancelled first."
    else:
        status, http = EXPIRED, 503
        detail = "Not done by the job's deadline; nothing more will be tried. Send it again."
    if state.write_started:  # a write was on its way when the job ended: say so
        detail = (
            f"{'Cancelled' if status == CANCELLED else 'Stopped at the deadline'} while a write "
            "may have reached Microsoft Graph: the user may have been removed. Check the device "
            "before acting on it again."
        )
    return {
        "index": state.index,
        "input": state.entry,
        "deviceId": None,
        "serialNumber": None,
        "status": status,
        "httpStatus": http,
        "previousUserPrincipalName": None,
        "detail": detail,
    }


def report(job: Job, inputs: list[InputState]) -> dict[str, Any]:
    """The finished job's report, in input order, as the bulk report reads."""
    results = [s.result if s.result is not None else open_result(s, job) for s in inputs]
    final = [r for r in results if r is not None]
    succeeded = sum(1 for r in final if r["status"] in SUCCESSES)
    retry = [r for r in final if r["status"] in RESEND]
    summary: dict[str, Any] = {
        "total": job.total,
        "succeeded": succeeded,
        "failed": len(final) - succeeded,
        "retryable": len(retry),
    }
    for status in (*SUCCESSES, CANCELLED, EXPIRED):
        summary[status] = sum(1 for r in final if r["status"] == status)
    doc: dict[str, Any] = {
        "jobId": job.job_id,
        "status": job.status,
        "ticketId": job.ticket_id,
        "correlationId": job.correlation_id,
        "dryRun": job.dry_run,
        "summary": summary,
        "results": final,
        "message": f"{succeeded} of {job.total} devices done"
        + (f", {len(retry)} to send again" if retry else "")
        + (f", {summary['failed'] - len(retry)} failed" if summary["failed"] > len(retry) else "")
        + ". Intune can take several minutes to show changes.",
        "resend": [r["input"] for r in retry if r["input"] is not None],
    }
    return doc


def progress(job: Job, inputs: list[InputState]) -> dict[str, Any]:
    """While the job runs: how far it has come."""
    done = [s.result for s in inputs if s.result is not None]
    succeeded = sum(1 for r in done if r["status"] in SUCCESSES)
    return {
        "jobId": job.job_id,
        "status": job.status,
        "ticketId": job.ticket_id,
        "correlationId": job.correlation_id,
        "dryRun": job.dry_run,
        "total": job.total,
        "finished": len(done),
        "succeeded": succeeded,
        "failed": len(done) - succeeded,
        "open": job.total - len(done),
    }


def job_caller(job: Job) -> dict[str, str]:
    """Who started the job, as stored with it, for the audit records of its inputs."""
    try:
        value = json.loads(job.caller) if job.caller else None
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        return value
    return {"kind": "unknown"}


def input_record(job: Job, result: dict[str, Any]) -> audit.AuditRecord:
    """The audit record of one input's result that no worker wrote one for (refused at
    submission, cancelled, expired, or failed by the sweeper)."""
    record = audit.AuditRecord(job.correlation_id, event="bulkUnassignJobInput")
    record.jobId, record.caller, record.itemIndex = job.job_id, job_caller(job), result["index"]
    record.ticketId, record.dryRun = job.ticket_id, job.dry_run
    record.deviceId, record.serialNumber = result["deviceId"], result["serialNumber"]
    record.outcome, record.httpStatus = result["status"], result["httpStatus"]
    record.detail = result["detail"]
    return record


def emit_open_inputs(job: Job, inputs: list[InputState]) -> None:
    """One record per input the end of `job` made final (cancelled or expired)."""
    for state in inputs:
        if state.result is None:
            ended = open_result(state, job)
            if ended is not None:
                audit.emit(input_record(job, ended))
