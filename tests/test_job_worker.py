"""The job worker (shared.jobs.worker) against a real Azurite and the Graph emulator, in process.

Several Worker instances here stand for several Function App instances: they share nothing but
the table (jobs, chunks, claims, the write budget) and the queue, as instances do. A small loop
plays the queue trigger: it receives a message, hands it to a worker, deletes it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devtools import tokens
from devtools.azurite import Azurite
from devtools.graph_emulator import DEMO_ASSIGNED_ID, DEMO_UNASSIGNED_ID, Fault, GraphEmulator
from shared.graph import GraphClient
from shared.identity import TokenProvider
from shared.jobs.budget import Grant, WriteBudget
from shared.jobs.results import from_problem
from shared.jobs.store import InputState, Job, JobStore
from shared.jobs.worker import AGED_GRANTS_PER_WRITE, Message, Worker
from shared.request import invalid
from shared.settings import load_settings
from tests.fakes import CountingCredential, FakeToken, credential_factory

WAIT_SECONDS = 90.0  # a loose liveness bound for a busy machine
ALEX = "alex.wilber@contoso.example"


class MintingCredential(CountingCredential):
    """Tokens the Graph emulator accepts (devtools.tokens), without an identity endpoint."""

    def __init__(self, audience: str) -> None:
        super().__init__()
        self.audience = audience

    def get_token(self, *scopes: str, **kwargs: Any) -> FakeToken:
        token, expires = tokens.mint(
            self.audience, client_id="job-worker-tests", lifetime_seconds=3600, now=time.time()
        )
        return FakeToken(token, expires)


class AgingBudget(WriteBudget):
    """A real budget whose first `aged` grants are past the send allowance when checked, as after
    a slow save; it records, at each take, whether the chunk's stored record says a write of its
    first input may have started."""

    def __init__(self, store: JobStore, *args: Any, aged: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store, self.aged = store, aged
        self.job_id = ""
        self.granted = 0
        self.stored_started_at_take: list[bool] = []

    def take(self) -> Grant:
        chunk = self.store.chunk(self.job_id, 0)
        assert chunk is not None
        self.stored_started_at_take.append(chunk.inputs[0].write_started)
        grant = super().take()
        self.granted += grant.wait == 0
        return grant

    def fresh(self, grant: Grant) -> bool:
        if self.aged > 0:
            self.aged -= 1
            return False
        return super().fresh(grant)


@dataclass
class Bench:
    """A table, a queue and a Graph emulator for one test."""

    table: TableClient
    queue: QueueClient
    graph: GraphEmulator
    store: JobStore

    def worker(
        self,
        writes: int = 100,
        window: float = 20.0,
        partition: str = "budget",
        budget: WriteBudget | None = None,
        **options: Any,
    ) -> Worker:
        settings = load_settings({"GRAPH_ENDPOINT": self.graph.base_url})
        provider = TokenProvider(
            settings, credential_factory=credential_factory(MintingCredential(self.graph.base_url))
        )
        queue = self.queue

        def send(text: str, delay: float) -> None:
            queue.send_message(text, visibility_timeout=max(0, round(delay)))

        return Worker(
            self.store,
            budget or WriteBudget(self.table, writes, window, partition=partition),
            send,
            GraphClient(settings, provider),
            input_deadline_seconds=10.0,
            **options,
        )

    def submit(self, entries: list[dict[str, Any] | None], dry_run: bool = False) -> Job:
        job_id = uuid.uuid4().hex
        inputs = []
        for index, entry in enumerate(entries):
            state = InputState(index, entry)
            if entry is None:
                state.result = from_problem(index, None, invalid("A refused entry."))
            inputs.append(state)
        now = time.time()
        job = Job(
            job_id=job_id, status="running", total=len(inputs), chunks=-(-len(inputs) // 50),
            created=now, deadline=now + 3600, ended=None, ticket_id="RITM1", dry_run=dry_run,
            caller=None, correlation_id=f"job-{job_id[:8]}",
            capability_hash=hashlib.sha256(b"cap").hexdigest(),
        )  # fmt: skip
        self.store.create(job, inputs)
        self.queue.send_message(Message("fanout", job_id).encode())
        return job

    def results(self, job: Job) -> list[dict[str, Any] | None]:
        return [state.result for chunk in self.store.chunks(job.job_id) for state in chunk.inputs]


@pytest.fixture
def bench(azurite: Azurite) -> Iterator[Bench]:
    name = f"jobs{uuid.uuid4().hex[:12]}"
    table = TableServiceClient.from_connection_string(azurite.connection_string).create_table(name)
    queue = QueueClient.from_connection_string(
        azurite.connection_string, name, message_encode_policy=TextBase64EncodePolicy()
    )
    queue.create_queue()
    graph = GraphEmulator(write_limit=12, write_window_seconds=1.0).start()
    yield Bench(table, queue, graph, JobStore(table))
    graph.stop()
    queue.delete_queue()
    table.delete_table()


async def play_the_trigger(bench: Bench, workers: list[Worker], job: Job) -> None:
    """Deliver the queue's messages to the workers until every input of `job` is final."""
    deadline = time.monotonic() + WAIT_SECONDS

    async def deliver(worker: Worker) -> None:
        while time.monotonic() < deadline:
            messages = await asyncio.to_thread(
                lambda: list(bench.queue.receive_messages(max_messages=1, visibility_timeout=60))
            )
            if not messages:
                if all(r is not None for r in bench.results(job)):
                    return
                await asyncio.sleep(0.1)
                continue
            message = messages[0]
            await worker.handle(Message.decode(base64.b64decode(message.content)))
            await asyncio.to_thread(bench.queue.delete_message, message)
        raise AssertionError(f"not finished within {WAIT_SECONDS} s: {bench.results(job)}")

    await asyncio.gather(*(deliver(worker) for worker in workers))
    for worker in workers:
        await worker.graph.aclose()


