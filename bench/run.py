"""`make bench`: our function next to msgraph-sdk and a hand-written floor, and a bulk job at
Intune's ceiling, on local emulators.

    python -m bench.run [--only cold,warm,tokens,throughput,footprint,jobs] [--runs 20]
                        [--iterations 2000] [--window 2] [--parallel 1,10]
                        [--job-devices 10000] [--help for the rest]

Each measure has its own module:

1. bench/cold.py: cold start, a fresh process until its first successful unassign (read, then
   unassign), three contenders interleaved, one untimed warm-up round first.
2. bench/per_request.py: p50 and p99 in a warm process, each contender next to raw httpx.
3. bench/tokens.py: identity-endpoint requests per 1,000 calls, after a cold burst of 50.
4. bench/throughput.py: 1,000 devices in bulk calls of 100 through the dev host, against an
   emulator enforcing the write limit; items resent as the answers ask until all are done.
5. bench/footprint.py: installed size of the runtime requirements and of msgraph-sdk; peak RSS
   from (1).
6. bench/jobs.py: a 10,000-device job worked by two worker processes on Azurite against a
   Graph emulator at 100 writes per 2 s, and the job worker's cold start.

The Graph and identity emulators run on loopback threads in this process; contenders are child
processes pointed at them through the same settings the function reads in Azure. msgraph-sdk gets
its own environment (.venv-sdk, from bench/requirements-sdk.txt); our cold starts run in a
temporary environment holding only requirements.txt, as Azure would install it. Figures are
printed with their ratios and the targets they are held to; nothing here fails on a timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.cold import Contender, cold_start, import_profile
from bench.common import ROOT, Results, heading, machine, met, say
from bench.environments import (
    RUNTIME_REQUIREMENTS,
    SDK_VENV,
    ensure_sdk_env,
    make_venv,
    pip_install,
    sdk_versions,
    venv_python,
)
from bench.footprint import bare_site_packages_size, footprint, footprints
from bench.jobs import JobShape, jobs
from bench.per_request import per_request
from bench.throughput import throughput
from bench.tokens import token_reuse
from devtools.graph_emulator import GraphEmulator
from devtools.identity_emulator import IdentityEmulator

SECTIONS = ("cold", "warm", "tokens", "throughput", "footprint", "jobs")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20, help="cold starts per contender (>= 10)")
    parser.add_argument("--iterations", type=int, default=2000, help="timed warm calls each")
    parser.add_argument("--warmup", type=int, default=200, help="untimed warm calls first")
    parser.add_argument("--calls", type=int, default=1000, help="calls for token reuse")
    parser.add_argument("--burst", type=int, default=50, help="concurrent calls in the cold burst")
    parser.add_argument("--devices", type=int, default=1000, help="devices for throughput")
    parser.add_argument("--batch", type=int, default=100, help="devices per bulk call")
    parser.add_argument(
        "--parallel",
        default="1,10",
        help="bulk calls in flight at once; a comma-separated list runs each (default 1,10)",
    )
    parser.add_argument("--limit", type=int, default=100, help="writes per window (Intune: 100)")
    parser.add_argument("--window", type=float, default=2.0, help="seconds (Intune: 20)")
    parser.add_argument(
        "--pace-window",
        type=float,
        default=None,
        help="the function's GRAPH_WRITE_WINDOW_SECONDS, if not --window (to try a margin)",
    )
    parser.add_argument("--job-devices", type=int, default=10_000, help="devices in the job")
    parser.add_argument("--job-limit", type=int, default=100, help="Graph's writes per window")
    parser.add_argument("--job-window", type=float, default=2.0, help="seconds (Intune: 20)")
    parser.add_argument(
        "--job-budget", type=int, default=80, help="JOB_WRITES_PER_WINDOW (default: the app's)"
    )
    parser.add_argument("--job-workers", type=int, default=2, help="worker processes")
    parser.add_argument("--worker-runs", type=int, default=10, help="worker cold starts")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})",
    )
    args = parser.parse_args(argv)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if unknown := only - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    try:
        parallels = [int(n) for n in args.parallel.split(",")]
    except ValueError:
        parser.error("--parallel takes whole numbers separated by commas")
    if args.runs < 1 or args.iterations < 2 or min(parallels) < 1:
        parser.error("--runs must be at least 1 and --iterations at least 2")
    if not 1 <= args.job_devices <= 10_000 or not 1 <= args.job_budget <= 1_000:
        parser.error("--job-devices must be 1 to 10,000 (a job's limit), --job-budget 1 to 1,000")
    if args.job_limit < 1 or not args.job_window > 0 or args.job_workers < 1:
        parser.error("--job-limit and --job-workers must be at least 1, --job-window positive")
    if args.worker_runs < 1:
        parser.error("--worker-runs must be at least 1")

    started = time.perf_counter()
    say(f"Benchmark of {ROOT.name}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    say(f"Machine: {machine()}")
    say(f"Load average at the start: {' '.join(f'{n:.2f}' for n in os.getloadavg())}")
    say("Command: " + " ".join(["python -m bench.run", *(sys.argv[1:] if argv is None else argv)]))
    results = Results()
    sdk_python = ensure_sdk_env() if only & {"cold", "warm", "footprint"} else None
    if sdk_python is not None:
        say("msgraph-sdk environment: " + sdk_versions(sdk_python))
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        scratch = Path(tmp)
        runtime = scratch / "runtime"
        if only & {"cold", "footprint", "jobs"}:
            say("Creating a temporary venv holding only requirements.txt (as Azure installs it)")
            make_venv(runtime)
            pip_install(runtime, RUNTIME_REQUIREMENTS)
        with GraphEmulator(seed=False) as graph, IdentityEmulator() as identity:
            say(f"Emulators on loopback: Graph {graph.base_url}, identity {identity.endpoint}")
            if "cold" in only and sdk_python is not None:
                contenders = [
                    Contender("ours", venv_python(runtime), "ours_cold.py"),
                    Contender("floor", venv_python(runtime), "floor_cold.py"),
                    Contender("msgraph-sdk", sdk_python, "sdk_cold.py"),
                ]
                cold_start(contenders, graph, identity, args.runs, results)
                import_profile(venv_python(runtime), graph, identity)
            if "warm" in only and sdk_python is not None:
                per_request(
                    Path(sys.executable), sdk_python, graph, identity,
                    args.warmup, args.iterations, scratch, results,
                )  # fmt: skip
            if "tokens" in only:
                token_reuse(
                    Path(sys.executable), graph, identity, args.calls, args.burst, scratch, results
                )
            if "throughput" in only:
                throughput(
                    identity, args.devices, args.batch, parallels, args.limit, args.window,
                    args.pace_window or args.window, scratch, results,
                )  # fmt: skip
            if "footprint" in only:
                bare = bare_site_packages_size(scratch)
                footprints(footprint(runtime, bare), footprint(SDK_VENV, bare), results)
            if "jobs" in only:
                shape = JobShape(
                    args.job_devices, args.job_limit, args.job_window, args.job_budget,
                    args.job_workers,
                )  # fmt: skip
                jobs(shape, venv_python(runtime), identity, args.worker_runs, scratch, results)

    heading("Targets")
    width = max(len(t.name) for t in results.targets)
    for target in results.targets:
        say(f"   {met(target.ok):<8} {target.name:<{width}}  {target.figure}")
    say()
    say(f"Load average at the end: {' '.join(f'{n:.2f}' for n in os.getloadavg())}")
    say(f"Benchmark finished in {time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
