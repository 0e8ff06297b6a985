"""The job worker: what the queue-triggered function does with each message of the jobs' queue.

    {"kind": "fanout", "jobId": …}                       sent once by POST: one chunk message
                                                         per chunk of the job
    {"kind": "chunk", "jobId": …, "chunk": n, "attempt": k}
                                                         work the chunk's open inputs, in order

Delivery is at least once and a worker can die anywhere, so every step may happen twice:

- a chunk is claimed (its entity's ETag) before any input of it is worked, for CLAIM_SECONDS,
  renewed as it goes; only an expired claim may be taken over, and a worker whose claim was taken
  stops at its next save;
- each input goes through the single-device path (`shared.service.unassign_remembering`): the
  user read before its first write is stored before that write, and every later attempt is
  judged against it, so a retry hours later never removes a new owner;
- a final result is written once; a final input is never worked again, so duplicate messages
  are harmless;
- every write first takes a slot of the jobs' shared budget (`shared.jobs.budget`); a 429 sets
  the budget's hold for every worker.

What ends an input: its result (200, or 400 / 404 / 409 from the tenant). What puts it off: no
room in the budget, a hold, Graph throttling, 5xx or no answer. Then the chunk goes back to the
queue as a new message, delayed (the attempt count travels in the message, so a busy day never
walks it toward the poison queue), sent before the claim is released. A message that crashes the
worker itself `maxDequeueCount` times lands in the poison queue, where the sweeper finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from azure.core.exceptions import AzureError

from shared import audit
from shared.graph import Call, GraphClient
from shared.jobs.budget import WriteBudget
from shared.jobs.results import from_outcome, from_problem, job_caller
from shared.jobs.store import Chunk, ClaimLost, InputState, Job, JobStore
from shared.problems import Failure, Problem
from shared.request import UnassignRequest, expected_upn, target
from shared.retry import MAX_WAIT_SECONDS, Deadline
from shared.service import unassign_remembering

log = logging.getLogger("autopilot.jobs")
T = TypeVar("T")

CLAIM_SECONDS = 300.0  # well under the 10 minutes a crashed worker's message stays hidden
# What the tenant decides: the input is done. Anything else is put off and tried again.
FINAL = frozenset(
    {
        Failure.INVALID_REQUEST,
        Failure.DEVICE_NOT_FOUND,
        Failure.USER_MISMATCH,
        Failure.AMBIGUOUS_SERIAL,
    }
)
FIRST_BACKOFF_SECONDS = 5.0
# A wait this short is spent in place; a longer one sends the chunk back to the queue.
SHORT_WAIT_SECONDS = 2.0
# Budget slots one write may take that aged past the send allowance before it is put off.
AGED_GRANTS_PER_WRITE = 3
# How long one message works its chunk before it hands the rest to a new message: well inside
# host.json's functionTimeout (230 s), with one input's deadline to spare.
RUN_SECONDS = 120.0
# A storage error before the claim sends the message back this much later, this many times,
# before it is left to fail (and, at maxDequeueCount, to the poison queue).
STORAGE_RETRY_SECONDS = 30.0
MAX_STORAGE_RETRIES = 20


class Postpone(Exception):
    """No write now: the shared budget is full or on hold for `seconds`."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"put off for {seconds:.3f} s")
        self.seconds = seconds


@dataclass(frozen=True)
class Message:
    kind: str
    job_id: str
    chunk: int = 0
    attempt: int = 0

    def encode(self) -> str:
        if self.kind == "fanout":
            return json.dumps({"kind": "fanout", "jobId": self.job_id})
        return json.dumps(
            {"kind": "chunk", "jobId": self.job_id, "chunk": self.chunk, "attempt": self.attempt}
        )

    @classmethod
    def decode(cls, body: bytes) -> Message:
        """A message of ours, or ValueError: the queue holds nothing else."""
        data = json.loads(body)
        if not isinstance(data, dict) or not isinstance(data.get("jobId"), str):
            raise ValueError("not a job message")
        if data.get("kind") == "fanout":
            return cls("fanout", data["jobId"])
        chunk, attempt = data.get("chunk"), data.get("attempt", 0)
        if (
            data.get("kind") != "chunk"
            or not isinstance(chunk, int)
            or not isinstance(attempt, int)
        ):
            raise ValueError("not a job message")
        return cls("chunk", data["jobId"], chunk, attempt)


def request_of(entry: dict[str, Any], dry: bool) -> UnassignRequest:
    """The entry as validated at submission, validated again: it comes back from storage."""
    device_id, serial = target(entry, None)
    upn = entry.get("expectedUserPrincipalName")
    return UnassignRequest(
        device_id=device_id,
        serial_number=serial,
        expected_upn=None if upn is None else expected_upn(upn),
        dry_run=dry,
    )


