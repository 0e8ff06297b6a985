"""Queue and timer triggers in the dev host, against a real Azurite.

The test functions are in tests/trigger_app (never deployed): QueueProbe records every start and
end in $PROBE_DIR/events.log and does what its message says; TimerProbe remembers its firings.
Each test gets its own queue and, where it needs other host.json settings, its own copy of the app.
Bounds are loose liveness limits, never timing assertions.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from devtools.azurite import Azurite
from devtools.host import discover_triggers
from tests.stack import ROOT
from tests.test_timers import ManualClock

APP = ROOT / "tests" / "trigger_app"
WAIT_SECONDS = 60.0  # a loose liveness bound for a busy machine
NEVER = "0 0 0 1 1 *"  # TimerProbe's schedule where a test does not use it: once a year


class Probe:
    """A queue, a folder for the probe's events, and dev hosts serving the probe app."""

    def __init__(self, azurite: Azurite, folder: Path, app: Path = APP) -> None:
        self.connection_string = azurite.connection_string
        self.queue_name = f"probe-{uuid.uuid4().hex[:12]}"
        self.folder = folder
        self.app = app
        self.queue = QueueClient.from_connection_string(
            self.connection_string, self.queue_name, message_encode_policy=TextBase64EncodePolicy()
        )
        self.queue.create_queue()
        self.hosts: list[subprocess.Popen[str]] = []
        self._logs: list[Any] = []

    def start_host(self, *args: str) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "AzureWebJobsStorage": self.connection_string,
            "PROBE_QUEUE": self.queue_name,
            "PROBE_DIR": str(self.folder),
            "PROBE_SCHEDULE": NEVER,
            "PYTHONUNBUFFERED": "1",
        }
        log = tempfile.NamedTemporaryFile(prefix="triggerhost-", suffix=".log", delete=False)  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "devtools.host", "--port", "0", "--root", str(self.app), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self.hosts.append(process)
        self._logs.append(log)
        assert process.stdout is not None
        watchdog = threading.Timer(WAIT_SECONDS, process.kill)
        watchdog.start()
        try:
            for line in process.stdout:
                if f"QueueProbe: [queue {self.queue_name}]" in line:
                    return process
        finally:
            watchdog.cancel()
        raise AssertionError(f"the dev host did not start: {Path(log.name).read_text()[-2000:]}")

    def send(self, **order: Any) -> None:
        self.queue.send_message(json.dumps(order))

    def poison(self) -> QueueClient:
        return QueueClient.from_connection_string(
            self.connection_string, self.queue_name + "-poison"
        )

    @staticmethod
    def holds_one(queue: QueueClient) -> Callable[[list[dict[str, Any]]], bool]:
        """A wait_for check: `queue` exists and holds one message."""

        def check(_: list[dict[str, Any]]) -> bool:
            try:
                return queue.get_queue_properties().approximate_message_count == 1
            except Exception:  # noqa: BLE001 - not created yet
                return False

        return check

    def events(self) -> list[dict[str, Any]]:
        path = self.folder / "events.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def wait_for(self, check: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            if check(self.events()):
                return
            time.sleep(0.05)
        raise AssertionError(f"not seen within {WAIT_SECONDS} s: {what}; events: {self.events()}")

    def close(self) -> None:
        for process in self.hosts:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        for log in self._logs:
            log.close()
            os.unlink(log.name)
        self.queue.delete_queue()
        self.queue.close()


@pytest.fixture
def probe(azurite: Azurite, tmp_path: Path) -> Iterator[Probe]:
    made = Probe(azurite, tmp_path)
    yield made
    made.close()


def app_with(tmp_path: Path, **queues: Any) -> Path:
    """A copy of the probe app whose host.json `extensions.queues` has these settings."""
    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__"))
    host = json.loads((app / "host.json").read_text())
    host["extensions"]["queues"].update(queues)
    (app / "host.json").write_text(json.dumps(host))
    return app


