"""The jobs' sweeper: what the timer-triggered function does every minute, in three passes.

1. Poison messages. A message that crashed the worker `maxDequeueCount` times is moved by the
   queue trigger to `<queue>-poison`, its text unchanged (base64 of the JSON). Nothing works its
   inputs again, and a job with an open input never ends as done, so each open input of the
   message's chunk (of a fanout: of every chunk, none was ever fanned out) is made final with an
   `internal` result, and only then is the message deleted. A poisoned chunk's worker is dead by
   definition, so its claim is no reason to wait: the chunk is saved over it (If-Match on the ETag
   just read) and the claim cleared. An input whose write may already have been sent says so.
2. Ending. A running job whose inputs are all final becomes `done`; one past its deadline becomes
   `expired` (its report shows the open inputs as expired, to send again). One audit record each.
3. Retention. A job that ended `retention_seconds` ago is deleted, and so is an index entry whose
   job entity never appeared (a create that died half-way) once ORPHAN_SECONDS have passed.

The jobs are listed from the index partition, read through the table itself: the store lists only
running jobs, and an ended job must be found to be deleted. The index is a hint (`update_job`
writes the job first, then its index status), so each decision is taken on the job entity.

Two sweepers at once (two instances) corrupt nothing. Every write carries If-Match: a job ended
by one is Stale to the other, which reads it again, finds it ended, and emits no second record.
A poison message is hidden from others while one sweeper works it, and deleting what another
sweeper deleted is no error. A sweep that dies anywhere leaves what the next one finishes.

A failure on one job or message is logged and the sweep goes on: one corrupt entity must not stop
every other job from ending or being deleted. Methods are synchronous, as the store's are; the
function runs `sweep` with `asyncio.to_thread`.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from azure.core.exceptions import ResourceNotFoundError

from shared import audit
from shared.jobs import results
from shared.jobs.settings import QUEUE
from shared.jobs.store import INDEX, Chunk, ClaimLost, InputState, Job, JobStore, Stale
from shared.jobs.worker import Message
from shared.problems import Failure, Problem

if TYPE_CHECKING:
    from azure.data.tables import TableClient
    from azure.storage.queue import QueueClient, QueueMessage

    from shared.jobs.settings import JobSettings

log = logging.getLogger("autopilot.jobs")
T = TypeVar("T")

DAY_SECONDS = 24 * 60 * 60
ORPHAN_SECONDS = DAY_SECONDS  # a create takes seconds: after a day, it surely died
# A received poison message stays hidden this long, so a second sweeper leaves it alone.
POISON_VISIBILITY_SECONDS = 300
_SAVE_ROUNDS = 5  # a chunk another writer changed is read again and saved again
_JOB_ROUNDS = 2  # a job changed meanwhile is judged once more; after that, the next sweep
# The results' details: exact about what failed, since a device may be blameless. A chunk's
# message covers up to CHUNK_SIZE devices, and the crash may have been on any of them.
NOT_DONE = (
    "Not done: the batch of devices holding this one failed repeatedly with an unexpected error "
    "in this service; nothing more will be tried. Quote the job id when reporting it."
)
MAYBE_DONE = (
    "Perhaps done: a change to this device may have reached Microsoft Graph before its batch of "
    "devices failed repeatedly with an unexpected error in this service; nothing more will be "
    "tried. Check the device in Intune, and quote the job id when reporting it."
)
NOT_STARTED = (
    "Not done: starting the job's work failed repeatedly with an unexpected error in this "
    "service; nothing was tried. Quote the job id when reporting it."
)


@dataclass
class SweepReport:
    """What one sweep changed: all zeros when there was nothing to do."""

    ended_done: int = 0
    ended_expired: int = 0
    poisoned_inputs: int = 0  # open inputs made final by a poison message
    deleted: int = 0  # jobs (or orphaned index entries) deleted


class _Listed(NamedTuple):
    """One entry of the index partition: a hint of what the job entity says."""

    job_id: str
    status: str | None
    created: float | None


class Sweeper:
    """Poison messages, endings and retention of the jobs in one table (see the module docstring)."""

    def __init__(
        self,
        store: JobStore,
        table: TableClient,
        poison: QueueClient | None,
        retention_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._table = table  # the store's table: only to list the index partition
        self._poison = poison  # raw text, no decode policy: the text as the host copied it
        self._retention_seconds = retention_seconds
        self._clock = clock

    def sweep(self) -> SweepReport:
        report = SweepReport()
        if self._poison is not None:
            kept: list[QueueMessage] = []
            for message in _received(self._poison):
                work = partial(self._settle_poison, self._poison, message, kept)
                report.poisoned_inputs += _isolated(f"poison message {message.id}", work, 0)
            for message in kept:
                # Visible again (after this sweep's own receiving): the next sweep looks again.
                with contextlib.suppress(ResourceNotFoundError):
                    self._poison.update_message(message, visibility_timeout=0)
        listed = self._index()
        for entry in listed:
            if entry.status == "running":
                ended = _isolated(f"job {entry.job_id}", partial(self._end_if_due, entry), None)
                if ended == "done":
                    report.ended_done += 1
                elif ended == "expired":
                    report.ended_expired += 1
        for entry in listed:
            if _isolated(f"job {entry.job_id}", partial(self._delete_if_due, entry), False):
                report.deleted += 1
        return report

    def _settle_poison(
        self, poison: QueueClient, message: QueueMessage, kept: list[QueueMessage]
    ) -> int:
        """Make the message's open inputs final, then delete it: the number made final."""
        try:
            order = Message.decode(base64.b64decode(message.content, validate=True))
        except (ValueError, RecursionError) as error:  # base64, UTF-8 and JSON errors alike
            log.error("poison message %s is not a job message (%s); deleted", message.id, error)
            made_final = 0
        else:
            try:
                made_final = self._fail_open_inputs(order)
            except _NotYet:
                kept.append(message)
                return 0
        # Not found: hidden longer than POISON_VISIBILITY_SECONDS, another sweeper took it over.
        with contextlib.suppress(ResourceNotFoundError):
            poison.delete_message(message)
        return made_final

    def _fail_open_inputs(self, order: Message) -> int:
        job = self._store.job(order.job_id)
        if job is None or job.status != "running":
            return 0  # deleted, or ended: its report already says what was left open
        if order.kind == "fanout":
            # Chunks already worked on had their messages: only the untouched ones are lost.
            chunks = [
                chunk
                for chunk in self._store.chunks(job.job_id)
                if not any(state.attempts or state.final for state in chunk.inputs if state.entry)
            ]
            return sum(self._fail_chunk(job, chunk, NOT_STARTED) for chunk in chunks)
        return self._fail_chunk(job, self._store.chunk(job.job_id, order.chunk), NOT_DONE)

    def _fail_chunk(self, job: Job, chunk: Chunk | None, detail: str) -> int:
        for _ in range(_SAVE_ROUNDS):
            if chunk is None:
                return 0
            opened = [state for state in chunk.inputs if not state.final]
            if not opened:
                return 0
            if chunk.claim_until is not None and self._clock() < chunk.claim_until:
                # Another message of this chunk is being worked right now (a duplicate): that
                # worker is alive, so its inputs are not lost yet. Look again next sweep.
                raise _NotYet
            for state in opened:
                state.result = _internal_result(state, detail)
            try:
                self._store.save(replace(chunk, claim_owner=None, claim_until=None))
            except ClaimLost:
                chunk = self._store.chunk(chunk.job_id, chunk.number)
                continue
            for state in opened:
                if state.result is not None:
                    audit.emit(results.input_record(job, state.result))
            return len(opened)
        raise ClaimLost("a poisoned chunk kept changing; the next sweep tries again")

    def _index(self) -> list[_Listed]:
        found = self._table.query_entities(
            "PartitionKey eq @index",
            parameters={"index": INDEX},
            select=["RowKey", "status", "created"],
        )
        return [
            _Listed(e["RowKey"], _text(e.get("status")), _number(e.get("created"))) for e in found
        ]

    def _end_if_due(self, entry: _Listed) -> str | None:
        """The status this call ended the job with; None if it runs on or someone else ended it."""
        job = self._store.job(entry.job_id)
        for _ in range(_JOB_ROUNDS):
            if job is None or job.status != "running":
                return None
            inputs = self._store.inputs(job.job_id)
            now = self._clock()
            if all(state.final for state in inputs):
                status = "done"
            elif now >= job.deadline:
                status = "expired"
            else:
                return None
            try:
                ended = self._store.update_job(replace(job, status=status, ended=now))
            except Stale:
                job = self._store.job(entry.job_id)
                continue
            results.emit_open_inputs(ended, inputs)
            audit.emit(ended_record(ended, inputs))
            return status
        return None

    def _delete_if_due(self, entry: _Listed) -> bool:
        job = self._store.job(entry.job_id)
        now = self._clock()
        if job is None:
            due = entry.created is not None and now - entry.created >= ORPHAN_SECONDS
        else:
            due = job.ended is not None and now - job.ended >= self._retention_seconds
        if due:
            self._store.delete_job(entry.job_id)
        return due


