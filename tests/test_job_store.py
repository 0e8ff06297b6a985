"""shared.jobs.store on a real Azurite table: layout, limits, claims, ETags and idempotency keys."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import pytest
from azure.data.tables import TableClient, TableEntity, TableServiceClient, UpdateMode

from devtools.azurite import Azurite
from shared.jobs.store import (
    CHUNK_SIZE,
    IDEMPOTENCY_SECONDS,
    MAX_ENTITY_BYTES,
    MAX_TRANSACTION_BYTES,
    PART_CHARS,
    Chunk,
    ClaimLost,
    InputState,
    Job,
    JobStore,
    Stale,
    TooLarge,
)

NOW = 1_750_000_000.0
CAPABILITY_HASH = hashlib.sha256(b"the status URL's capability").hexdigest()
DEVICE_ID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
# Past the validated limits on purpose: each astral character is a surrogate pair, written
# "\ud83d\ude00" in ASCII JSON (12 characters); quotes and backslashes are written doubled.
ASTRAL_SERIAL = "\U0001f600" * 144
LONG_UPN = ('"\\' * 127 + "@x")[:256]
ANY_CHARACTERS = [
    "",
    "/\\#?",
    "\x00\x01\x1f\x7f\x9f",
    "lone \ud800 surrogate",
    "\U0001f600" * 300,
    "k" * 5000,
    "'quoted' and \"double\"",
]


class Clock:
    """A clock the test moves: claims and idempotency entries expire by it."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(azurite: Azurite) -> Iterator[TableClient]:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    name = f"jobs{uuid.uuid4().hex[:16]}"
    client = service.create_table(name)
    yield client
    service.delete_table(name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(table: TableClient, clock: Clock) -> JobStore:
    return JobStore(table, clock)


def new_job(total: int, status: str = "running") -> Job:
    return Job(
        job_id=uuid.uuid4().hex,
        status=status,
        total=total,
        chunks=-(-total // CHUNK_SIZE),
        created=NOW,
        deadline=NOW + 3600,
        ended=None,
        ticket_id="INC0012345",
        dry_run=False,
        caller="flow@contoso.com",
        correlation_id=str(uuid.uuid4()),
        capability_hash=CAPABILITY_HASH,
    )


def new_inputs(total: int) -> list[InputState]:
    """Every seventh entry refused at submission (entry None); the rest alternate id / serial."""
    return [
        InputState(
            index=i,
            entry=None
            if i % 7 == 3
            else {"deviceId": f"{i:08x}-0000-4000-8000-000000000000"}
            if i % 2
            else {"serialNumber": f"SN{i:06d}", "expectedUserPrincipalName": f"u{i}@contoso.com"},
        )
        for i in range(total)
    ]


def created(store: JobStore, total: int, status: str = "running") -> Job:
    job = new_job(total, status)
    store.create(job, new_inputs(total))
    return job


def read(store: JobStore, job: Job, number: int = 0) -> Chunk:
    chunk = store.chunk(job.job_id, number)
    assert chunk is not None
    return chunk


def partition(table: TableClient, partition_key: str) -> list[TableEntity]:
    return list(table.query_entities("PartitionKey eq @pk", parameters={"pk": partition_key}))


def documented_size(entity: Mapping[str, Any]) -> int:
    """The service's published estimate of an entity's size, which must stay within 1 MiB."""

    def utf16(text: str) -> int:
        return len(text.encode("utf-16-le", "surrogatepass"))

    def value_size(value: Any) -> int:
        if isinstance(value, str):
            return 4 + utf16(value)
        return 1 if isinstance(value, bool) else 4 if isinstance(value, int) else 8

    keys = utf16(entity["PartitionKey"]) + utf16(entity["RowKey"])
    others = [(k, v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey")]
    return 4 + keys + sum(8 + utf16(k) + value_size(v) for k, v in others)


def record_transactions(
    table: TableClient, monkeypatch: pytest.MonkeyPatch
) -> list[list[Mapping[str, Any]]]:
    """The entities of each transaction the table is sent, as it sends them."""
    sent: list[list[Mapping[str, Any]]] = []
    submit = table.submit_transaction

    def spy(operations: Any, **kwargs: Any) -> Any:
        operations = list(operations)
        sent.append([operation[1] for operation in operations])
        return submit(operations, **kwargs)

    monkeypatch.setattr(table, "submit_transaction", spy)
    return sent


def worst_input(index: int) -> InputState:
    entry = {
        "deviceId": DEVICE_ID,
        "serialNumber": ASTRAL_SERIAL,
        "expectedUserPrincipalName": LONG_UPN,
    }
    result = {
        "index": index,
        "input": entry,
        "deviceId": DEVICE_ID,
        "serialNumber": ASTRAL_SERIAL,
        "status": "ambiguous-serial",
        "httpStatus": 409,
        "previousUserPrincipalName": LONG_UPN,
        "detail": "d" * 600 + ASTRAL_SERIAL,
    }
    return InputState(index, entry, result, LONG_UPN, write_started=True, attempts=9)


def test_a_10000_input_job_round_trips_in_200_chunks_in_order(
    store: JobStore, table: TableClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    job, inputs = new_job(10_000), new_inputs(10_000)
    sent = record_transactions(table, monkeypatch)
    started = time.perf_counter()
    store.create(job, inputs)
    print(f"create of 10,000 inputs: {time.perf_counter() - started:.2f} s")
    assert [len(entities) for entities in sent] == [100, 100, 1]  # the job entity last
    assert sent[-1][0]["RowKey"] == "job"

    stored = store.job(job.job_id)
    assert stored is not None and stored.etag
    assert stored == replace(job, etag=stored.etag)
    chunks = store.chunks(job.job_id)
    assert [c.number for c in chunks] == list(range(200))
    assert {len(c.inputs) for c in chunks} == {CHUNK_SIZE}
    assert [c.inputs[0].index for c in chunks[:3]] == [0, 50, 100]
    assert [i for c in chunks for i in c.inputs] == inputs
    assert chunks[0].inputs[3].entry is None and not chunks[0].inputs[3].final
    assert all(c.claim_owner is None and c.claim_until is None and c.etag for c in chunks)
    assert store.chunk(job.job_id, 199) == chunks[199]
    assert store.chunk(job.job_id, 200) is None
    assert len(partition(table, job.job_id)) == 201  # 200 chunks and the job
    assert store.running_jobs() == [job.job_id]


def test_a_short_last_chunk_keeps_its_inputs(store: JobStore) -> None:
    job = created(store, 2 * CHUNK_SIZE + 1)
    chunks = store.chunks(job.job_id)
    assert [len(c.inputs) for c in chunks] == [CHUNK_SIZE, CHUNK_SIZE, 1]
    assert chunks[2].inputs[0].index == 2 * CHUNK_SIZE


def test_a_job_whose_counts_disagree_with_its_inputs_is_refused_unwritten(
    store: JobStore, table: TableClient
) -> None:
    job = replace(new_job(60), chunks=1)
    with pytest.raises(ValueError, match="60 inputs in 1 chunks"):
        store.create(job, new_inputs(60))
    with pytest.raises(ValueError, match="capability_hash"):
        store.create(replace(new_job(1), capability_hash="the-capability"), new_inputs(1))
    assert list(table.list_entities()) == []


def test_a_worst_case_chunk_fits_one_entity_and_round_trips(
    store: JobStore, table: TableClient
) -> None:
    job = new_job(CHUNK_SIZE)
    worst = [worst_input(i) for i in range(CHUNK_SIZE)]
    store.create(job, [InputState(i.index, i.entry) for i in worst])
    chunk = store.chunk(job.job_id, 0)
    assert chunk is not None
    chunk.inputs = worst
    saved = store.save(chunk)

    raw = table.get_entity(job.job_id, "chunk-00000")
    parts = sorted(name for name in raw if name.startswith("d"))
    print(f"worst-case chunk: {documented_size(raw)} bytes in {len(parts)} parts")
    assert documented_size(raw) < MAX_ENTITY_BYTES
    assert len(parts) == raw["parts"] > 1
    assert all(len(raw[p]) <= PART_CHARS and raw[p].isascii() for p in parts)
    assert store.chunk(job.job_id, 0) == saved
    assert store.chunks(job.job_id)[0].inputs == worst


def test_large_chunks_are_created_within_the_transaction_payload_limit(
    store: JobStore, table: TableClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = record_transactions(table, monkeypatch)
    job = new_job(40 * CHUNK_SIZE)
    entries = [InputState(i, worst_input(i).entry) for i in range(job.total)]
    store.create(job, entries)
    assert len(sent) > 1
    assert all(sum(map(documented_size, entities)) <= MAX_TRANSACTION_BYTES for entities in sent)
    assert [i for c in store.chunks(job.job_id) for i in c.inputs] == entries


def test_a_chunk_over_the_entity_limit_is_refused_and_nothing_changes(
    store: JobStore, table: TableClient
) -> None:
    job = created(store, CHUNK_SIZE)
    chunk = store.chunk(job.job_id, 0)
    assert chunk is not None
    for state in chunk.inputs:
        state.result = {"detail": "\U0001f600" * 2000}  # 24,000 characters of JSON each
    with pytest.raises(TooLarge, match=rf"job '{job.job_id}' row 'chunk-00000'"):
        store.save(chunk)
    assert table.get_entity(job.job_id, "chunk-00000").metadata["etag"] == chunk.etag


def test_a_live_claim_keeps_another_owner_out_until_it_expires(
    store: JobStore, clock: Clock
) -> None:
    job = created(store, 60)
    first = store.claim(read(store, job, 0), "worker-a", 30)
    assert first is not None
    assert (first.claim_owner, first.claim_until) == ("worker-a", NOW + 30)
    assert store.chunk(job.job_id, 0) == first

    clock.now = NOW + 29.9
    assert store.claim(read(store, job, 0), "worker-b", 30) is None
    clock.now = NOW + 30  # expired at claim_until: the first worker is presumed dead
    second = store.claim(read(store, job, 0), "worker-b", 30)
    assert second is not None
    assert store.chunk(job.job_id, 0) == second
    assert second.claim_owner == "worker-b" and second.claim_until == NOW + 60
    assert read(store, job, 1).claim_owner is None


def test_the_owner_claims_again_and_extends_its_claim(store: JobStore, clock: Clock) -> None:
    job = created(store, 10)
    first = store.claim(read(store, job, 0), "worker-a", 30)
    assert first is not None
    clock.now = NOW + 10
    again = store.claim(first, "worker-a", 30)
    assert again is not None and again.claim_until == NOW + 40 and again.etag != first.etag


def test_a_claim_from_a_stale_read_is_refused(store: JobStore) -> None:
    job = created(store, 10)
    read_by_a, read_by_b = store.chunk(job.job_id, 0), store.chunk(job.job_id, 0)
    assert read_by_a is not None and read_by_b is not None
    assert store.claim(read_by_a, "worker-a", 30) is not None
    assert store.claim(read_by_b, "worker-b", 30) is None  # it looked free, but the ETag moved
    assert read(store, job, 0).claim_owner == "worker-a"


def test_of_two_workers_saving_one_chunk_the_second_loses_its_claim(store: JobStore) -> None:
    job = created(store, 10)
    worker_a, worker_b = store.chunk(job.job_id, 0), store.chunk(job.job_id, 0)
    assert worker_a is not None and worker_b is not None
    worker_a.inputs[0].result = {"status": "unassigned"}
    worker_a = store.save(worker_a)  # the positive control: a fresh ETag saves
    worker_b.inputs[1].result = {"status": "unassigned"}
    with pytest.raises(ClaimLost, match=f"job '{job.job_id}' chunk 0"):
        store.save(worker_b)

    worker_a.inputs[2].attempts = 1
    worker_a = store.save(worker_a)  # and its new ETag saves again
    stored = store.chunk(job.job_id, 0)
    assert stored == worker_a
    assert [i.final for i in stored.inputs[:3]] == [True, False, False]


def test_a_worker_whose_claim_was_taken_over_cannot_save_or_release(
    store: JobStore, clock: Clock
) -> None:
    job = created(store, 10)
    slow = store.claim(read(store, job, 0), "worker-a", 30)
    assert slow is not None
    clock.now = NOW + 31
    taken = store.claim(read(store, job, 0), "worker-b", 30)
    assert taken is not None
    slow.inputs[0].write_started = True
    with pytest.raises(ClaimLost):
        store.save(slow)
    with pytest.raises(ClaimLost):
        store.release(slow)

    released = store.release(taken)
    assert (released.claim_owner, released.claim_until) == (None, None)
    assert store.chunk(job.job_id, 0) == released


def test_update_job_from_a_stale_read_is_stale_and_the_index_follows(
    store: JobStore, table: TableClient
) -> None:
    job = created(store, 10)
    read_once, read_twice = store.job(job.job_id), store.job(job.job_id)
    assert read_once is not None and read_twice is not None
    done = store.update_job(replace(read_once, status="done", ended=NOW + 5))
    with pytest.raises(Stale, match=job.job_id):
        store.update_job(replace(read_twice, status="cancelled"))

    assert store.job(job.job_id) == done
    assert done.status == "done" and done.ended == NOW + 5
    assert table.get_entity("index", job.job_id)["status"] == "done"
    assert store.running_jobs() == []


def test_an_idempotency_key_is_stored_once_and_answered_after(store: JobStore) -> None:
    assert store.remember_key("caller-a", "key-1", "job-1", "hash-1") is None
    assert store.remember_key("caller-a", "key-1", "job-2", "hash-2") == ("job-1", "hash-1", NOW)


def test_an_idempotency_key_older_than_a_day_is_replaced(store: JobStore, clock: Clock) -> None:
    assert store.remember_key("caller-a", "key-1", "job-1", "hash-1") is None
    clock.now = NOW + IDEMPOTENCY_SECONDS - 1
    assert store.remember_key("caller-a", "key-1", "job-2", "hash-2") == ("job-1", "hash-1", NOW)
    clock.now = NOW + IDEMPOTENCY_SECONDS
    assert store.remember_key("caller-a", "key-1", "job-2", "hash-2") is None
    assert store.remember_key("caller-a", "key-1", "job-3", "hash-3") == (
        "job-2",
        "hash-2",
        NOW + IDEMPOTENCY_SECONDS,
    )


def test_idempotency_scopes_do_not_collide(store: JobStore) -> None:
    assert store.remember_key("caller-a", "key-1", "job-a", "hash") is None
    assert store.remember_key("caller-b", "key-1", "job-b", "hash") is None
    # A separator inside scope or key cannot make two pairs meet.
    assert store.remember_key("a\x00b", "c", "job-c", "hash") is None
    assert store.remember_key("a", "b\x00c", "job-d", "hash") is None
    assert store.remember_key("caller-b", "key-1", "x", "y") == ("job-b", "hash", NOW)


def test_idempotency_keys_may_hold_any_characters(store: JobStore) -> None:
    for n, key in enumerate(ANY_CHARACTERS):
        assert store.remember_key("caller", key, f"job-{n}", "hash") is None
    for n, key in enumerate(ANY_CHARACTERS):
        assert store.remember_key("caller", key, "other", "other") == (f"job-{n}", "hash", NOW)


def test_a_forgotten_key_can_be_stored_again(store: JobStore) -> None:
    assert store.remember_key("caller", "key", "job-1", "hash") is None
    store.forget_key("caller", "key")
    store.forget_key("caller", "key")  # absent: nothing to do
    assert store.remember_key("caller", "key", "job-2", "hash") is None


def test_running_jobs_are_listed_and_a_deleted_job_leaves_nothing(
    store: JobStore, table: TableClient
) -> None:
    big = created(store, 120 * CHUNK_SIZE)  # 121 entities: more than one transaction
    small = created(store, 3)
    created(store, 3, status="done")
    assert sorted(store.running_jobs()) == sorted([big.job_id, small.job_id])

    store.delete_job(big.job_id)
    assert partition(table, big.job_id) == []
    assert big.job_id not in [e["RowKey"] for e in partition(table, "index")]
    assert store.job(big.job_id) is None and store.chunks(big.job_id) == []
    assert store.running_jobs() == [small.job_id]
    assert len(store.chunks(small.job_id)) == 1
    store.delete_job(big.job_id)  # again: nothing left, no error


def test_a_half_deleted_job_is_deleted_the_rest_of_the_way(
    store: JobStore, table: TableClient
) -> None:
    job = created(store, 3 * CHUNK_SIZE)
    table.delete_entity(job.job_id, "chunk-00001")  # another sweeper got this far
    store.delete_job(job.job_id)
    assert partition(table, job.job_id) == []
    assert store.running_jobs() == []


@pytest.mark.parametrize(
    ("row", "damage", "complaint"),
    [
        ("chunk-00000", {"d00": "[{not json"}, "inputs are not JSON"),
        ("chunk-00000", {"d00": '{"index":0}'}, "not a JSON array"),
        ("chunk-00000", {"d00": '[{"index":0}]'}, "an input is not an object of"),
        ("chunk-00000", {"parts": 2}, "d01 is NoneType, not text"),
        ("chunk-00000", {"claimOwner": "worker-a"}, "claimOwner and claimUntil"),
        ("job", {"status": "paused"}, "status 'paused'"),
        ("job", {"total": "ten"}, "total is str, not an integer"),
    ],
)
def test_a_corrupt_entity_is_a_value_error_naming_its_job_and_row(
    store: JobStore, table: TableClient, row: str, damage: dict[str, Any], complaint: str
) -> None:
    job = created(store, 10)
    table.update_entity({"PartitionKey": job.job_id, "RowKey": row, **damage}, UpdateMode.MERGE)
    read = store.job if row == "job" else store.chunks
    with pytest.raises(
        ValueError, match=f"job '{job.job_id}' row '{row}' is corrupt: .*{complaint}"
    ):
        read(job.job_id)


def test_ids_that_cannot_name_a_job_find_nothing(store: JobStore) -> None:
    created(store, 1)
    for job_id in ("index", "idempotency", "", "a/b", "x" * 65):
        assert store.job(job_id) is None and store.chunks(job_id) == []
        assert store.chunk(job_id, 0) is None
