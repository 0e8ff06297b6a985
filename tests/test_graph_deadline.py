"""The deadline holds even against a server that trickles its answer (a real socket)."""

from __future__ import annotations

import asyncio
import time

from shared.graph import AUTOPILOT, Call, GraphClient
from shared.identity import TokenProvider
from shared.problems import Failure, Problem
from shared.retry import Deadline
from shared.settings import load_settings
from tests.fakes import CountingCredential, credential_factory


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
