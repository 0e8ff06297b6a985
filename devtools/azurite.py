"""Azurite, Microsoft's Azure Storage emulator (blobs, queues, tables), for the dev host and tests.

Azurite is a Node package pinned in package.json / package-lock.json and installed into
node_modules like the rest of the Node tooling (`make` does it; `ensure_installed` does the same
for a test run or `python -m devtools.run` on its own). Each `Azurite` is its own process on its
own ports, with its data in a fresh temporary folder that `stop()` removes:

    with Azurite() as storage:
        QueueClient.from_connection_string(storage.connection_string, "jobs")

The ports are chosen by the operating system (Azurite is started with port 0 and reports the
ports it bound), so two instances, or an instance and anything else, never race for a port.
Requests authenticate with the well-known development account below, as they do with Azurite
anywhere.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

ROOT = Path(__file__).resolve().parent.parent
# Azurite's (and the legacy storage emulator's) well-known development account, published by
# Microsoft: it works only against an emulator, never against Azure.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
SERVICES = ("blob", "queue", "table")
EXECUTABLE = Path("node_modules", ".bin", "azurite")
# The Makefile's stamp: package-lock.json installed as it is now (npm ci empties node_modules
# first, so a failed install leaves none).
INSTALL_STAMP = Path("node_modules", ".installed")
NPM_CI = ("npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
INSTALL_TIMEOUT_SECONDS = 600.0
STARTUP_TIMEOUT_SECONDS = 30.0  # a loose bound for a busy machine; it starts in about a second
STOP_TIMEOUT_SECONDS = 10.0
_LISTENING = re.compile(
    r"Azurite (Blob|Queue|Table) service is successfully listening at https?://\S+:(\d+)"
)


def ensure_installed(root: Path = ROOT) -> Path:
    """Install package-lock.json with npm ci unless it already is; return Azurite's executable.

    Installs when the executable is missing, or, like the Makefile's rule, when the stamp is
    missing or older than package-lock.json.
    """
    executable = root / EXECUTABLE
    stamp = root / INSTALL_STAMP
    lock = root / "package-lock.json"
    if executable.exists() and stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return executable
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to install Azurite (package-lock.json); none on PATH")
    result = subprocess.run(
        [npm, *NPM_CI[1:]],
        cwd=root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0 or not executable.exists():
        raise RuntimeError(
            f"`{' '.join(NPM_CI)}` failed (exit {result.returncode}):\n"
            f"{result.stdout}{result.stderr}"
        )
    stamp.touch()
    return executable


class Azurite:
    """One Azurite process: blob, queue and table services on free loopback ports.

    `start()` (or `with`) returns once all three services accept connections; `stop()` ends the
    process it started and removes its data.
    """

    def __init__(
        self,
        root: Path = ROOT,
        *,
        host: str = "127.0.0.1",
        startup_timeout: float = STARTUP_TIMEOUT_SECONDS,
    ) -> None:
        self._executable = root / EXECUTABLE
        self._host = host
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._folder: Path | None = None
        self._log: IO[bytes] | None = None
        self._ports: dict[str, int] = {}

    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError("Azurite is already running")
        if not self._executable.exists():
            raise RuntimeError(
                f"{EXECUTABLE} is missing: install it with devtools.azurite.ensure_installed()"
            )
        self._folder = Path(tempfile.mkdtemp(prefix="azurite-"))
        data = self._folder / "data"
        data.mkdir()
        self._log = (self._folder / "azurite.log").open("w+b")
        command = [
            str(self._executable),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--location",
            str(data),
        ]
        for service in SERVICES:
            command += [f"--{service}Host", self._host, f"--{service}Port", "0"]
        try:
            # Its own process group: Ctrl+C in a terminal reaches the owner, which stops it.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._ports = self._wait_until_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _output(self) -> str:
        if self._folder is None:
            return ""
        return (self._folder / "azurite.log").read_text(errors="replace")

    def _wait_until_listening(self) -> dict[str, int]:
        assert self._process is not None
        deadline = time.monotonic() + self._startup_timeout
        while True:
            output = self._output()
            ports = {m[1].lower(): int(m[2]) for m in _LISTENING.finditer(output)}
            if len(ports) == len(SERVICES) and all(map(self._accepts, ports.values())):
                return ports
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"Azurite exited (code {self._process.returncode}) before it listened:\n"
                    f"{output}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Azurite did not listen within {self._startup_timeout:g} s:\n{output}"
                )
            time.sleep(0.05)

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self._host, port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """End the process this instance started (its group, by id), wait, remove its data."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # Not yet reaped, so its id (and its group's, the same) is still this process's.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log, self._log = self._log, None
        if log is not None:
            log.close()
        folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        self._ports = {}

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The Azurite process's id while it runs (it leads its own process group)."""
        return None if self._process is None else self._process.pid

    @property
    def data_folder(self) -> Path | None:
        """Where Azurite keeps its data while it runs (a temporary folder, removed on stop)."""
        return None if self._folder is None else self._folder / "data"

    def _port(self, service: str) -> int:
        if not self._ports:
            raise RuntimeError("Azurite is not running")
        return self._ports[service]

    @property
    def blob_port(self) -> int:
        return self._port("blob")

    @property
    def queue_port(self) -> int:
        return self._port("queue")

    @property
    def table_port(self) -> int:
        return self._port("table")

    def _endpoint(self, service: str) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port(service)}/{ACCOUNT_NAME}"

    @property
    def blob_endpoint(self) -> str:
        return self._endpoint("blob")

    @property
    def queue_endpoint(self) -> str:
        return self._endpoint("queue")

    @property
    def table_endpoint(self) -> str:
        return self._endpoint("table")

    @property
    def connection_string(self) -> str:
        """The full form, every endpoint explicit (`UseDevelopmentStorage=true` means fixed ports)."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};QueueEndpoint={self.queue_endpoint};"
            f"TableEndpoint={self.table_endpoint};"
        )