def devices(graph: GraphEmulator, count: int) -> list[str]:
    ids = [str(uuid.UUID(int=0x5EED_0000_0000 + n)) for n in range(count)]
    for n, device_id in enumerate(ids):
        graph.add_device(device_id, f"JOB{n:05d}", f"user{n}@contoso.example")
    return ids


def test_every_input_ends_with_exactly_one_result_in_order(bench: Bench) -> None:
    entries: list[dict[str, Any] | None] = [
        {"deviceId": DEMO_ASSIGNED_ID},
        {"deviceId": DEMO_UNASSIGNED_ID},
        None,  # refused at submission
        {"deviceId": "0f0e0d0c-0b0a-0908-0706-050403020100"},
        {"serialNumber": "Default string"},
        {"serialNumber": "PF3ABC12", "expectedUserPrincipalName": "someone@contoso.example"},
    ]
    job = bench.submit(entries)
    asyncio.run(play_the_trigger(bench, [bench.worker()], job))
    results = bench.results(job)
    assert [r["index"] for r in results if r] == list(range(len(entries)))
    assert [r["status"] for r in results if r] == [
        "unassigned", "alreadyUnassigned", "invalid-request", "device-not-found",
        "ambiguous-serial", "alreadyUnassigned",
    ]  # fmt: skip
    assert results[0] is not None and results[0]["previousUserPrincipalName"] == ALEX
    assert len(bench.graph.graph_calls("POST")) == 1


def test_two_workers_share_one_budget_and_write_each_device_once(bench: Bench) -> None:
    """60 devices, a budget of 9 per second, and a Graph that throttles beyond 12 per second:
    the margin, like 80 of Intune's 100, absorbs the time between a grant and its arrival."""
    ids = devices(bench.graph, 60)
    job = bench.submit([{"deviceId": device_id} for device_id in ids])
    workers = [bench.worker(writes=9, window=1.0) for _ in range(2)]
    asyncio.run(play_the_trigger(bench, workers, job))
    assert all(r is not None and r["status"] == "unassigned" for r in bench.results(job))
    posts = bench.graph.graph_calls("POST")
    assert Counter(p.path for p in posts).most_common(1)[0][1] == 1  # no device written twice
    assert len(posts) == 60
    assert bench.graph.throttled == 0


def test_a_slot_that_aged_before_its_write_stays_spent_and_a_fresh_one_is_taken(
    bench: Bench,
) -> None:
    job = bench.submit([{"deviceId": DEMO_ASSIGNED_ID}])
    budget = AgingBudget(bench.store, bench.table, 100, 20.0, aged=1)
    budget.job_id = job.job_id
    asyncio.run(play_the_trigger(bench, [bench.worker(budget=budget)], job))
    result = bench.results(job)[0]
    assert result is not None and result["status"] == "unassigned"
    assert budget.granted == 2  # the aged slot counts against the budget all the same
    assert len(bench.graph.graph_calls("POST")) == 1
    # The record that a write may start is stored before the first slot is asked for, so no
    # save comes between a slot and its write.
    assert budget.stored_started_at_take == [True, True]


