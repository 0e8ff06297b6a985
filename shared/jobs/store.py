"""Durable bulk jobs in one Azure Table: a job, its inputs in chunks, and the lists that find them.

Data model (one table; each row is PartitionKey / RowKey):

    <job id>      job                 the Job: status, counts, times, ticket, caller, capability hash
    <job id>      chunk-00000 …       a Chunk: up to CHUNK_SIZE inputs as compact JSON split across
                                      d00, d01, … and the claim of the worker on it
    index         <job id>            created, deadline, status: lets a sweeper list jobs without
                                      scanning every partition
    idempotency   sha256(scope, key)  jobId, bodyHash, created: a submission already taken

A partition per job, so a job's entities are read with one query and written in transactions.
Workers on several instances get each message at least once and may die anywhere, so a worker
claims a chunk (owner and expiry written with If-Match on the ETag it read) before working on it,
and every later write of a chunk or job carries If-Match: a worker whose copy is out of date is
told so (ClaimLost, Stale) instead of overwriting someone else's progress. A claim that expires
(its worker died) may be taken by anyone; expiry is judged by the workers' clocks.

`create` writes the index entry first, then the chunks, and the job entity in the last
transaction: a job entity exists only once all its chunks do, and an index entry without a job
entity is a create that died half-way (the sweeper deletes it with `delete_job`). The index is a
hint kept in step by `update_job`; the job entity is the truth.

The methods are synchronous (azure-data-tables' async client needs aiohttp); callers on the event
loop run them with `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.data.tables import TableClient, TableEntity, TableTransactionError, UpdateMode

# Table Storage limits ("Understanding the Table service data model", learn.microsoft.com/rest/
# api/storageservices/understanding-the-table-service-data-model): an entity holds at most 255
# properties (3 of them PartitionKey, RowKey, Timestamp) and 1 MiB of data; a string property at
# most 64 KiB of UTF-16, 32 K characters. ("Performing entity group transactions", same site:
# a transaction holds at most 100 entities, all of one partition, and at most 4 MiB of payload.)
# Azurite enforces neither the entity size nor a clean 101-entity error, so we check them here.
MAX_ENTITY_BYTES = 1024 * 1024
MAX_PROPERTIES = 255
MAX_STRING_CHARS = 32 * 1024
MAX_TRANSACTION_ENTITIES = 100
MAX_TRANSACTION_BYTES = 4 * 1024 * 1024

CHUNK_SIZE = 50
# JSON with ensure_ascii is ASCII, one UTF-16 unit per character, so a part of 30,000 characters
# is 60,000 bytes: under the string limit whatever the inputs hold.
PART_CHARS = 30_000
# Why CHUNK_SIZE inputs fit one entity: the worst input we expect is about 10,000 characters of
# JSON: a 144-character serial of astral characters (each a 12-character surrogate pair escape),
# a 256-character UPN of quotes and backslashes (each doubled), and a result echoing that entry
# with Graph's serial and user and a 2,300-character detail. 50 of them are 500,431 characters,
# 1,001,304 bytes as an entity (measured by the tests): inside 1 MiB, 47 KB to spare. That is
# little: a result carrying ten such `candidates` (22,000 characters) would not fit, so whoever
# builds results bounds them, and a chunk over the limit is refused here (TooLarge).
# The entity size is Microsoft's published estimate ("How the size of an entity is calculated in
# Windows Azure table storage", learn.microsoft.com/archive/blogs/avkashchauhan): 4 bytes, plus
# the keys in UTF-16, plus per property 8 bytes, its name in UTF-16 and its value (a string: 4
# bytes plus UTF-16; int 4; double 8; bool 1). An estimate, so we keep a margin.
_SIZE_MARGIN_BYTES = 4 * 1024
_OPERATION_OVERHEAD_BYTES = 1024  # a transaction's per-entity multipart headers, generously

IDEMPOTENCY_SECONDS = 24 * 60 * 60
_KEY_ROUNDS = 3  # create, read, replace: a lost race is settled by the next round
STATUSES = ("running", "done", "cancelled", "expired")
JOB_ROW = "job"
INDEX = "index"
IDEMPOTENCY = "idempotency"
_CHUNK_PREFIX = "chunk-"
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)
# One hex SHA-256 per status URL handed out: the first, and one per repeat of its Idempotency-Key.
MAX_CAPABILITIES = 20
_SHA256_HEX = re.compile(
    rf"[0-9a-f]{{64}}(?:,[0-9a-f]{{64}}){{0,{MAX_CAPABILITIES - 1}}}", re.ASCII
)
_IF_MATCH = MatchConditions.IfNotModified
T = TypeVar("T")


class ClaimLost(Exception):
    """The chunk changed since it was read (another worker claimed it): stop working on it."""


class Stale(Exception):
    """The job (or idempotency entry) changed since it was read: read it again, decide again."""


class TooLarge(ValueError):
    """An entity would exceed Table Storage's limits: nothing was written; store less."""


