"""Shared test set-up: hypothesis profiles that cannot flake, and the end-to-end stack."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator

import hypothesis.core
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.internal.conjecture import engine as hypothesis_engine
from hypothesis.strategies._internal import collections as hypothesis_collections
from hypothesis.vendor import pretty as hypothesis_pretty
from schemathesis.generation.hypothesis import setup as schemathesis_setup

from devtools.azurite import Azurite, ensure_installed
from devtools.graph_emulator import GraphEmulator
from devtools.identity_emulator import IdentityEmulator
from tests.stack import Stack

# schemathesis (tests/test_definition_fuzz_e2e.py) is a pytest plugin, so it is imported into every
# run, and on import it tunes Hypothesis for its own speed: a printer that prints nothing (every
# failing example would show as `x=,`) and a buffer four times Hypothesis' own. Let it do so now
# (it does it once), then put Hypothesis' own back, so every test shows its failing example and
# draws its examples as it does without schemathesis.
HYPOTHESIS_BUFFER_SIZE = 8 * 1024  # hypothesis.internal.conjecture.engine.BUFFER_SIZE as released
schemathesis_setup()
hypothesis.core.RepresentationPrinter = hypothesis_pretty.RepresentationPrinter  # type: ignore[attr-defined]
for _module in (hypothesis.core, hypothesis_engine, hypothesis_collections):
    _module.BUFFER_SIZE = HYPOTHESIS_BUFFER_SIZE  # type: ignore[attr-defined]

# Derandomized and without per-example deadlines: the same examples on every run, however loaded
# the machine is. `HYPOTHESIS_PROFILE=explore` searches afresh with more examples.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None, max_examples=10000)
# The Graph fault suite (tests/test_faults_e2e.py): each example is a few real requests with
# retries, so few examples, the same ones on every run: well under a minute on two busy cores.
settings.register_profile(
    "faults",
    derandomize=True,
    deadline=None,
    max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# End to end: emulators in this process, the dev host in its own.


@pytest.fixture(scope="session")
def _graph_emulator() -> Iterator[GraphEmulator]:
    with GraphEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="session")
def _identity_emulator() -> Iterator[IdentityEmulator]:
    with IdentityEmulator() as emulator:
        yield emulator


@pytest.fixture
def graph(_graph_emulator: GraphEmulator) -> GraphEmulator:
    """The Graph emulator, back to its seeded devices with no faults and an empty log."""
    _graph_emulator.reset()
    return _graph_emulator


@pytest.fixture
def identity(_identity_emulator: IdentityEmulator) -> IdentityEmulator:
    _identity_emulator.reset()
    return _identity_emulator


@pytest.fixture(scope="session")
def _shared_stack(
    _graph_emulator: GraphEmulator, _identity_emulator: IdentityEmulator
) -> Iterator[Stack]:
    stack = Stack(_graph_emulator, _identity_emulator)
    yield stack
    stack.close()


@pytest.fixture
def stack(_shared_stack: Stack, graph: GraphEmulator, identity: IdentityEmulator) -> Stack:
    """A warm dev host (its token may already be cached) against freshly reset emulators."""
    return _shared_stack


@pytest.fixture
def fresh_stack(graph: GraphEmulator, identity: IdentityEmulator) -> Iterator[Callable[..., Stack]]:
    """Start a new dev host process (a cold start) with extra or removed settings."""
    started: list[Stack] = []

    def start(*host_args: str, **settings: str | None) -> Stack:
        stack = Stack(graph, identity, *host_args, **settings)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.close()


@pytest.fixture
def trickling_server() -> Iterator[str]:
    """Answers every request with headers, then one body byte every 0.2 s, for a long time."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            )
            for _ in range(1000):
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """A real Azurite (blob, queue, table) on free ports for the whole run, installed if needed."""
    ensure_installed()
    with Azurite() as storage:
        yield storage
