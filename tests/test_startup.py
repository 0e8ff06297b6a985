"""What the function imports is kept out of garbage collections (shared.startup).

The probes that count frozen objects run in a fresh interpreter, since freezing is for the life
of a process.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from pathlib import Path

from shared.startup import loading

ROOT = Path(__file__).resolve().parent.parent


def printed_after(code: str, report: str) -> str:
    """What a fresh interpreter prints with `report` after running `code`."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nprint({report})"],
        cwd=ROOT,
        env={"IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token", "IDENTITY_HEADER": "h"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def frozen_after(code: str) -> int:
    """How many objects the collector has set aside for good after running `code`."""
    return int(printed_after(f"import gc\n{code}", "gc.get_freeze_count()").split()[-1])


def test_importing_the_function_sets_what_it_loaded_aside() -> None:
    assert frozen_after("import UnassignUser") > 10_000
    assert frozen_after("import BulkUnassignUser") > 10_000
    # Positive control: the same probe sees nothing set aside after the same libraries alone.
    assert frozen_after("import azure.functions, httpx") == 0


def test_the_first_credential_sets_azure_identity_aside_too() -> None:
    imported = frozen_after("import UnassignUser\nimport azure.identity")
    credential = (
        "import UnassignUser\n"
        "from shared.identity import make_credential\n"
        "from shared.settings import load_settings\n"
        "make_credential(load_settings({}), lambda status: None)"
    )
    assert frozen_after(credential) > imported + 10_000


def test_the_collector_is_paused_while_loading_and_runs_again_after() -> None:
    assert gc.isenabled()
    with loading():
        assert not gc.isenabled()
        with loading():  # nested
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    # An import that fails still gives the collector back.
    try:
        with loading():
            raise ImportError("no such module")
    except ImportError:
        pass
    assert gc.isenabled()


def test_overlapping_loads_on_two_threads_leave_the_collector_running() -> None:
    first_in, second_done = threading.Event(), threading.Event()

    def first() -> None:
        with loading():
            first_in.set()
            second_done.wait(30)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_in.wait(30)
    with loading():
        assert not gc.isenabled()
    assert not gc.isenabled()  # the first thread is still loading
    second_done.set()
    thread.join(30)
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with loading():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


DEV_ONLY = ("devtools", "azure.storage", "azure.data", "aiohttp", "uvicorn")


def loaded_after(code: str) -> set[str]:
    """Which dev-only modules a fresh interpreter has loaded after running `code`."""
    printed = printed_after(f"import sys\n{code}", "' '.join(sorted(sys.modules))")
    return {name for name in printed.split() if name.startswith(DEV_ONLY)}


def test_the_functions_never_load_the_dev_hosts_trigger_machinery() -> None:
    """Queue and timer triggers are the dev host's: cold start and per-request cost stay as
    they were."""
    assert loaded_after("import UnassignUser, BulkUnassignUser") == set()
    # Positive control: the same probe sees them when the dev host's machinery is imported.
    seen = loaded_after("import devtools.queues, devtools.timers, azure.storage.queue.aio")
    assert {"devtools.queues", "devtools.timers", "azure.storage.queue.aio"} <= seen