def done(events: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [e for e in events if e["key"] == key and e["event"] == "done"]


def test_a_message_is_processed_once_and_deleted(probe: Probe) -> None:
    probe.start_host()
    probe.send(key="one", action="ok")
    probe.wait_for(lambda events: bool(done(events, "one")), "one done")
    [finished] = done(probe.events(), "one")
    assert finished["dequeueCount"] == 1
    time.sleep(1.5)  # past the probe app's 1 s visibilityTimeout: a kept message would be back
    assert len([e for e in probe.events() if e["event"] == "start"]) == 1
    assert probe.queue.get_queue_properties().approximate_message_count == 0
    # The positive control: the same count sees a message that is still there.
    probe.queue.send_message("{}")
    assert probe.queue.get_queue_properties().approximate_message_count == 1
    probe.queue.clear_messages()


def test_a_failing_message_is_retried_then_moved_to_the_poison_queue(probe: Probe) -> None:
    probe.start_host()
    probe.send(key="bad", action="fail")
    poison = probe.poison()
    poisoned = probe.holds_one(poison)
    probe.wait_for(poisoned, "the message in the poison queue")
    attempts = [e["dequeueCount"] for e in probe.events() if e["event"] == "failed"]
    assert attempts == [1, 2, 3]  # maxDequeueCount 3 in the probe app's host.json
    starts = [e["time"] for e in probe.events() if e["event"] == "start"]
    # Each retry waits for the 1 s visibilityTimeout (a lower bound: a busy machine only adds).
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(starts))
    [moved] = poison.receive_messages()
    assert json.loads(base64.b64decode(moved.content)) == {"key": "bad", "action": "fail"}
    assert probe.queue.get_queue_properties().approximate_message_count == 0
    poison.delete_queue()
    poison.close()


def test_messages_run_at_most_batch_size_plus_the_threshold_at_once(probe: Probe) -> None:
    """batchSize 2 and newBatchThreshold 1 in the probe app: at most 3 at once, and 3 reached."""
    probe.start_host()
    keys = [f"hold-{i}" for i in range(9)]
    for index, key in enumerate(keys):
        # Uneven: a fetch happens while one of the batch still runs, as in any real queue.
        probe.send(key=key, action="hold", seconds=0.9 if index % 2 else 0.3)
    probe.wait_for(lambda events: all(done(events, k) for k in keys), "all held messages done")
    changes = sorted(
        (e["time"], 1 if e["event"] == "start" else -1)
        for e in probe.events()
        if e["event"] in ("start", "done")
    )
    running, most = 0, 0
    for _, change in changes:
        running += change
        most = max(most, running)
    assert most == 3


def test_a_wider_batch_runs_more_at_once(tmp_path: Path, azurite: Azurite) -> None:
    """The same probe, configured wider: the bound follows host.json."""
    probe = Probe(azurite, tmp_path, app_with(tmp_path, batchSize=4, newBatchThreshold=2))
    try:
        probe.start_host()
        keys = [f"wide-{i}" for i in range(12)]
        for index, key in enumerate(keys):
            probe.send(key=key, action="hold", seconds=0.9 if index % 2 else 0.3)
        probe.wait_for(lambda events: all(done(events, k) for k in keys), "all done")
        starts = sorted(e["time"] for e in probe.events() if e["event"] == "start")
        ends = sorted(e["time"] for e in probe.events() if e["event"] == "done")
        most = max(sum(s <= t for s in starts) - sum(e <= t for e in ends) for t in starts)
        assert 3 < most <= 6
    finally:
        probe.close()


def test_messages_sent_without_base64_are_read_with_encoding_none(
    tmp_path: Path, azurite: Azurite
) -> None:
    probe = Probe(azurite, tmp_path, app_with(tmp_path, messageEncoding="none"))
    try:
        probe.start_host()
        raw = QueueClient.from_connection_string(probe.connection_string, probe.queue_name)
        raw.send_message(json.dumps({"key": "plain", "action": "ok"}))  # no encode policy
        probe.wait_for(lambda events: bool(done(events, "plain")), "plain done")
        [start] = [e for e in probe.events() if e["event"] == "start"]
        assert json.loads(start["body"]) == {"key": "plain", "action": "ok"}
        raw.close()
    finally:
        probe.close()


def test_a_base64_app_fails_a_message_that_is_not_base64(probe: Probe) -> None:
    """The host's default encoding: raw text is a binding failure, retried, then poisoned."""
    probe.start_host()
    raw = QueueClient.from_connection_string(probe.connection_string, probe.queue_name)
    raw.send_message('{"key": "not-base64!"}')
    poison = probe.poison()
    poisoned = probe.holds_one(poison)
    probe.wait_for(poisoned, "the undecodable message in the poison queue")
    assert probe.events() == []  # the function never ran
    raw.close()
    poison.delete_queue()
    poison.close()


