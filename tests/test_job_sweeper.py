"""The jobs' sweeper (shared.jobs.sweeper) against a real Azurite, on a clock the test moves.

Each test has a table and a poison queue of its own. A poison message is written as the queue
trigger writes it: the worker's message text, base64 of the JSON, copied unchanged. Every "nothing
happened" below sits beside the same case where something does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from azure.data.tables import TableClient, TableEntity, TableServiceClient
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from shared.jobs import api, sweeper
from shared.jobs.results import from_problem, report
from shared.jobs.settings import QUEUE, TABLE
from shared.jobs.store import CHUNK_SIZE, InputState, Job, JobStore
from shared.jobs.sweeper import (
    MAYBE_DONE,
    NOT_DONE,
    NOT_STARTED,
    ORPHAN_SECONDS,
    Sweeper,
    SweepReport,
    default_sweeper,
)
from shared.jobs.worker import Message
from shared.problems import Failure, Problem

NOW = 1_750_000_000.0
RETENTION_SECONDS = 3600.0
CALLER = {"kind": "entraId", "appId": "flow-app", "tenantId": "contoso"}


class Clock:
    """The sweeper's now: deadlines, retention and orphans are judged by it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Bench:
    """A table, its store, a poison queue and a clock for one test."""

    table: TableClient
    store: JobStore
    poison: QueueClient
    clock: Clock

    def sweeper(self) -> Sweeper:
        return Sweeper(self.store, self.table, self.poison, RETENTION_SECONDS, self.clock)

    def submit(self, total: int, finished: range = range(0), deadline: float = NOW + 3600) -> Job:
        """A running job of `total` inputs; those in `finished` already have a result."""
        job_id = uuid.uuid4().hex
        inputs = [InputState(i, entry(i)) for i in range(total)]
        for state in inputs[finished.start : finished.stop]:
            state.result = unassigned(state.index)
        job = Job(
            job_id=job_id, status="running", total=total, chunks=-(-total // CHUNK_SIZE),
            created=NOW, deadline=deadline, ended=None, ticket_id="RITM0042", dry_run=False,
            caller=json.dumps(CALLER), correlation_id=f"corr-{job_id[:8]}",
            capability_hash=hashlib.sha256(b"cap").hexdigest(),
        )  # fmt: skip
        self.store.create(job, inputs)
        return job

    def poisoned(self, text: str) -> None:
        self.poison.send_message(text)

    def poisoned_message(self, message: Message) -> None:
        self.poisoned(base64.b64encode(message.encode().encode()).decode())

    def poison_count(self) -> int:
        count = self.poison.get_queue_properties().approximate_message_count
        assert count is not None
        return count

    def job(self, job: Job) -> Job:
        fresh = self.store.job(job.job_id)
        assert fresh is not None
        return fresh

    def inputs(self, job: Job) -> list[InputState]:
        return [state for chunk in self.store.chunks(job.job_id) for state in chunk.inputs]


def entry(index: int) -> dict[str, Any]:
    return {"deviceId": f"{index:08x}-0000-4000-8000-000000000000"}


def unassigned(index: int) -> dict[str, Any]:
    return {
        "index": index, "input": entry(index), "deviceId": entry(index)["deviceId"],
        "serialNumber": f"SN{index:06d}", "status": "unassigned", "httpStatus": 200,
        "previousUserPrincipalName": "alex@contoso.example", "detail": "Unassigned.",
    }  # fmt: skip


def internal(index: int, detail: str) -> dict[str, Any]:
    return from_problem(index, entry(index), Problem(Failure.INTERNAL, detail))


def partition(table: TableClient, key: str) -> list[TableEntity]:
    return list(table.query_entities("PartitionKey eq @pk", parameters={"pk": key}))


def ended_records(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "autopilot.audit"]
    return [line for line in lines if line["event"] == "bulkUnassignJobEnded"]


@pytest.fixture
def bench(azurite: Azurite) -> Iterator[Bench]:
    name = f"sweep{uuid.uuid4().hex[:12]}"
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    table = service.create_table(name)
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{name}-poison")
    poison.create_queue()
    clock = Clock()
    yield Bench(table, JobStore(table, clock), poison, clock)
    poison.delete_queue()
    service.delete_table(name)


@pytest.fixture(autouse=True)
def _audit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="autopilot.audit")


