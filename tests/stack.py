"""The dev host in its own process, wired to emulators running in the test process.

Tests talk to the function over real sockets exactly as a flow would, and inspect what reached
Graph and the identity endpoint through the emulators' own records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx

from devtools.graph_emulator import GraphEmulator
from devtools.identity_emulator import IdentityEmulator

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 60.0  # a loose liveness bound for a busy machine
AUDIT_LOGGER = " autopilot.audit "
SETTINGS = ("GRAPH_ENDPOINT", "UNASSIGN_DEADLINE_SECONDS", "AZURE_CLIENT_ID", "GRAPH_CREDENTIAL")


class Stack:
    def __init__(
        self,
        graph: GraphEmulator,
        identity: IdentityEmulator,
        *host_args: str,
        **settings: str | None,
    ) -> None:
        self.graph = graph
        self.identity = identity
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in SETTINGS and not k.startswith("IDENTITY_")
        }
        env.update(
            GRAPH_ENDPOINT=graph.base_url,
            IDENTITY_ENDPOINT=identity.endpoint,
            IDENTITY_HEADER=identity.identity_header,
            UNASSIGN_DEADLINE_SECONDS="4",
            PYTHONUNBUFFERED="1",
        )
        for key, value in settings.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        # The log outlives this method: close() closes and removes it.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="devhost-", suffix=".log", delete=False
        )
        self._process = subprocess.Popen(
            [sys.executable, "-m", "devtools.host", "--port", "0", *host_args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.base_url = self._wait_until_listening()
        from tests.contract import hook

        self.client = httpx.Client(
            base_url=self.base_url, timeout=60.0, event_hooks={"response": [hook]}
        )

    def _wait_until_listening(self) -> str:
        assert self._process.stdout is not None
        # A host that hangs without printing must not hang the test run: kill it after the bound.
        watchdog = threading.Timer(STARTUP_TIMEOUT_SECONDS, self._process.kill)
        watchdog.start()
        try:
            for line in self._process.stdout:
                if line.startswith("Dev host listening on "):
                    return line.split()[-1]
        finally:
            watchdog.cancel()
        self.close()
        raise RuntimeError(f"dev host did not start:\n{self.log_text()}")

    def post(self, path: str = "/api/UnassignUser", **kwargs: Any) -> httpx.Response:
        return self.client.post(path, **kwargs)

    def log_text(self) -> str:
        return Path(self._log.name).read_text()

    def audit(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            if AUDIT_LOGGER in line:
                records.append(json.loads(line.split(AUDIT_LOGGER, 1)[1]))
        return records

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._log.close()
        os.unlink(self._log.name)
