"""Bulk jobs over HTTP: start one, follow it at its status URL, cancel it.

    POST   /api/BulkUnassignJobs                       function key (and token when configured)
           ──▶ 202, Location: <status URL>, Retry-After, {jobId, status, total, statusUrl, …}
    GET    /api/BulkUnassignJobs/{jobId}/{capability}   anonymous: the URL is the credential
           ──▶ 202 (same Location, Retry-After) while running; 200 with the report when ended
    DELETE /api/BulkUnassignJobs/{jobId}               function key (and token when configured)
           ──▶ 200 with the report so far; open inputs become `cancelled`

The status URL works on its own, because Power Automate may not send custom headers when it
polls, and a function key must never sit in a URL: its last segment is a read capability of 192
random bits. Only its SHA-256 is stored, compared in constant time, and gone with the job. A
wrong capability gets exactly the 404 of an unknown job. The URL's base is JOB_PUBLIC_BASE_URL
(or the app's own host name), never the request's Host header.

An Idempotency-Key (1 to 64 of A-Z a-z 0-9 . _ : -) makes a repeated POST safe: within 24 h the
same key, from the same caller (an Entra ID caller's tenant and object id; every function-key
caller shares one scope), answers with the same job and enqueues nothing, under a fresh status
URL (capabilities are not stored, only their hashes); with another body it is a 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from shared import audit
from shared.bulk import BulkRequest, parse_bulk
from shared.caller_auth import Caller
from shared.handler import NO_PARAMS, Authorize, HttpResult, _result, default_authorize, serve
from shared.jobs.results import (
    emit_open_inputs,
    from_problem,
    input_record,
    progress,
    report,
)
from shared.jobs.settings import JobSettings, load_job_settings
from shared.jobs.store import MAX_CAPABILITIES, InputState, Job, JobStore, Stale
from shared.jobs.sweeper import ended_record
from shared.jobs.worker import Message
from shared.media import JSON
from shared.problems import Failure, Problem
from shared.request import check_query, invalid, printable_echo

MAX_JOB_DEVICES = 10_000
MAX_JOB_BODY_BYTES = 2 * 1024 * 1024
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
_JOB_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)
MIN_RETRY_AFTER_SECONDS, MAX_RETRY_AFTER_SECONDS = 5, 60
CAPABILITY_BYTES = 24  # 192 bits
# A key whose job is not stored this long after the key was is a start that died.
START_GRACE_SECONDS = 60.0
STARTING_RETRY_SECONDS = 2.0
_STATUS_ROUTE = "api/BulkUnassignJobs"
_CANCEL_ROUNDS = 5
T = TypeVar("T")


@dataclass
class Jobs:
    """The process's job services: settings, the table's store, the queue."""

    settings: JobSettings
    store: JobStore
    send: Callable[[str], None]


_jobs: Jobs | None = None
# Held while the jobs' services are made (one per process, whichever threads ask at once).
_making_jobs = threading.Lock()


def default_jobs() -> Jobs:
    global _jobs
    if _jobs is None:
        with _making_jobs:
            if _jobs is None:
                _jobs = _make_jobs()
    return _jobs


def _make_jobs() -> Jobs:
    settings = load_job_settings()
    queue, table = settings.queue(), settings.table()
    _create_if_missing(queue.create_queue, table.create_table)

    def send(text: str) -> None:
        queue.send_message(text)

    return Jobs(settings, JobStore(table), send)


def _create_if_missing(*creates: Callable[[], object]) -> None:
    """The jobs' queue and table: infra/ creates them in Azure, the first use does locally.

    An identity allowed to use them but not to create them (a 403) is no fault when they exist.
    """
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    for create in creates:
        try:
            create()
        except ResourceExistsError:
            pass
        except HttpResponseError as error:
            if error.status_code != 403:
                raise


async def _io(call: Callable[..., T], *args: Any) -> T:
    """A storage call on a worker thread: the event loop never waits on storage."""
    return await asyncio.to_thread(call, *args)


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _status_url(settings: JobSettings, job_id: str, capability: str) -> str:
    return f"{settings.public_base_url}/{_STATUS_ROUTE}/{job_id}/{capability}"


def _idempotency_key(headers: Mapping[str, str]) -> str | None:
    key = headers.get("idempotency-key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise invalid("Idempotency-Key must be 1 to 64 of A-Z a-z 0-9 . _ : -")
    return key


def _scope(caller: dict[str, str]) -> str:
    """Whose keys these are: an Entra ID caller's own, else the one scope of function keys."""
    if caller.get("objectId") and caller.get("tenantId"):
        return f"entra:{caller['tenantId']}:{caller['objectId']}"
    return "functionKey"