def test_a_job_whose_inputs_are_all_final_ends_done_with_one_audit_record(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    finished = bench.submit(3, finished=range(3))
    running = bench.submit(3, finished=range(2))  # one input still open
    assert bench.sweeper().sweep() == SweepReport(ended_done=1)
    job = bench.job(finished)
    assert (job.status, job.ended) == ("done", NOW)
    assert bench.job(running).status == "running"
    [record] = ended_records(caplog)
    assert record["correlationId"] == finished.correlation_id
    assert (record["outcome"], record["ticketId"], record["dryRun"]) == ("done", "RITM0042", False)
    assert record["caller"] == CALLER
    assert record["detail"] == f"job {job.job_id} done: 3 of 3 devices done, 0 failed, 0 expired"
    assert bench.sweeper().sweep() == SweepReport()
    assert len(ended_records(caplog)) == 1


def test_a_job_expires_at_its_deadline_and_not_before(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    submitted = bench.submit(3, finished=range(1), deadline=NOW + 60)
    bench.clock.now = NOW + 59
    assert bench.sweeper().sweep() == SweepReport()
    assert bench.job(submitted).status == "running"
    bench.clock.now = NOW + 60
    assert bench.sweeper().sweep() == SweepReport(ended_expired=1)
    job = bench.job(submitted)
    assert (job.status, job.ended) == ("expired", NOW + 60)
    document = report(job, bench.inputs(job))
    assert [r["status"] for r in document["results"]] == ["unassigned", "expired", "expired"]
    assert document["resend"] == [entry(1), entry(2)]
    [record] = ended_records(caplog)
    assert record["outcome"] == "expired"
    assert record["detail"] == f"job {job.job_id} expired: 1 of 3 devices done, 0 failed, 2 expired"
    assert bench.sweeper().sweep() == SweepReport()


def test_a_poisoned_chunk_message_ends_that_chunks_open_inputs_as_internal_errors(
    bench: Bench,
) -> None:
    job = bench.submit(3 * CHUNK_SIZE, finished=range(CHUNK_SIZE, CHUNK_SIZE + 1))
    chunk = bench.store.chunk(job.job_id, 1)
    assert chunk is not None
    chunk.inputs[1].first_user, chunk.inputs[1].write_started = "alex@contoso.example", True
    chunk = bench.store.save(chunk)
    # The crashed worker's claim, expired (a crash releases it; a killed process's runs out).
    assert bench.store.claim(chunk, "a-worker-that-crashed", -1.0) is not None
    bench.poisoned_message(Message("chunk", job.job_id, 1, attempt=2))
    assert bench.poison_count() == 1

    assert bench.sweeper().sweep() == SweepReport(poisoned_inputs=CHUNK_SIZE - 1)
    results = [state.result for state in bench.inputs(job)]
    assert results[CHUNK_SIZE] == unassigned(CHUNK_SIZE)  # final before: left as it was
    assert results[CHUNK_SIZE + 1] == internal(CHUNK_SIZE + 1, MAYBE_DONE)
    assert results[CHUNK_SIZE + 2 : 2 * CHUNK_SIZE] == [
        internal(i, NOT_DONE) for i in range(CHUNK_SIZE + 2, 2 * CHUNK_SIZE)
    ]
    assert results[:CHUNK_SIZE] == results[2 * CHUNK_SIZE :] == [None] * CHUNK_SIZE
    poisoned = bench.store.chunk(job.job_id, 1)
    assert poisoned is not None and poisoned.claim_owner is None
    assert bench.poison_count() == 0
    assert bench.job(job).status == "running"  # the other chunks are still open
    assert bench.sweeper().sweep() == SweepReport()


def test_a_poisoned_fanout_ends_the_open_inputs_of_chunks_nobody_started(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk already worked on had its message, so only the untouched chunk is lost."""
    job = bench.submit(2 * CHUNK_SIZE, finished=range(3))
    bench.poisoned_message(Message("fanout", job.job_id))
    total = 2 * CHUNK_SIZE
    assert bench.sweeper().sweep() == SweepReport(poisoned_inputs=CHUNK_SIZE)
    results = [state.result for state in bench.inputs(job)]
    assert results == [unassigned(i) for i in range(3)] + [None] * (CHUNK_SIZE - 3) + [
        internal(i, NOT_STARTED) for i in range(CHUNK_SIZE, total)
    ]
    assert bench.poison_count() == 0
    assert ended_records(caplog) == []  # the started chunk is still open
    assert bench.sweeper().sweep() == SweepReport()


def test_a_poisoned_chunk_whose_claim_is_live_is_left_to_its_worker(bench: Bench) -> None:
    """A live claim means a duplicate message's worker is alive: nothing is lost yet."""
    job = bench.submit(CHUNK_SIZE)
    chunk = bench.store.chunk(job.job_id, 0)
    assert chunk is not None
    assert bench.store.claim(chunk, "a-live-worker", 600.0) is not None
    bench.poisoned_message(Message("chunk", job.job_id, 0))
    assert bench.sweeper().sweep() == SweepReport()
    assert [state.result for state in bench.inputs(job)] == [None] * CHUNK_SIZE
    assert bench.poison_count() == 1  # kept for a later sweep
    # The positive control: once that claim has run out, a later sweep ends them.
    bench.clock.now += 601.0
    assert bench.sweeper().sweep().poisoned_inputs == CHUNK_SIZE


def test_a_poison_message_of_an_ended_or_deleted_job_is_deleted_and_changes_nothing(
    bench: Bench,
) -> None:
    expired = bench.submit(3, deadline=NOW + 60)
    bench.clock.now = NOW + 60
    assert bench.sweeper().sweep() == SweepReport(ended_expired=1)
    bench.poisoned_message(Message("chunk", expired.job_id, 0))
    bench.poisoned_message(Message("fanout", uuid.uuid4().hex))
    assert bench.sweeper().sweep() == SweepReport()
    assert [state.result for state in bench.inputs(expired)] == [None] * 3  # read as expired
    assert bench.poison_count() == 0


def test_an_undecodable_poison_message_is_logged_and_deleted(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    bench.poisoned("not base64!")
    bench.poisoned(base64.b64encode(b'{"kind": "other", "jobId": "x"}').decode())
    assert bench.poison_count() == 2
    with caplog.at_level(logging.ERROR, logger="autopilot.jobs"):
        assert bench.sweeper().sweep() == SweepReport()
    complaints = [r for r in caplog.records if r.name == "autopilot.jobs"]
    assert len(complaints) == 2
    assert all("is not a job message" in r.getMessage() for r in complaints)
    assert bench.poison_count() == 0


def test_without_a_poison_queue_there_is_nothing_to_poison(bench: Bench, azurite: Azurite) -> None:
    job = bench.submit(3)
    bench.poisoned_message(Message("chunk", job.job_id, 0))
    missing = QueueClient.from_connection_string(azurite.connection_string, "never-created")
    for poison in (None, missing):
        swept = Sweeper(bench.store, bench.table, poison, RETENTION_SECONDS, bench.clock).sweep()
        assert swept == SweepReport()
    assert bench.poison_count() == 1
    assert bench.sweeper().sweep() == SweepReport(ended_done=1, poisoned_inputs=3)


def test_retention_deletes_an_ended_job_after_retention_seconds_and_not_before(
    bench: Bench,
) -> None:
    job = bench.submit(3, finished=range(3))
    running = bench.submit(3, deadline=NOW + 2 * RETENTION_SECONDS)
    assert bench.sweeper().sweep() == SweepReport(ended_done=1)
    bench.clock.now = NOW + RETENTION_SECONDS - 1
    assert bench.sweeper().sweep() == SweepReport()
    assert len(partition(bench.table, job.job_id)) == 2  # the job and its chunk
    bench.clock.now = NOW + RETENTION_SECONDS
    assert bench.sweeper().sweep() == SweepReport(deleted=1)
    assert partition(bench.table, job.job_id) == []
    assert [e["RowKey"] for e in partition(bench.table, "index")] == [running.job_id]
    assert bench.job(running).status == "running"  # as old, but still running: kept
    assert bench.sweeper().sweep() == SweepReport()


def test_an_index_entry_whose_job_never_appeared_is_deleted_after_a_day(bench: Bench) -> None:
    job = bench.submit(3 * CHUNK_SIZE, deadline=NOW + 2 * ORPHAN_SECONDS)
    bench.table.delete_entity(job.job_id, "job")  # as if the create died before its last write
    bench.clock.now = NOW + ORPHAN_SECONDS - 1
    assert bench.sweeper().sweep() == SweepReport()
    assert len(partition(bench.table, job.job_id)) == 3
    bench.clock.now = NOW + ORPHAN_SECONDS
    assert bench.sweeper().sweep() == SweepReport(deleted=1)
    assert partition(bench.table, job.job_id) == partition(bench.table, "index") == []
    assert bench.sweeper().sweep() == SweepReport()


def test_two_sweepers_at_once_end_each_job_and_poison_each_input_once(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [bench.submit(3, deadline=NOW + 60) for _ in range(4)]
    poisoned = bench.submit(CHUNK_SIZE)
    for _ in range(2):  # the same chunk poisoned twice: two deliveries of one message
        bench.poisoned_message(Message("chunk", poisoned.job_id, 0))
    bench.clock.now = NOW + 60
    with ThreadPoolExecutor(2) as pool:
        swept = list(pool.map(lambda s: s.sweep(), [bench.sweeper(), bench.sweeper()]))
    assert sum(s.ended_expired for s in swept) == 4
    assert sum(s.ended_done for s in swept) == 1
    assert sum(s.poisoned_inputs for s in swept) == CHUNK_SIZE
    assert sorted(r["correlationId"] for r in ended_records(caplog)) == sorted(
        j.correlation_id for j in [*jobs, poisoned]
    )
    assert bench.poison_count() == 0
    assert bench.sweeper().sweep() == SweepReport()


def test_the_functions_sweeper_reads_the_jobs_poison_queue_as_the_host_writes_it(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("JOB_PUBLIC_BASE_URL", "https://jobs.contoso.example")
    monkeypatch.setattr(api, "_jobs", None)
    monkeypatch.setattr(sweeper, "_sweeper", None)
    TableServiceClient.from_connection_string(azurite.connection_string).create_table_if_not_exists(
        TABLE
    )
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{QUEUE}-poison")
    poison.create_queue()
    try:
        gone = Message("chunk", uuid.uuid4().hex, 0)  # a job already deleted
        poison.send_message(base64.b64encode(gone.encode().encode()).decode())
        assert default_sweeper() is default_sweeper()
        default_sweeper().sweep()
        assert poison.peek_messages() == []
    finally:
        poison.delete_queue()


def test_a_job_whose_only_open_chunk_was_poisoned_ends(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    """The poisoned inputs become `internal` results and the same sweep ends the job."""
    job = bench.submit(CHUNK_SIZE, finished=range(10))
    bench.poisoned_message(Message("chunk", job.job_id, 0, attempt=5))
    assert bench.sweeper().sweep() == SweepReport(ended_done=1, poisoned_inputs=CHUNK_SIZE - 10)
    assert bench.job(job).status == "done"
    results = [state.result for state in bench.inputs(job)]
    assert [r["status"] for r in results if r] == ["unassigned"] * 10 + ["internal"] * 40
    [record] = ended_records(caplog)
    assert record["outcome"] == "done"