@pytest.mark.parametrize("ours", [False, True])
def test_a_device_emptied_while_its_input_waits_for_a_slot_is_reported_as_it_happened(
    bench: Bench, ours: bool
) -> None:
    """One write per second and the first slot aged: the input waits about a second for the
    next. Someone else empties the device meanwhile: `alreadyUnassigned`, since this run knows
    it sent nothing (the stored record already says a write may start). The control: our own
    write went out but its answer was lost, and the next attempt finds it empty: `unassigned`."""
    job = bench.submit([{"deviceId": DEMO_ASSIGNED_ID}])
    budget = AgingBudget(bench.store, bench.table, 1, 1.0, aged=0 if ours else 1)
    budget.job_id = job.job_id
    if ours:
        bench.graph.inject(Fault("drop_after", method="POST", device_id=DEMO_ASSIGNED_ID))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if not ours:
            bench.graph.add_device(DEMO_ASSIGNED_ID, "5CG1234XYZ")  # emptied in the portal
        await asyncio.sleep(seconds)

    asyncio.run(play_the_trigger(bench, [bench.worker(budget=budget, sleep=sleep)], job))
    result = bench.results(job)[0]
    assert result is not None
    assert ours or waits  # the input did wait in place for a slot
    assert result["status"] == ("unassigned" if ours else "alreadyUnassigned")
    assert result["previousUserPrincipalName"] == (ALEX if ours else None)
    assert len(bench.graph.graph_calls("POST")) == (1 if ours else 0)


def test_an_input_put_off_stores_whether_a_write_went_out(bench: Bench) -> None:
    """Put off for longer than a wait in place: by a full budget (nothing sent, the record goes
    back to no) and, the control, by Graph answering the write 503 (it may have acted: yes)."""
    put_off = bench.submit([{"deviceId": DEMO_ASSIGNED_ID}])
    budget = AgingBudget(bench.store, bench.table, 1, 20.0, aged=1, partition="full")
    budget.job_id = put_off.job_id
    asyncio.run(bench.worker(budget=budget).handle(Message("chunk", put_off.job_id, 0)))
    stored = bench.store.chunk(put_off.job_id, 0)
    assert stored is not None
    assert budget.stored_started_at_take == [True, True]  # set while a write was asked for
    assert (stored.inputs[0].write_started, stored.inputs[0].first_user) == (False, ALEX)
    assert bench.graph.graph_calls("POST") == []

    refused = bench.submit([{"deviceId": DEMO_ASSIGNED_ID}])
    bench.graph.inject(Fault("status", method="POST", status=503, retry_after="60"))
    asyncio.run(bench.worker().handle(Message("chunk", refused.job_id, 0)))
    stored = bench.store.chunk(refused.job_id, 0)
    assert stored is not None and stored.inputs[0].result is None
    assert (stored.inputs[0].write_started, stored.inputs[0].first_user) == (True, ALEX)
    assert len(bench.graph.graph_calls("POST")) == 1


def test_slots_that_keep_aging_put_the_chunk_off_rather_than_spend_the_budget(
    bench: Bench,
) -> None:
    """Storage slower than the send allowance: after AGED_GRANTS_PER_WRITE aged slots the input
    waits a window (here 20 s: the chunk goes back to the queue), nothing sent. The control: one
    aged slot fewer, and the write goes out on the next."""
    for aged, writes in ((AGED_GRANTS_PER_WRITE, 0), (AGED_GRANTS_PER_WRITE - 1, 1)):
        job = bench.submit([{"deviceId": DEMO_ASSIGNED_ID}])
        bench.graph.add_device(DEMO_ASSIGNED_ID, "5CG1234XYZ", ALEX)
        bench.graph.clear_requests()
        budget = AgingBudget(bench.store, bench.table, 100, 20.0, aged=aged, partition=job.job_id)
        budget.job_id = job.job_id
        asyncio.run(bench.worker(budget=budget).handle(Message("chunk", job.job_id, 0)))
        stored = bench.store.chunk(job.job_id, 0)
        assert stored is not None
        assert budget.granted == min(aged + 1, AGED_GRANTS_PER_WRITE)
        assert len(bench.graph.graph_calls("POST")) == writes
        assert stored.inputs[0].write_started is bool(writes)
        assert (stored.inputs[0].result is None) is (writes == 0)


