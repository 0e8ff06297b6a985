"""What the function imports is kept out of later garbage collections (shared.startup).

Each probe runs in a fresh interpreter, since freezing is for the life of a process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def frozen_after(code: str) -> int:
    """How many objects the collector has set aside for good after running `code`."""
    probe = f"import gc\n{code}\nprint(gc.get_freeze_count())"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={"IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token", "IDENTITY_HEADER": "h"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return int(done.stdout.split()[-1])


def test_importing_the_function_sets_what_it_loaded_aside() -> None:
    assert frozen_after("import UnassignUser") > 10_000
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