class _NotYet(Exception):
    """A poisoned chunk is claimed by a live worker: decide on its message at a later sweep."""


_sweeper: Sweeper | None = None
_making_sweeper = threading.Lock()


def default_sweeper() -> Sweeper:
    """The process's sweeper, made on first use from the jobs' settings."""
    global _sweeper
    if _sweeper is None:
        from shared.jobs.api import default_jobs

        with _making_sweeper:
            if _sweeper is None:
                jobs = default_jobs()
                settings = jobs.settings
                _sweeper = Sweeper(
                    jobs.store,
                    settings.table(),
                    _poison_queue(settings),
                    settings.retention_days * DAY_SECONDS,
                )
    return _sweeper


def _poison_queue(settings: JobSettings) -> QueueClient:
    """The jobs' poison queue, read as raw text: the sweeper decodes the base64 itself."""
    from azure.storage.queue import QueueClient

    name = f"{QUEUE}-poison"
    if settings.connection_string is not None:
        return QueueClient.from_connection_string(settings.connection_string, name)
    from azure.identity import ManagedIdentityCredential

    assert settings.queue_service_uri is not None  # load_job_settings guarantees one of the two
    credential = ManagedIdentityCredential(client_id=settings.client_id)
    return QueueClient(settings.queue_service_uri, name, credential=credential)


