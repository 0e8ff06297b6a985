"""A process makes its job services and job worker once, however many threads ask at once.

The queue trigger runs up to batchSize + newBatchThreshold messages at the same moment, and each
asks for the worker from a thread of its own: without the lock each could make a worker, with a
Graph client and a token fetch of its own.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType

import pytest

from shared.jobs import api, runtime

THREADS = 8
WAIT_SECONDS = 30.0  # liveness only


@pytest.mark.parametrize(
    ("module", "cached", "maker", "getter"),
    [
        (runtime, "_worker", "_make_worker", "default_worker"),
        (api, "_jobs", "_make_jobs", "default_jobs"),
    ],
)
def test_made_once_when_threads_ask_together(
    module: ModuleType, cached: str, maker: str, getter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []
    making = threading.Event()
    gate = threading.Event()
    asked = threading.Semaphore(0)

    def make() -> object:
        made.append(object())
        making.set()
        assert gate.wait(WAIT_SECONDS)
        return made[-1]

    def ask() -> object:
        asked.release()
        return getattr(module, getter)()

    monkeypatch.setattr(module, cached, None)
    monkeypatch.setattr(module, maker, make)
    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(ask) for _ in range(THREADS)]
        for _ in range(THREADS):
            assert asked.acquire(timeout=WAIT_SECONDS)  # every thread is asking
        assert making.wait(WAIT_SECONDS)
        gate.set()
        got = {id(future.result(timeout=WAIT_SECONDS)) for future in futures}
    assert len(made) == 1
    assert got == {id(made[0])}
    # Positive control: the same probe sees a second making once the process's copy is gone.
    monkeypatch.setattr(module, cached, None)
    getattr(module, getter)()
    assert len(made) == 2