@dataclass
class InputState:
    """One input of a job and how far its work has gone."""

    index: int
    entry: dict[str, Any] | None  # the validated device entry; None when refused at submission
    result: dict[str, Any] | None = None  # the per-input result document, once final
    first_user: str | None = None  # the user seen before the first write, kept for the report
    write_started: bool = False
    attempts: int = 0

    @property
    def final(self) -> bool:
        return self.result is not None


@dataclass
class Chunk:
    """Up to CHUNK_SIZE consecutive inputs: the unit a worker claims and saves."""

    job_id: str
    number: int
    inputs: list[InputState]
    claim_owner: str | None = None
    claim_until: float | None = None  # epoch seconds
    etag: str | None = None


@dataclass
class Job:
    """What a job is and where it stands; the inputs live in its chunks."""

    job_id: str
    status: str
    total: int
    chunks: int
    created: float
    deadline: float
    ended: float | None
    ticket_id: str | None
    dry_run: bool
    caller: str | None  # who started it, for the audit
    correlation_id: str
    # Hex SHA-256 of each status URL's capability, comma-separated; never a capability itself.
    capability_hash: str
    etag: str | None = None


class JobStore:
    """Jobs, chunks, claims and idempotency keys in one table (see the module docstring)."""

    def __init__(self, table: TableClient, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock

    def create(self, job: Job, inputs: Sequence[InputState]) -> None:
        """Store a new job; every entity is built (and checked) before anything is written."""
        _check_job_id(job.job_id)
        chunks = [Chunk(job.job_id, n, part) for n, part in enumerate(_slices(inputs))]
        if job.total != len(inputs) or job.chunks != len(chunks):
            raise ValueError(
                f"job {job.job_id!r} says {job.total} inputs in {job.chunks} chunks; "
                f"it has {len(inputs)} inputs in {len(chunks)} chunks of {CHUNK_SIZE}"
            )
        entities = [_chunk_entity(chunk) for chunk in chunks] + [_job_entity(job)]
        self._table.create_entity(_index_entity(job))
        for batch in _transactions(entities):
            self._table.submit_transaction([("create", entity) for entity in batch])

    def job(self, job_id: str) -> Job | None:
        if not _is_job_id(job_id):
            return None
        entity = self._get(job_id, JOB_ROW)
        return None if entity is None else _job_from(entity)

    def chunk(self, job_id: str, number: int) -> Chunk | None:
        if not _is_job_id(job_id):
            return None
        entity = self._get(job_id, _chunk_row(number))
        return None if entity is None else _chunk_from(entity)

    def chunks(self, job_id: str) -> list[Chunk]:
        """All of a job's chunks in order: one partition query (RowKeys sort by number)."""
        if not _is_job_id(job_id):
            return []
        found = self._table.query_entities(
            "PartitionKey eq @job and RowKey ge @first and RowKey lt @after",
            parameters={"job": job_id, "first": _CHUNK_PREFIX, "after": "chunk."},
        )
        return [_chunk_from(entity) for entity in found]

    def inputs(self, job_id: str) -> list[InputState]:
        """All of a job's inputs in order, from its chunks."""
        return [state for chunk in self.chunks(job_id) for state in chunk.inputs]

    def claim(self, chunk: Chunk, owner: str, seconds: float) -> Chunk | None:
        """Take the chunk for `seconds` unless another owner's claim is live; None if not taken.

        If-Match makes two workers racing for one chunk safe: the second write meets a new ETag.
        """
        now = self._clock()
        held = chunk.claim_owner not in (None, owner)
        if held and chunk.claim_until is not None and now < chunk.claim_until:
            return None
        until = float(now + seconds)
        claim = {
            "PartitionKey": chunk.job_id,
            "RowKey": _chunk_row(chunk.number),
            "claimOwner": owner,
            "claimUntil": until,
        }
        try:
            written = self._table.update_entity(
                claim, UpdateMode.MERGE, etag=_etag(chunk), match_condition=_IF_MATCH
            )
        except HttpResponseError as error:
            if not _lost(error):
                raise
            return None
        return replace(chunk, claim_owner=owner, claim_until=until, etag=written["etag"])

    def save(self, chunk: Chunk) -> Chunk:
        """Write the chunk as it is now; ClaimLost if it changed since it was read."""
        try:
            written = self._table.update_entity(
                _chunk_entity(chunk),
                UpdateMode.REPLACE,
                etag=_etag(chunk),
                match_condition=_IF_MATCH,
            )
        except HttpResponseError as error:
            if not _lost(error):
                raise
            raise ClaimLost(f"job {chunk.job_id!r} chunk {chunk.number} changed") from error
        return replace(chunk, etag=written["etag"])

    def release(self, chunk: Chunk) -> Chunk:
        """Clear the claim (a whole replace: a merge cannot remove properties)."""
        return self.save(replace(chunk, claim_owner=None, claim_until=None))

    def update_job(self, job: Job) -> Job:
        """Write the job if unchanged since it was read (else Stale), then its index status."""
        try:
            written = self._table.update_entity(
                _job_entity(job), UpdateMode.REPLACE, etag=_etag(job), match_condition=_IF_MATCH
            )
        except HttpResponseError as error:
            if not _lost(error):
                raise
            raise Stale(f"job {job.job_id!r} changed since it was read") from error
        status = {"PartitionKey": INDEX, "RowKey": job.job_id, "status": job.status}
        # Merge, not upsert: a job deleted meanwhile must not get its index entry back.
        with contextlib.suppress(ResourceNotFoundError):
            self._table.update_entity(status, UpdateMode.MERGE)
        return replace(job, etag=written["etag"])

    def remember_key(
        self, scope: str, key: str, job_id: str, body_hash: str
    ) -> tuple[str, str, float] | None:
        """Store key → job unless a live entry exists: None if stored, else (job, hash, created).

        Entries older than IDEMPOTENCY_SECONDS count as absent and are replaced, with If-Match so
        that of two callers replacing the same old entry only one wins.
        """
        row = _key_row(scope, key)
        entity = {
            "PartitionKey": IDEMPOTENCY,
            "RowKey": row,
            "jobId": job_id,
            "bodyHash": body_hash,
            "created": float(self._clock()),
        }
        for _ in range(_KEY_ROUNDS):
            try:
                self._table.create_entity(entity)
                return None
            except ResourceExistsError:
                pass
            stored = self._get(IDEMPOTENCY, row)
            if stored is None:
                continue  # forgotten in between: insert again
            remembered = _key_from(stored)
            if self._clock() - remembered[2] < IDEMPOTENCY_SECONDS:
                return remembered
            if self._replace_if_unchanged(entity, stored):
                return None
        raise Stale(f"idempotency key in scope {scope!r} kept changing; try again")

    def forget_key(self, scope: str, key: str) -> None:
        """Remove a key (a submission that failed after remembering it); absent is fine."""
        self._table.delete_entity(IDEMPOTENCY, _key_row(scope, key))

    def running_jobs(self) -> list[str]:
        found = self._table.query_entities(
            "PartitionKey eq @index and status eq @running",
            parameters={"index": INDEX, "running": "running"},
            select=["RowKey"],
        )
        return [entity["RowKey"] for entity in found]

    def delete_job(self, job_id: str) -> None:
        """Delete every entity of the job, then its index entry (so a failed delete is listed)."""
        _check_job_id(job_id)
        rows = self._table.query_entities(
            "PartitionKey eq @job", parameters={"job": job_id}, select=["PartitionKey", "RowKey"]
        )
        keys = [{"PartitionKey": job_id, "RowKey": entity["RowKey"]} for entity in rows]
        for batch in _transactions(keys):
            try:
                self._table.submit_transaction([("delete", key) for key in batch])
            except TableTransactionError:
                # Another sweeper deleted some of them: one missing entity fails the whole
                # transaction, while a single delete of a missing entity succeeds.
                for key in batch:
                    self._table.delete_entity(job_id, key["RowKey"])
        self._table.delete_entity(INDEX, job_id)

    def _get(self, partition: str, row: str) -> TableEntity | None:
        try:
            return self._table.get_entity(partition, row)
        except ResourceNotFoundError:
            return None

    def _replace_if_unchanged(self, entity: dict[str, Any], stored: TableEntity) -> bool:
        try:
            self._table.update_entity(
                entity, UpdateMode.REPLACE, etag=stored.metadata["etag"], match_condition=_IF_MATCH
            )
        except HttpResponseError as error:
            if not _lost(error):
                raise
            return False
        return True


def _lost(error: HttpResponseError) -> bool:
    """412: changed since read; 404: deleted since read. Either way our copy is out of date."""
    return error.status_code in (404, 412)


def _etag(record: Chunk | Job) -> str:
    if record.etag is None:
        raise ValueError("only a chunk or job read from the store can be written back")
    return record.etag


def _is_job_id(job_id: str) -> bool:
    """Job ids are key-safe and never name the shared partitions."""
    return bool(_JOB_ID.fullmatch(job_id)) and job_id not in (INDEX, IDEMPOTENCY)


def _check_job_id(job_id: str) -> None:
    if not _is_job_id(job_id):
        raise ValueError(
            f"job id {job_id!r} must be 1 to 64 of A-Z a-z 0-9 - _ (not a reserved name)"
        )


def _chunk_row(number: int) -> str:
    return f"{_CHUNK_PREFIX}{number:05d}"


def _key_row(scope: str, key: str) -> str:
    """A RowKey for any scope and key: keys may not hold / \\ # ? or control characters.

    The JSON pair (ASCII, lone surrogates escaped) keeps scope and key apart unambiguously.
    """
    pair = json.dumps([scope, key], ensure_ascii=True)
    return hashlib.sha256(pair.encode("ascii")).hexdigest()


def _slices(items: Sequence[T]) -> Iterator[list[T]]:
    for start in range(0, len(items), CHUNK_SIZE):
        yield list(items[start : start + CHUNK_SIZE])


def _transactions(entities: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive groups within a transaction's entity count and payload limits."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entity in entities:
        cost = _entity_bytes(entity) + _OPERATION_OVERHEAD_BYTES
        if batch and (
            len(batch) == MAX_TRANSACTION_ENTITIES or size + cost > MAX_TRANSACTION_BYTES
        ):
            yield batch
            batch, size = [], 0
        batch.append(entity)
        size += cost
    if batch:
        yield batch


def _entity_bytes(entity: Mapping[str, Any]) -> int:
    """Microsoft's size estimate (see the limits above); an absent (None) value costs nothing."""
    keys = _utf16_bytes(entity["PartitionKey"]) + _utf16_bytes(entity["RowKey"])
    properties = [(k, v) for k, v in entity.items() if k not in ("PartitionKey", "RowKey")]
    return (
        4
        + keys
        + sum(8 + _utf16_bytes(k) + _value_bytes(v) for k, v in properties if v is not None)
    )


def _value_bytes(value: object) -> int:
    if isinstance(value, str):
        return 4 + _utf16_bytes(value)
    if isinstance(value, bool):
        return 1
    return 4 if isinstance(value, int) else 8


def _utf16_bytes(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass"))


def _check_fits(entity: dict[str, Any]) -> dict[str, Any]:
    """The entity itself, if the service will take it (Azurite would take it anyway)."""
    size = _entity_bytes(entity)
    properties = len(entity) + 1  # and Timestamp
    longest = max((_utf16_bytes(v) // 2 for v in entity.values() if isinstance(v, str)), default=0)
    if (
        size > MAX_ENTITY_BYTES - _SIZE_MARGIN_BYTES
        or properties > MAX_PROPERTIES
        or longest > MAX_STRING_CHARS
    ):
        raise TooLarge(
            f"job {entity['PartitionKey']!r} row {entity['RowKey']!r} would be {size} bytes in "
            f"{properties} properties, its longest string {longest} characters; an entity holds "
            f"{MAX_ENTITY_BYTES} bytes in {MAX_PROPERTIES}, a string {MAX_STRING_CHARS}"
        )
    return entity


def _index_entity(job: Job) -> dict[str, Any]:
    return {
        "PartitionKey": INDEX,
        "RowKey": job.job_id,
        "created": float(job.created),
        "deadline": float(job.deadline),
        "status": job.status,
    }


def _job_entity(job: Job) -> dict[str, Any]:
    if job.status not in STATUSES:
        raise ValueError(f"job {job.job_id!r} status {job.status!r} is not one of {STATUSES}")
    if not _SHA256_HEX.fullmatch(job.capability_hash):
        raise ValueError(
            "capability_hash must be hex SHA-256s, comma-separated (never a capability itself)"
        )
    # None values are left out by the SDK: the property is absent, read back as None.
    return _check_fits(
        {
            "PartitionKey": job.job_id,
            "RowKey": JOB_ROW,
            "status": job.status,
            "total": job.total,
            "chunks": job.chunks,
            "created": float(job.created),
            "deadline": float(job.deadline),
            "ended": None if job.ended is None else float(job.ended),
            "ticketId": job.ticket_id,
            "dryRun": job.dry_run,
            "caller": job.caller,
            "correlationId": job.correlation_id,
            "capabilityHash": job.capability_hash,
        }
    )


def _chunk_entity(chunk: Chunk) -> dict[str, Any]:
    documents = [_input_document(state) for state in chunk.inputs]
    text = json.dumps(documents, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    parts = [text[at : at + PART_CHARS] for at in range(0, len(text), PART_CHARS)]
    entity: dict[str, Any] = {
        "PartitionKey": chunk.job_id,
        "RowKey": _chunk_row(chunk.number),
        "number": chunk.number,
        "parts": len(parts),
        "claimOwner": chunk.claim_owner,
        "claimUntil": None if chunk.claim_until is None else float(chunk.claim_until),
    }
    entity.update({_part_name(n): part for n, part in enumerate(parts)})
    return _check_fits(entity)


def _part_name(number: int) -> str:
    return f"d{number:02d}"


def _input_document(state: InputState) -> dict[str, Any]:
    return {
        "index": state.index,
        "entry": state.entry,
        "result": state.result,
        "firstUser": state.first_user,
        "writeStarted": state.write_started,
        "attempts": state.attempts,
    }


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, float) or _is_int(value)


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _is_flag(value: object) -> bool:
    return isinstance(value, bool)


def _is_object(value: object) -> bool:
    return isinstance(value, dict)


def _or_none(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


_INPUT_FIELDS: dict[str, Callable[[object], bool]] = {
    "index": _is_int,
    "entry": _or_none(_is_object),
    "result": _or_none(_is_object),
    "firstUser": _or_none(_is_text),
    "writeStarted": _is_flag,
    "attempts": _is_int,
}


class _Fields:
    """Typed reads of one stored entity: anything unexpected is a ValueError naming its row."""

    def __init__(self, entity: Mapping[str, Any]) -> None:
        self.entity = entity
        partition, row = entity.get("PartitionKey"), entity.get("RowKey")
        shared = partition in (INDEX, IDEMPOTENCY)
        self.where = f"{partition} row {row!r}" if shared else f"job {partition!r} row {row!r}"

    def corrupt(self, why: str) -> ValueError:
        return ValueError(f"stored {self.where} is corrupt: {why}")

    def _value(self, name: str, check: Callable[[object], bool], kind: str) -> Any:
        value = self.entity.get(name)
        if not check(value):
            raise self.corrupt(f"{name} is {type(value).__name__}, not {kind}")
        return value

    def text(self, name: str) -> str:
        return str(self._value(name, _is_text, "text"))

    def optional_text(self, name: str) -> str | None:
        value = self._value(name, _or_none(_is_text), "text or absent")
        return None if value is None else str(value)

    def integer(self, name: str) -> int:
        return int(self._value(name, _is_int, "an integer"))

    def number(self, name: str) -> float:
        return float(self._value(name, _is_number, "a number"))

    def optional_number(self, name: str) -> float | None:
        value = self._value(name, _or_none(_is_number), "a number or absent")
        return None if value is None else float(value)

    def flag(self, name: str) -> bool:
        return bool(self._value(name, _is_flag, "true or false"))


def _job_from(entity: TableEntity) -> Job:
    fields = _Fields(entity)
    status = fields.text("status")
    if status not in STATUSES:
        raise fields.corrupt(f"status {status!r} is not one of {STATUSES}")
    return Job(
        job_id=fields.text("PartitionKey"),
        status=status,
        total=fields.integer("total"),
        chunks=fields.integer("chunks"),
        created=fields.number("created"),
        deadline=fields.number("deadline"),
        ended=fields.optional_number("ended"),
        ticket_id=fields.optional_text("ticketId"),
        dry_run=fields.flag("dryRun"),
        caller=fields.optional_text("caller"),
        correlation_id=fields.text("correlationId"),
        capability_hash=fields.text("capabilityHash"),
        etag=entity.metadata["etag"],
    )


def _chunk_from(entity: TableEntity) -> Chunk:
    fields = _Fields(entity)
    number = fields.integer("number")
    if _chunk_row(number) != entity.get("RowKey"):
        raise fields.corrupt(f"number {number} does not match the row")
    owner, until = fields.optional_text("claimOwner"), fields.optional_number("claimUntil")
    if (owner is None) != (until is None):
        raise fields.corrupt("claimOwner and claimUntil must be set together")
    return Chunk(
        job_id=fields.text("PartitionKey"),
        number=number,
        inputs=_inputs_from(fields),
        claim_owner=owner,
        claim_until=until,
        etag=entity.metadata["etag"],
    )


def _inputs_from(fields: _Fields) -> list[InputState]:
    text = "".join(fields.text(_part_name(n)) for n in range(fields.integer("parts")))
    try:
        documents = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise fields.corrupt(f"its inputs are not JSON ({error})") from None
    if not isinstance(documents, list):
        raise fields.corrupt("its inputs are not a JSON array")
    return [_input_from(document, fields) for document in documents]


def _input_from(document: object, fields: _Fields) -> InputState:
    if not isinstance(document, dict) or set(document) != set(_INPUT_FIELDS):
        raise fields.corrupt(f"an input is not an object of {', '.join(_INPUT_FIELDS)}")
    for name, ok in _INPUT_FIELDS.items():
        if not ok(document[name]):
            raise fields.corrupt(f"input {document['index']!r} has a bad {name}")
    return InputState(
        index=document["index"],
        entry=document["entry"],
        result=document["result"],
        first_user=document["firstUser"],
        write_started=document["writeStarted"],
        attempts=document["attempts"],
    )


def _key_from(entity: TableEntity) -> tuple[str, str, float]:
    fields = _Fields(entity)
    return fields.text("jobId"), fields.text("bodyHash"), fields.number("created")
