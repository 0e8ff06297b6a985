"""The deadline holds even against a server that trickles its answer (a real socket)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from shared.graph import AUTOPILOT, Call, GraphClient
from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.retry import Deadline
from shared.settings import load_settings
from tests.fakes import CountingCredential, credential_factory


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


def test_a_trickling_answer_cannot_hold_a_request_past_its_deadline(
    trickling_server: str,
) -> None:
    settings = load_settings({"GRAPH_ENDPOINT": trickling_server})
    tokens = TokenProvider(settings, credential_factory=credential_factory(CountingCredential()))

    async def go() -> Problem:
        client = GraphClient(settings, tokens)
        call = Call(Deadline.after(2.0, time.monotonic), "c")
        try:
            await client.call("GET", f"{AUTOPILOT}/x", call)
        except Problem as problem:
            return problem
        finally:
            await client.aclose()
        raise AssertionError("a trickling answer was accepted")

    started = time.monotonic()
    problem = asyncio.run(go())
    assert problem.failure is Failure.GRAPH_UNREACHABLE and problem.status == 504
    assert time.monotonic() - started < 15  # liveness only: without the bound it takes 200 s
