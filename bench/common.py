"""What every benchmark module shares: printing, targets, settings for child processes, fresh
devices in the Graph emulator, and the dev host in a process of its own."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.graph_emulator import GraphEmulator
from devtools.identity_emulator import IdentityEmulator

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ROOT / "bench" / "contenders"
CHILD_TIMEOUT_SECONDS = 300.0
DEVICE_PATH = "/v1.0/deviceManagement/windowsAutopilotDeviceIdentities/"
# Settings of the function that the benchmark sets itself; anything else from the caller's
# environment (or a developer's local.settings.json) must not change what is measured.
FUNCTION_SETTINGS = (
    "GRAPH_ENDPOINT",
    "UNASSIGN_DEADLINE_SECONDS",
    "BULK_DEADLINE_SECONDS",
    "GRAPH_WRITES_PER_WINDOW",
    "GRAPH_WRITE_WINDOW_SECONDS",
    "AZURE_CLIENT_ID",
    "GRAPH_CREDENTIAL",
)
# Our client-side pace set wide open where the limit is not what is measured (at most 10,000 writes
# per 0.1 s: never reached here).
OPEN_PACE = {"GRAPH_WRITES_PER_WINDOW": "10000", "GRAPH_WRITE_WINDOW_SECONDS": "0.1"}

# "Few 429s", made a number: at most one per 100 writes.
FEW_429S = 0.01


# ── small helpers ───────────────────────────────────────────────────────────────────────────────


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"== {text}")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.2f} ms"


def ms2(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear between the closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


@dataclass
class Target:
    name: str
    figure: str
    ok: bool


@dataclass
class Results:
    targets: list[Target] = field(default_factory=list)
    rss_kib: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, figure: str, ok: bool) -> None:
        self.targets.append(Target(name, figure, ok))
        say(f"   target: {name}: {figure} -> {met(ok)}")


# ── child processes ─────────────────────────────────────────────────────────────────────────────


def base_env(graph: GraphEmulator, identity: IdentityEmulator, **settings: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in FUNCTION_SETTINGS
        and not key.startswith(
            ("IDENTITY_", "MSI_", "IMDS_", "CALLER_", "BENCH_", "PYTHON", "JOB_", "AzureWebJobs")
        )
    }
    env.update(
        GRAPH_ENDPOINT=graph.base_url,
        IDENTITY_ENDPOINT=identity.endpoint,
        IDENTITY_HEADER=identity.identity_header,
        CALLER_TENANT_ID="",  # function keys only, whatever local.settings.json says
    )
    env.update(settings)
    return env


@dataclass(frozen=True)
class ChildRun:
    report: dict[str, Any]
    wall_s: float  # spawn to exit, measured here
    spawned_at: float  # this process's perf_counter at the spawn (same clock as the child's)


def run_child(python: Path, args: Sequence[str], env: dict[str, str]) -> ChildRun:
    spawned_at = time.perf_counter()
    env = dict(env, BENCH_SPAWN_AT=repr(spawned_at))
    done = subprocess.run(  # noqa: S603 - our own interpreter and scripts
        [str(python), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )
    wall = time.perf_counter() - spawned_at
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{python} {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return ChildRun(json.loads(lines[-1]), wall, spawned_at)


class Devices:
    """Fresh assigned devices, so that every timed call really unassigns someone."""

    def __init__(self, graph: GraphEmulator) -> None:
        self.graph = graph

    def add(self) -> str:
        device_id = str(uuid.uuid4())
        self.graph.add_device(
            device_id,
            f"BENCH{device_id[:8].upper()}",
            f"user.{device_id[:8]}@contoso.example",
            "Bench User",
        )
        return device_id

    def many(self, count: int, folder: Path) -> Path:
        ids = [self.add() for _ in range(count)]
        path = folder / f"devices-{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(ids))
        return path

    def unassigned(self, device_id: str) -> bool:
        device = self.graph.device(device_id)
        return device is not None and device["userPrincipalName"] == ""


@contextlib.contextmanager
def dev_host(
    env: dict[str, str], scratch: Path, *args: str, name: str = "devhost"
) -> Iterator[str]:
    """The dev host (``devtools.host``, given ``args``) in its own process; yields its base URL.
    Its log goes to ``<scratch>/<name>.log``."""
    log_path = scratch / f"{name}.log"
    log = log_path.open("w")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and dev host
        [sys.executable, "-m", "devtools.host", "--port", "0", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        base = ""
        for line in process.stdout:
            if line.startswith("Dev host listening on "):
                base = line.split()[-1]
                break
        if not base:
            raise RuntimeError(f"the dev host {name} did not start:\n{log_path.read_text()}")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        log.close()


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