def _received(poison: QueueClient) -> Iterator[QueueMessage]:
    """Every message of the poison queue, each hidden from other sweepers while it is worked."""
    seen: set[str] = set()
    try:
        for message in poison.receive_messages(
            messages_per_page=32, visibility_timeout=POISON_VISIBILITY_SECONDS
        ):
            if message.id in seen:
                return  # a message kept for later (made visible again): this sweep is done
            seen.add(message.id)
            yield message
    except ResourceNotFoundError:
        return  # the trigger creates the queue with its first poison message


def _isolated(what: str, work: Callable[[], T], otherwise: T) -> T:
    try:
        return work()
    except Exception:  # one bad job or message must not stop the others
        log.exception("sweep: %s failed; the next sweep tries again", what)
        return otherwise


def _internal_result(state: InputState, detail: str) -> dict[str, object]:
    """`detail` unless a write may have been sent: then the truth is that nobody knows."""
    said = MAYBE_DONE if state.write_started else detail
    return results.from_problem(state.index, state.entry, Problem(Failure.INTERNAL, said))


def ended_record(job: Job, inputs: list[InputState]) -> audit.AuditRecord:
    """One line per job that ended: who started it, and how its inputs came out."""
    summary = results.report(job, inputs)["summary"]
    record = audit.AuditRecord(job.correlation_id, event="bulkUnassignJobEnded")
    record.ticketId, record.dryRun, record.outcome = job.ticket_id, job.dry_run, job.status
    record.jobId = job.job_id
    record.caller = results.job_caller(job)
    failed = summary["failed"] - summary["expired"]
    record.detail = (
        f"job {job.job_id} {job.status}: {summary['succeeded']} of {job.total} devices done, "
        f"{failed} failed, {summary['expired']} expired"
    )
    if job.ended is not None:
        record.durationMs = round((job.ended - job.created) * 1000)
    return record


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
