"""A queue-triggered test function: records what it was given and does what the message says.

The body is JSON: {"key": "...", "action": "ok" | "fail" | "hold" | "block_first", "seconds": n}.
Each start and end is one line in $PROBE_DIR/events.log (appended whole, so several hosts can
share the file): {"key", "event", "dequeueCount", "pid", "time", "body"}.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import azure.functions as func

BLOCK_LIMIT_SECONDS = 120.0  # a blocked message never outlives a test run


def record(key: str, event: str, msg: func.QueueMessage, **extra: object) -> None:
    line = {
        "key": key,
        "event": event,
        "dequeueCount": msg.dequeue_count,
        "pid": os.getpid(),
        "time": time.time(),
        **extra,
    }
    path = Path(os.environ["PROBE_DIR"]) / "events.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


def main(msg: func.QueueMessage) -> None:
    body = msg.get_body()
    try:
        order = json.loads(body)
    except ValueError:
        order = {"key": body.decode("utf-8", "replace"), "action": "ok"}
    key, action = str(order["key"]), order.get("action", "ok")
    record(key, "start", msg, body=body.decode("utf-8", "replace"))
    if action == "fail":
        record(key, "failed", msg)
        raise RuntimeError(f"{key} fails, as asked")
    if action == "hold":
        time.sleep(float(order.get("seconds", 0.5)))
    if action == "block_first" and msg.dequeue_count == 1:
        release = Path(os.environ["PROBE_DIR"]) / f"release-{key}"
        deadline = time.monotonic() + BLOCK_LIMIT_SECONDS
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    record(key, "done", msg)