class Worker:
    """One process's job worker; everything it keeps between messages is in storage."""

    def __init__(
        self,
        store: JobStore,
        budget: WriteBudget,
        send: Callable[[str, float], None],
        graph: GraphClient,
        input_deadline_seconds: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
        claim_seconds: float = CLAIM_SECONDS,
    ) -> None:
        self.store = store
        self.budget = budget
        self._send = send  # (message text, visibility delay in seconds): the jobs' queue
        self.graph = graph
        self.input_deadline_seconds = input_deadline_seconds
        self.clock = clock
        self._sleep = sleep
        # A claim outlives any one input's work (two deadlines), so no other worker can take a
        # chunk over while one of its writes may still be on its way.
        self.claim_seconds = max(claim_seconds, 2 * input_deadline_seconds + 10)

    async def handle(self, message: Message) -> None:
        if message.kind == "fanout":
            await self._fan_out(message.job_id)
        else:
            await self._work(message)

    async def _io(self, call: Callable[..., T], *args: Any) -> T:
        """A storage call on a worker thread: the event loop never waits on storage."""
        return await asyncio.to_thread(call, *args)

    async def send(self, message: Message, delay: float = 0.0) -> None:
        await self._io(self._send, message.encode(), delay)

    async def _fan_out(self, job_id: str) -> None:
        job = await self._io(self.store.job, job_id)
        if job is None or job.status != "running":
            return
        for number in range(job.chunks):
            await self.send(Message("chunk", job_id, number))

    async def _work(self, message: Message) -> None:
        try:
            await self._claim_and_run(message)
        except AzureError:
            # Storage trouble (throttling, a moment offline): try again later, not toward poison.
            if message.attempt >= MAX_STORAGE_RETRIES:
                raise
            log.warning("job %s: storage error; the chunk goes back on the queue", message.job_id)
            await self.send(replace(message, attempt=message.attempt + 1), STORAGE_RETRY_SECONDS)

    async def _claim_and_run(self, message: Message) -> None:
        job = await self._io(self.store.job, message.job_id)
        if job is None or job.status != "running" or self.clock() >= job.deadline:
            return  # deleted, ended, or the sweeper's to end
        chunk = await self._io(self.store.chunk, message.job_id, message.chunk)
        if chunk is None or all(state.final for state in chunk.inputs):
            return
        owner = uuid.uuid4().hex
        claimed = await self._io(self.store.claim, chunk, owner, self.claim_seconds)
        if claimed is None:  # another worker's live claim: look again when it would expire
            wait = (chunk.claim_until or self.clock()) - self.clock()
            await self.send(replace(message, attempt=message.attempt + 1), max(1.0, wait))
            return
        run = ChunkRun(self, job, claimed, message)
        try:
            await run.run()
        except ClaimLost:
            log.warning("job %s chunk %s: claim taken over; stopping", job.job_id, chunk.number)
        except BaseException:
            # Free the chunk for the message's next delivery (and, after maxDequeueCount, the
            # sweeper), rather than leave it to wait out a claim nobody is using.
            with contextlib.suppress(Exception):
                await self._io(self.store.release, run.chunk)
            raise