def test_two_hosts_never_both_complete_a_message(probe: Probe) -> None:
    probe.start_host()
    probe.start_host()
    keys = [f"shared-{i}" for i in range(30)]
    for key in keys:
        probe.send(key=key, action="hold", seconds=0.05)
    probe.wait_for(lambda events: all(done(events, k) for k in keys), "all shared messages done")
    events = probe.events()
    assert all(len(done(events, key)) == 1 for key in keys)
    assert all(e["dequeueCount"] == 1 for e in events)


def test_a_message_stays_invisible_while_its_function_runs(probe: Probe) -> None:
    """Received for 2 s and held for 3.5 s: renewed at half-life, so no other host sees it.
    (The next test is the control: without renewal, a message does reappear.)"""
    probe.start_host("--queue-receive-visibility", "2")
    probe.start_host("--queue-receive-visibility", "2")
    probe.send(key="long", action="hold", seconds=3.5)
    probe.wait_for(lambda events: bool(done(events, "long")), "long done")
    time.sleep(0.5)
    starts = [e for e in probe.events() if e["event"] == "start"]
    assert len(starts) == 1 and starts[0]["dequeueCount"] == 1


def test_a_killed_hosts_message_reappears_and_the_other_host_finishes_it(probe: Probe) -> None:
    first = probe.start_host("--queue-receive-visibility", "2")
    probe.send(key="orphan", action="block_first")
    probe.wait_for(
        lambda events: any(e["key"] == "orphan" and e["event"] == "start" for e in events),
        "the first host starting the message",
    )
    second = probe.start_host("--queue-receive-visibility", "2")
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    probe.wait_for(lambda events: bool(done(events, "orphan")), "the second host finishing it")
    [finished] = done(probe.events(), "orphan")
    assert finished["pid"] == second.pid and finished["dequeueCount"] == 2
    starts = [e for e in probe.events() if e["event"] == "start"]
    assert [e["pid"] for e in starts] == [first.pid, second.pid]


@pytest.fixture
def app_importable() -> Iterator[None]:
    """The probe app's folder on sys.path, as the dev host puts its root there."""
    sys.path.insert(0, str(APP))
    yield
    sys.path.remove(str(APP))


def test_without_storage_the_triggers_wait_and_say_why() -> None:
    """As the Functions host does, a queue or timer trigger needs its storage setting; the HTTP
    functions are served without it (tests/stack.py runs the dev host so)."""
    idle = discover_triggers(APP, settings={"PROBE_QUEUE": "q", "PROBE_SCHEDULE": NEVER})
    assert {(t.function, t.run, t.idle) for t in idle} == {
        ("QueueProbe", None, "not started: app setting AzureWebJobsStorage is unset"),
        ("TimerProbe", None, "not started: app setting AzureWebJobsStorage is unset"),
    }


@pytest.mark.usefixtures("app_importable")
def test_queue_names_come_from_app_settings(probe: Probe) -> None:
    """%PROBE_QUEUE% in function.json: the host printed and listens on the resolved name."""
    probe.start_host()
    probe.send(key="named", action="ok")
    probe.wait_for(lambda events: bool(done(events, "named")), "named done")
    with pytest.raises(ValueError, match="PROBE_QUEUE"):
        discover_triggers(APP, settings={"AzureWebJobsStorage": "x", "PROBE_SCHEDULE": NEVER})


@pytest.mark.usefixtures("app_importable")
def test_a_timer_fires_on_schedule_with_a_controllable_clock() -> None:
    """TimerProbe, found and scheduled from its function.json, on a clock the test moves."""
    start = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    settings = {
        "PROBE_SCHEDULE": "*/10 * * * * *",
        "PROBE_QUEUE": "unused",
        "AzureWebJobsStorage": "unused",
    }
    fired: list[bool] = importlib.import_module("TimerProbe").FIRED
    fired.clear()

    async def scenario() -> list[datetime]:
        clock = ManualClock(start)
        [timer] = [
            t
            for t in discover_triggers(APP, clock=clock, settings=settings)
            if t.function == "TimerProbe"
        ]
        assert timer.run is not None
        task = asyncio.create_task(timer.run())
        sleeps = [await clock.next_sleep()]
        for second in (10, 20):
            clock.advance_to(start.replace(second=second))
            sleeps.append(await clock.next_sleep())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return sleeps

    sleeps = asyncio.run(scenario())
    assert sleeps == [start.replace(second=s) for s in (10, 20, 30)]
    assert fired == [False, False]