def _body_hash(bulk: BulkRequest) -> str:
    canonical = {"devices": bulk.inputs, "ticketId": bulk.ticket_id, "dryRun": bulk.dry_run}
    text = json.dumps(canonical, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return _hash(text)


def _inputs(bulk: BulkRequest) -> list[InputState]:
    """One state per entry: the validated entry, or its own 400 result from the start."""
    states = []
    for index, item in enumerate(bulk.items):
        if isinstance(item, Problem):
            states.append(InputState(index, None, result=from_problem(index, None, item)))
            continue
        entry: dict[str, Any] = (
            {"deviceId": item.device_id}
            if item.device_id is not None
            else {"serialNumber": item.serial_number}
        )
        if item.expected_upn is not None:
            entry["expectedUserPrincipalName"] = item.expected_upn
        states.append(InputState(index, printable_echo(entry)))
    return states


def _retry_after(job: Job, open_inputs: int, settings: JobSettings) -> int:
    """5 to 60 s, from how long the open inputs take at the jobs' write budget."""
    rate = settings.writes_per_window / settings.window_seconds
    expected = open_inputs / rate if rate > 0 else MAX_RETRY_AFTER_SECONDS
    return int(min(MAX_RETRY_AFTER_SECONDS, max(MIN_RETRY_AFTER_SECONDS, math.ceil(expected / 4))))


async def handle_start(
    headers: Mapping[str, str],
    body: bytes,
    params: Mapping[str, str] = NO_PARAMS,
    *,
    jobs: Callable[[], Jobs] = default_jobs,
    authorize: Authorize = default_authorize,
    clock: Callable[[], float] = time.time,
) -> HttpResult:
    async def work(
        lowered: dict[str, str], record: audit.AuditRecord, started: float
    ) -> HttpResult:
        check_query(params)
        key = _idempotency_key(lowered)
        bulk = parse_bulk(body, lowered.get("content-type"), MAX_JOB_DEVICES, MAX_JOB_BODY_BYTES)
        record.ticketId, record.dryRun = bulk.ticket_id, bulk.dry_run
        services = await asyncio.to_thread(jobs)  # its first call creates clients: not on the loop
        capability = secrets.token_urlsafe(CAPABILITY_BYTES)
        job_id = uuid.uuid4().hex
        if key is not None:
            scope, body_hash = _scope(record.caller), _body_hash(bulk)
            stored = await _io(services.store.remember_key, scope, key, job_id, body_hash)
            if stored is not None:
                again = await _again(services, record, stored, body_hash, capability, clock())
                if again is not None:
                    return again
                # The key's job was never stored (its start died): the key starts this one.
                await _io(services.store.forget_key, scope, key)
                if await _io(services.store.remember_key, scope, key, job_id, body_hash):
                    raise _starting()
        now = clock()
        inputs = _inputs(bulk)
        job = Job(
            job_id=job_id,
            status="running",
            total=len(inputs),
            chunks=-(-len(inputs) // 50),
            created=now,
            deadline=now + services.settings.deadline_seconds,
            ended=None,
            ticket_id=bulk.ticket_id,
            dry_run=bulk.dry_run,
            caller=json.dumps(record.caller),
            correlation_id=record.correlationId,
            capability_hash=_hash(capability),
        )
        try:
            await _io(services.store.create, job, inputs)
        except BaseException:
            if key is not None:  # nothing was stored: the key may be used again at once
                await _io(services.store.forget_key, _scope(record.caller), key)
            raise
        try:
            await _io(services.send, Message("fanout", job_id).encode())
        except BaseException:
            # Stored but never started: take it back, so no job waits for a message that
            # never came, and the key may be used again at once.
            with contextlib.suppress(Exception):
                await _io(services.store.delete_job, job_id)
            if key is not None:
                await _io(services.store.forget_key, _scope(record.caller), key)
            raise
        for state in inputs:  # refused at submission: final from the start
            if state.result is not None:
                audit.emit(input_record(job, state.result))
        record.jobId = job_id
        record.outcome, record.detail = "started", f"job {job_id}: {job.total} devices"
        return _accepted(services.settings, job, capability, record.correlationId)

    return await serve(headers, "bulkUnassignJobStarted", work, authorize)


def _starting() -> Problem:
    return Problem(
        Failure.JOB_STARTING,
        "A request with this Idempotency-Key is storing its job right now; send it again in "
        "a moment to get that job.",
        retry_after=STARTING_RETRY_SECONDS,
    )


async def _again(
    services: Jobs,
    record: audit.AuditRecord,
    stored: tuple[str, str, float],
    body_hash: str,
    capability: str,
    now: float,
) -> HttpResult | None:
    """The same Idempotency-Key again: its job under a fresh status URL, or a 409; None when
    the key's job was never stored (a start that died), so this request may start it."""
    job_id, stored_hash, created = stored
    if not hmac.compare_digest(stored_hash, body_hash):
        raise Problem(
            Failure.IDEMPOTENCY_CONFLICT,
            f"This Idempotency-Key started job {job_id} with another body in the last 24 hours; "
            "nothing was started. Use a new key for a new request.",
        )
    for _ in range(_CANCEL_ROUNDS):
        job = await _io(services.store.job, job_id)
        if job is None:
            if now - created < START_GRACE_SECONDS:
                raise _starting()  # the first request is still storing it
            return None
        # The newest MAX_CAPABILITIES status URLs work; a repeat beyond them retires the oldest.
        hashes = [*job.capability_hash.split(","), _hash(capability)][-MAX_CAPABILITIES:]
        try:
            job = await _io(
                services.store.update_job, replace(job, capability_hash=",".join(hashes))
            )
        except Stale:
            continue
        record.jobId = job_id
        record.outcome, record.detail = "repeated", f"job {job_id}: same Idempotency-Key"
        return _accepted(services.settings, job, capability, record.correlationId)
    raise Problem(Failure.INTERNAL, f"Job {job_id} kept changing; send the request again.")


def _accepted(settings: JobSettings, job: Job, capability: str, cid: str) -> HttpResult:
    url = _status_url(settings, job.job_id, capability)
    doc = {
        "jobId": job.job_id,
        "status": job.status,
        "total": job.total,
        "statusUrl": url,
        "correlationId": cid,
    }
    result = _result(202, JSON, doc, cid)
    result.headers["Location"] = url
    result.headers["Retry-After"] = str(MIN_RETRY_AFTER_SECONDS)
    return result


def _not_found(job_id: str) -> Problem:
    return Problem(
        Failure.JOB_NOT_FOUND,
        "No bulk job is at this address: the job id or the status URL is wrong, or the job "
        "ended more than JOB_RETENTION_DAYS ago.",
    )


async def _find(store: JobStore, job_id: str) -> Job | None:
    """The job, or None for an id that could not be one of ours (32 lower-case hex)."""
    return await _io(store.job, job_id) if _JOB_ID.fullmatch(job_id) else None


async def _anyone(headers: Mapping[str, str], remaining: Callable[[], float]) -> Caller:
    return Caller(kind="statusUrl")


async def handle_status(
    headers: Mapping[str, str],
    job_id: str,
    capability: str,
    *,
    jobs: Callable[[], Jobs] = default_jobs,
    clock: Callable[[], float] = time.time,
) -> HttpResult:
    async def work(
        lowered: dict[str, str], record: audit.AuditRecord, started: float
    ) -> HttpResult:
        services = await asyncio.to_thread(jobs)  # its first call creates clients: not on the loop
        job = await _find(services.store, job_id)
        offered = _hash(capability) if capability.isascii() else ""
        if job is None or not any(
            hmac.compare_digest(offered, stored) for stored in job.capability_hash.split(",")
        ):
            raise _not_found(job_id)
        record.ticketId, record.dryRun, record.jobId = job.ticket_id, job.dry_run, job.job_id
        inputs = await _io(services.store.inputs, job.job_id)
        if job.status == "running" and all(state.final for state in inputs):
            job = await _end(services.store, job, "done", clock(), inputs)
        elif job.status == "running" and clock() >= job.deadline:
            job = await _end(services.store, job, "expired", clock(), inputs)
        if job.status == "running":
            open_inputs = sum(1 for state in inputs if not state.final)
            wait = _retry_after(job, open_inputs, services.settings)
            result = _result(202, JSON, progress(job, inputs), record.correlationId)
            result.headers["Location"] = _status_url(services.settings, job_id, capability)
            result.headers["Retry-After"] = str(wait)
            record.outcome = "running"
            return result
        record.outcome = job.status
        return _result(200, JSON, report(job, inputs), record.correlationId)

    return await serve(headers, "bulkUnassignJobStatus", work, _anyone)


async def handle_cancel(
    headers: Mapping[str, str],
    job_id: str,
    params: Mapping[str, str] = NO_PARAMS,
    *,
    jobs: Callable[[], Jobs] = default_jobs,
    authorize: Authorize = default_authorize,
    clock: Callable[[], float] = time.time,
) -> HttpResult:
    async def work(
        lowered: dict[str, str], record: audit.AuditRecord, started: float
    ) -> HttpResult:
        check_query(params)
        services = await asyncio.to_thread(jobs)  # its first call creates clients: not on the loop
        job = await _find(services.store, job_id)
        if job is None:
            raise _not_found(job_id)
        inputs = await _io(services.store.inputs, job.job_id)
        if job.status == "running":
            job = await _end(services.store, job, "cancelled", clock(), inputs)
        record.ticketId, record.outcome, record.jobId = job.ticket_id, job.status, job.job_id
        return _result(200, JSON, report(job, inputs), record.correlationId)

    return await serve(headers, "bulkUnassignJobCancelled", work, authorize)


async def _end(store: JobStore, job: Job, status: str, now: float, inputs: list[InputState]) -> Job:
    """Mark a running job ended, with its one end record; if it changed meanwhile (another
    reader or the sweeper ended it), it is what it is now."""
    for _ in range(_CANCEL_ROUNDS):
        try:
            ended = await _io(store.update_job, replace(job, status=status, ended=now))
            emit_open_inputs(ended, inputs)
            audit.emit(ended_record(ended, inputs))
            return ended
        except Stale:
            fresh = await _io(store.job, job.job_id)
            if fresh is None:
                raise _not_found(job.job_id) from None
            if fresh.status != "running":
                return fresh
            job = fresh
    raise Problem(Failure.INTERNAL, f"Job {job.job_id} kept changing; try again.")