class ChunkRun:
    """One claim of one chunk: its open inputs worked in order until done or put off."""

    def __init__(self, worker: Worker, job: Job, chunk: Chunk, message: Message) -> None:
        self.worker = worker
        self.job = job
        self.chunk = chunk
        self.message = message
        # Inputs whose write may have gone out in an earlier run (as stored when this run began)
        # or in this one. The stored flag is set before a write is asked for, so while this run
        # works an input it goes by these instead (see _take_slot).
        self._started_before = {state.index for state in chunk.inputs if state.write_started}
        self._sent_here: set[int] = set()

    async def save(self) -> None:
        self.chunk = await self.worker._io(self.worker.store.save, self.chunk)

    def may_have_written(self, state: InputState) -> bool:
        return state.index in self._started_before or state.index in self._sent_here

    def _note_sent(self, state: InputState, call: Call) -> None:
        if call.write_may_have_acted:
            self._sent_here.add(state.index)

    async def _put_off(self, state: InputState, call: Call) -> None:
        """Store the input as this run leaves it, saying whether a write of it may have gone out."""
        self._note_sent(state, call)
        state.write_started = self.may_have_written(state)
        await self.save()

    async def run(self) -> None:
        worker = self.worker
        stop_at = worker.clock() + RUN_SECONDS
        for state in self.chunk.inputs:
            if state.final:
                continue
            if worker.clock() >= stop_at:
                # Well inside the host's functionTimeout: the rest goes on in a new message.
                await worker.send(self.message)
                break
            job = await worker._io(worker.store.job, self.job.job_id)
            if job is None or job.status != "running" or worker.clock() >= job.deadline:
                break  # cancelled, ended or past its deadline: the report says what is left
            self.job = job
            await self._renew_claim()
            delay = await self._input(state)
            if delay is not None:
                # Sent before the claim is released: a crash in between leaves a message that
                # waits out the claim, never an open input without one.
                next_message = replace(self.message, attempt=self.message.attempt + 1)
                await worker.send(next_message, delay)
                break
        self.chunk = await worker._io(worker.store.release, self.chunk)

    async def _renew_claim(self) -> None:
        until = self.chunk.claim_until or 0.0
        now = self.worker.clock()
        if until - now < self.worker.claim_seconds / 2:
            self.chunk.claim_until = now + self.worker.claim_seconds
            await self.save()

    async def _input(self, state: InputState) -> float | None:
        """Work one input: None when it is final, else the seconds to wait before trying again."""
        worker = self.worker
        assert state.entry is not None  # an entry refused at submission is final from the start
        state.attempts += 1
        record = audit.AuditRecord(self.job.correlation_id, event="bulkUnassignJobInput")
        record.itemIndex, record.ticketId, record.dryRun = (
            state.index,
            self.job.ticket_id,
            self.job.dry_run,
        )
        record.jobId, record.caller = self.job.job_id, job_caller(self.job)
        started = time.monotonic()
        call = Call(
            Deadline.after(worker.input_deadline_seconds, worker.graph.clock),
            self.job.correlation_id,
            before_write=lambda: self._take_slot(state),
            on_throttle=self._hold,
        )
        record.graphClientRequestId = call.client_request_id
        try:
            while True:
                try:
                    outcome = await unassign_remembering(
                        worker.graph,
                        request_of(state.entry, self.job.dry_run),
                        call,
                        _Memory(self, state),
                    )
                except Postpone as postpone:
                    if postpone.seconds > SHORT_WAIT_SECONDS:
                        await self._put_off(state, call)
                        return postpone.seconds
                    self._note_sent(state, call)
                    await worker._sleep(postpone.seconds)
                    await self._renew_claim()
                    call = replace(
                        call,
                        deadline=Deadline.after(worker.input_deadline_seconds, worker.graph.clock),
                    )
                    continue
                except Problem as problem:
                    if problem.failure not in FINAL:
                        await self._put_off(state, call)
                        record.outcome, record.detail = "postponed", problem.detail
                        return self._backoff(state, problem)
                    state.result = from_problem(
                        state.index,
                        state.entry,
                        problem,
                        call.device.get("id"),
                        call.device.get("serialNumber"),
                    )
                else:
                    state.result = from_outcome(state.index, state.entry, outcome)
                    record.previousUserPrincipalName = state.result["previousUserPrincipalName"]
                break
        except BaseException:
            # A storage error, a lost claim or a cancellation: the chunk may be released as it
            # is, so its record says what this run knows, a write that started as one that may
            # have acted.
            state.write_started = self.may_have_written(state) or call.writes_sent > 0
            raise
        await self.save()
        result = state.result
        record.deviceId, record.serialNumber = result["deviceId"], result["serialNumber"]
        record.outcome, record.httpStatus, record.detail = (
            result["status"],
            result["httpStatus"],
            result["detail"],
        )
        record.graphRequestIds, record.attempts = call.request_ids, state.attempts
        record.durationMs = round((time.monotonic() - started) * 1000)
        audit.emit(record)
        return None

    def _backoff(self, state: InputState, problem: Problem) -> float:
        """5 s, doubling per attempt up to the longest wait we take; Graph's Retry-After if longer."""
        grown = FIRST_BACKOFF_SECONDS * 2 ** min(state.attempts - 1, 16)
        wanted = max(grown, problem.retry_after or 0.0)
        return min(MAX_WAIT_SECONDS, wanted) if math.isfinite(wanted) else MAX_WAIT_SECONDS

    async def _take_slot(self, state: InputState) -> None:
        """Before an input's first write is asked for, the record that one may go out (a later
        run that finds the device empty then knows it may be ours); then a slot of the shared
        budget.

        The record is saved before the slot is taken, so that nothing slow comes between a
        slot and its write. The write goes out only on a slot still within the budget's send
        allowance: one that aged anyway stays spent, and another is taken. A run that puts the
        input off stores whether a write really went out (`_put_off`), and until then goes by
        what it knows itself (`may_have_written`).
        """
        if not state.write_started:
            state.write_started = True
            await self.save()
        budget = self.worker.budget
        for _ in range(AGED_GRANTS_PER_WRITE):
            grant = await self.worker._io(budget.take)
            if grant.wait > 0:
                raise Postpone(grant.wait)
            if budget.fresh(grant):
                return
            log.info("job %s: a write slot aged before its write; taking another", self.job.job_id)
        # Storage answers slower than the send allowance: rather than spend the budget on slots
        # that age, the chunk waits a window and tries again.
        log.warning(
            "job %s: %d write slots in a row aged before their write; waiting %g s",
            self.job.job_id,
            AGED_GRANTS_PER_WRITE,
            budget.window_seconds,
        )
        raise Postpone(budget.window_seconds)

    async def _hold(self, seconds: float) -> None:
        await self.worker._io(self.worker.budget.hold, seconds)


class _Memory:
    """An input's first-read user, stored in its chunk before the first write is sent."""

    def __init__(self, run: ChunkRun, state: InputState) -> None:
        self._run = run
        self._state = state

    @property
    def first_user(self) -> str | None:
        return self._state.first_user

    @property
    def write_started(self) -> bool:
        return self._run.may_have_written(self._state)

    async def remember(self, user: str) -> None:
        # Saved with the record that a write may start (ChunkRun._take_slot): before any write
        # can be sent.
        self._state.first_user = user
