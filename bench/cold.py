"""1. Cold start: a fresh process until its first successful unassign, contenders interleaved."""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    CHILD_TIMEOUT_SECONDS,
    CONTENDERS,
    DEVICE_PATH,
    ROOT,
    Devices,
    Results,
    base_env,
    heading,
    ms,
    percentile,
    run_child,
    say,
)
from devtools.graph_emulator import GraphEmulator
from devtools.identity_emulator import IdentityEmulator

# Targets from the issue.
COLD_VS_SDK_MAX = 0.25
COLD_VS_FLOOR_MAX = 1.10


@dataclass(frozen=True)
class Contender:
    name: str
    python: Path
    script: str


def spread(values: Sequence[float]) -> str:
    return (
        f"median {ms(statistics.median(values)):>7}   min {ms(min(values)):>7}   "
        f"max {ms(max(values)):>7}   IQR {ms(percentile(values, 25))}-{ms(percentile(values, 75))}"
    )


def cold_start(
    contenders: Sequence[Contender],
    graph: GraphEmulator,
    identity: IdentityEmulator,
    runs: int,
    results: Results,
) -> None:
    heading(
        f"1. Cold start: a fresh process until its first successful unassign "
        f"({runs} runs each, interleaved, after 1 untimed warm-up round)"
    )
    devices = Devices(graph)
    env = base_env(graph, identity)
    reports: dict[str, list[dict[str, float]]] = {c.name: [] for c in contenders}
    for round_ in range(runs + 1):
        shift = round_ % len(contenders)
        order = [*contenders[shift:], *contenders[:shift]]
        for contender in order:
            device_id = devices.add()
            tokens_before = identity.token_requests
            run = run_child(
                contender.python,
                [str(CONTENDERS / contender.script)],
                dict(env, BENCH_DEVICE_ID=device_id),
            )
            calls = [r for r in graph.requests if r.path.startswith(DEVICE_PATH + device_id)]
            # Fair play: each contender fetched a token, sent it, and did the same two calls.
            assert identity.token_requests > tokens_before, f"{contender.name} fetched no token"
            assert [c.method for c in calls] == ["GET", "POST"], (contender.name, calls)
            assert all(c.token for c in calls), f"{contender.name} sent no token"
            assert devices.unassigned(device_id), f"{contender.name} did not unassign"
            if round_ == 0:
                continue
            report = dict(run.report)
            report["ready_s"] = report["done_at"] - run.spawned_at
            report["wall_s"] = run.wall_s
            reports[contender.name].append(report)

    say("   spawn -> first unassign done (the figure the targets use):")
    for name, rows in reports.items():
        say(f"   {name:<12} {spread([r['ready_s'] for r in rows])}")
    say("   spawn -> process exit:")
    for name, rows in reports.items():
        say(f"   {name:<12} {spread([r['wall_s'] for r in rows])}")
    say("   where the time goes (medians): host preload | contender's imports | first call")
    for name, rows in reports.items():
        parts = [statistics.median(r[key] for r in rows) for key in ("host_import_s", "import_s")]
        first = statistics.median(r["first_call_s"] for r in rows)
        say(f"   {name:<12} {ms(parts[0]):>7} | {ms(parts[1]):>7} | {ms(first):>7}")
    say("   CPU time, user + system (median of each process's own getrusage):")
    for name, rows in reports.items():
        say(f"   {name:<12} {ms(statistics.median(r['cpu_s'] for r in rows)):>7}")
    say("   peak RSS (median of each process's own high-water mark, VmHWM):")
    for name, rows in reports.items():
        rss = statistics.median(r["rss_kib"] for r in rows)
        results.rss_kib[name] = rss
        say(f"   {name:<12} {rss / 1024:.1f} MiB")

    median = {name: statistics.median(r["ready_s"] for r in rows) for name, rows in reports.items()}
    vs_sdk = median["ours"] / median["msgraph-sdk"]
    vs_floor = median["ours"] / median["floor"]
    say(
        f"   ratios of medians: ours/msgraph-sdk = {vs_sdk:.3f} (1/{1 / vs_sdk:.1f}), "
        f"ours/floor = {vs_floor:.3f}"
    )
    results.add(
        "cold start at most 1/4 of msgraph-sdk's",
        f"{ms(median['ours'])} vs {ms(median['msgraph-sdk'])} = {vs_sdk:.3f}x",
        vs_sdk <= COLD_VS_SDK_MAX,
    )
    results.add(
        "cold start within 1.1x of the floor",
        f"{ms(median['ours'])} vs {ms(median['floor'])} = {vs_floor:.3f}x",
        vs_floor <= COLD_VS_FLOOR_MAX,
    )


def import_profile(python: Path, graph: GraphEmulator, identity: IdentityEmulator) -> None:
    """Where our cold start's import time goes, from ``python -X importtime`` (one extra run)."""
    heading("1b. What our cold start imports (python -X importtime, one extra run)")
    device_id = Devices(graph).add()
    env = dict(base_env(graph, identity), BENCH_DEVICE_ID=device_id)
    done = subprocess.run(  # noqa: S603 - our own interpreter and script
        [str(python), "-X", "importtime", str(CONTENDERS / "ours_cold.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        check=True,
    )
    groups: dict[str, list[tuple[int, str]]] = {"host": [], "module": [], "call": []}
    group = "host"
    cumulative_of: dict[str, int] = {}
    own_code = 0  # self time of our own modules
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        head, cumulative, name = line.split("|")
        self_us = head.split(":")[1]
        module = name.strip()
        cumulative_of.setdefault(module, int(cumulative))
        if module.split(".")[0] in ("shared", "UnassignUser"):
            own_code += int(self_us)
        if len(name) - len(name.lstrip()) == 1:  # imported by the script or the first call
            if module == "UnassignUser":
                groups["module"].append((int(cumulative), module))
                group = "call"
            else:
                groups[group].append((int(cumulative), module))
    labels = {
        "host": "before the function module (the host's preload and the script's own)",
        "module": "importing the function module",
        "call": "imported during the first call",
    }
    for key, entries in groups.items():
        total = sum(micros for micros, _ in entries)
        largest = ", ".join(
            f"{n} {us / 1000:.0f} ms" for us, n in sorted(entries, reverse=True)[:5]
        )
        say(f"   {total / 1000:6.0f} ms {labels[key]}: {largest}")
    say("   inside the function module (cumulative, as first imported there):")
    for module in ("shared.handler", "shared.caller_auth", "jwt", "shared.bulk", "shared.graph",
                   "httpx"):  # fmt: skip
        if module in cumulative_of:
            say(f"   {cumulative_of[module] / 1000:6.1f} ms  {module}")
    say(f"   {own_code / 1000:6.1f} ms  our own modules (shared.*, UnassignUser), self time only")
