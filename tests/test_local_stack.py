"""The README's local stack and the dev host's stand-in for the Functions host."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from devtools.graph_emulator import DEMO_ASSIGNED_ID, GraphEmulator
from tests.contract import hook
from tests.stack import ROOT, Stack

FUNCTION_JSON = ROOT / "UnassignUser" / "function.json"


def test_the_function_always_requires_a_function_key() -> None:
    bindings = json.loads(FUNCTION_JSON.read_text())["bindings"]
    trigger = next(b for b in bindings if b["type"] == "httpTrigger")
    assert trigger["authLevel"] == "function"
    assert trigger["route"] == "UnassignUser/{deviceId?}"
    assert trigger["methods"] == ["get", "post"]


def test_dev_host_checks_a_key_when_given_one(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator
) -> None:
    stack = fresh_stack("--function-key", "local-key-1")
    assert stack.post(json={"deviceId": DEMO_ASSIGNED_ID}).status_code == 401
    assert graph.requests == []
    keyed = stack.post(
        json={"deviceId": DEMO_ASSIGNED_ID}, headers={"x-functions-key": "local-key-1"}
    )
    assert keyed.status_code == 200, keyed.text
    assert graph.requests


def test_unknown_routes_are_404(stack: Stack, graph: GraphEmulator) -> None:
    assert stack.post("/api/Nope", json={}).status_code == 404
    assert stack.post("/UnassignUser", json={}).status_code == 404
    assert graph.requests == []


def test_make_run_starts_a_stack_whose_printed_curl_works(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devtools.run",
            "--port",
            "0",
            "--graph-port",
            "0",
            "--identity-port",
            "0",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = ""
        for line in process.stdout:
            banner += line
            if line.startswith("Stop with Ctrl+C"):
                break
        url = re.search(r"curl -i -X POST (\S+)", banner)
        body = re.search(r"-d '(\{.*\})'", banner)
        assert url and body, banner
        with httpx.Client(timeout=60, event_hooks={"response": [hook]}) as client:
            response = client.post(
                url[1], content=body[1], headers={"Content-Type": "application/json"}
            )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "unassigned"
        storage = re.findall(r"(blobs|queues|tables): +http://([\d.]+):(\d+)/", banner)
        assert [kind for kind, _, _ in storage] == ["blobs", "queues", "tables"], banner
        assert all(listening(host, int(port)) for _, host, port in storage)
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    # Stopping the stack stopped Azurite: the ports that answered above no longer do.
    assert not any(listening(host, int(port)) for _, host, port in storage)


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return False
    return True
