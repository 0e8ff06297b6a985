"""3. Token reuse: identity-endpoint requests per 1,000 calls, after a cold burst."""

from __future__ import annotations

from pathlib import Path

from bench.common import OPEN_PACE, Devices, Results, base_env, heading, run_child, say
from devtools.graph_emulator import GraphEmulator
from devtools.identity_emulator import IdentityEmulator


def token_reuse(
    python: Path,
    graph: GraphEmulator,
    identity: IdentityEmulator,
    calls: int,
    burst: int,
    scratch: Path,
    results: Results,
) -> None:
    heading(f"3. Token reuse: identity-endpoint requests for {calls} calls in one process")
    devices_file = Devices(graph).many(calls, scratch)
    env = base_env(
        graph,
        identity,
        BENCH_DEVICES_FILE=str(devices_file),
        BENCH_BURST=str(burst),
        BENCH_CALLS=str(calls),
        BENCH_IDENTITY_STATS=f"{identity.base_url}/_emulator/stats",
        **OPEN_PACE,
    )
    report = run_child(python, ["-m", "bench.contenders.ours_tokens"], env).report
    say(
        f"   cold burst of {burst} concurrent calls: {report['burst_token_requests']} token request(s)"
    )
    say(
        f"   all {calls} calls (the burst, then waves of {burst}): "
        f"{report['token_requests']} token request(s)"
    )
    say(f"   answers: {report['statuses']}")
    all_ok = report["statuses"] == {"200 unassigned": calls}
    results.add(
        "exactly 1 token fetch per 1,000 calls and per cold burst",
        f"{report['token_requests']} per {calls}, {report['burst_token_requests']} per burst of "
        f"{burst}" + ("" if all_ok else " (some calls failed)"),
        report["token_requests"] == 1 and report["burst_token_requests"] == 1 and all_ok,
    )