class FailingBudget(WriteBudget):
    """A real budget whose `take` (or `hold`) fails once as storage would."""

    def __init__(self, *args: Any, fail: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail = fail

    def take(self) -> Grant:
        if self.fail == "take":
            self.fail = ""
            raise ServiceRequestError("the table did not answer")
        return super().take()

    def hold(self, seconds: float) -> None:
        if self.fail == "hold":
            self.fail = ""
            raise ServiceRequestError("the table did not answer")
        super().hold(seconds)


@pytest.mark.parametrize("fail", ["take", "hold"])
def test_a_storage_error_leaves_the_record_saying_whether_a_write_went_out(
    bench: Bench, fail: str
) -> None:
    """The record that a write may start is saved before the slot is asked for. When the take
    itself fails, nothing went out and the released chunk says so; the control: the budget's
    hold fails after Graph throttled a write that was sent, and the chunk says one may have."""
    job = bench.submit([{"deviceId": DEMO_ASSIGNED_ID}])
    if fail == "hold":
        bench.graph.inject(Fault("status", method="POST", status=429, retry_after="1"))
    budget = FailingBudget(bench.table, 100, 20.0, fail=fail)
    asyncio.run(bench.worker(budget=budget).handle(Message("chunk", job.job_id, 0)))
    stored = bench.store.chunk(job.job_id, 0)
    assert stored is not None and stored.inputs[0].result is None  # put back on the queue
    assert stored.claim_owner is None  # released
    assert stored.inputs[0].first_user == ALEX
    assert stored.inputs[0].write_started is (fail == "hold")
    assert len(bench.graph.graph_calls("POST")) == (1 if fail == "hold" else 0)


def test_without_the_shared_budget_two_workers_are_throttled(bench: Bench) -> None:
    """The control of the test above: each worker with a budget of its own sends 18 a second."""
    ids = devices(bench.graph, 60)
    job = bench.submit([{"deviceId": device_id} for device_id in ids])
    workers = [bench.worker(writes=9, window=1.0, partition=f"own-{n}") for n in range(2)]
    asyncio.run(play_the_trigger(bench, workers, job))
    assert bench.graph.throttled > 0


def test_a_retry_keeps_a_device_reassigned_after_a_crashed_attempt(bench: Bench) -> None:
    """The first attempt stored Alex and may have written; now Bob has the device: 409."""
    job = bench.submit([{"deviceId": DEMO_ASSIGNED_ID}])
    [chunk] = bench.store.chunks(job.job_id)
    chunk.inputs[0].first_user, chunk.inputs[0].write_started = ALEX, True
    bench.store.save(chunk)
    bob = "bob@contoso.example"
    bench.graph.add_device(DEMO_ASSIGNED_ID, "5CG1234XYZ", bob)
    asyncio.run(play_the_trigger(bench, [bench.worker()], job))
    [result] = bench.results(job)
    assert result is not None and result["status"] == "user-mismatch"
    assert bench.graph.graph_calls("POST") == []
    device = bench.graph.device(DEMO_ASSIGNED_ID)
    assert device is not None and device["userPrincipalName"] == bob


def test_a_throttled_write_waits_and_the_input_still_ends_well(bench: Bench) -> None:
    ids = devices(bench.graph, 3)
    bench.graph.inject(Fault("status", method="POST", status=429, retry_after="1", count=2))
    job = bench.submit([{"deviceId": device_id} for device_id in ids])
    asyncio.run(play_the_trigger(bench, [bench.worker()], job))
    assert [r["status"] for r in bench.results(job) if r] == ["unassigned"] * 3
    # The shared hold was set by the 429s: the budget's log says when it ends.
    hold = bench.table.get_entity("budget", "log")["until"]
    assert hold > 0


def test_duplicate_messages_write_nothing_twice(bench: Bench) -> None:
    ids = devices(bench.graph, 5)
    job = bench.submit([{"deviceId": device_id} for device_id in ids])
    bench.queue.send_message(Message("fanout", job.job_id).encode())
    bench.queue.send_message(Message("chunk", job.job_id, 0).encode())
    asyncio.run(play_the_trigger(bench, [bench.worker(), bench.worker()], job))
    assert [r["status"] for r in bench.results(job) if r] == ["unassigned"] * 5
    assert len(bench.graph.graph_calls("POST")) == 5


def test_a_live_claim_is_left_alone_and_an_expired_one_taken_over(bench: Bench) -> None:
    ids = devices(bench.graph, 2)
    job = bench.submit([{"deviceId": device_id} for device_id in ids])
    [chunk] = bench.store.chunks(job.job_id)
    assert bench.store.claim(chunk, "a-worker-that-died", 2.0) is not None
    started = time.monotonic()
    asyncio.run(play_the_trigger(bench, [bench.worker()], job))
    # The claim was waited out (a lower bound: a busy machine only adds), then the work done.
    assert time.monotonic() - started >= 1.0
    assert [r["status"] for r in bench.results(job) if r] == ["unassigned"] * 2
