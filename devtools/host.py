"""A small stand-in for the Azure Functions host, for machines without Core Tools.

It serves every function folder exactly as its `function.json` declares it (route, methods,
`authLevel`) under host.json's route prefix (default `/api`), on port 7071 like `func start`, and
turns real HTTP into `azure.functions.HttpRequest` on one long-lived event loop, as the Python
worker does. Like `func start`, it reads `local.settings.json` Values into the environment (without
overriding what is already set) and does not check keys unless given one with `--function-key`.

    python -m devtools.host [--host 127.0.0.1] [--port 7071] [--function-key KEY]
                            [--root APP_FOLDER] [--queue-receive-visibility SECONDS]
                            [--functions NAME ...]

Queue- and timer-triggered functions run too (devtools.queues, devtools.timers), on the storage
account their `connection` setting names (Azurite locally).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

import azure.functions as func

if TYPE_CHECKING:
    from devtools.timers import Clock

ROOT = Path(__file__).resolve().parent.parent
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Answer = tuple[int, list[tuple[str, str]], bytes]
_PARAM = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<optional>\?)?\}")


@dataclass(frozen=True)
class Route:
    function: str
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    auth_level: str
    handler: Callable[[func.HttpRequest], Any]


def compile_route(template: str) -> re.Pattern[str]:
    segments = template.strip("/").split("/")
    parts = []
    for index, segment in enumerate(segments):
        match = _PARAM.fullmatch(segment)
        if match is None:
            if "{" in segment or "}" in segment:
                raise ValueError(f"route segment {segment!r} is not supported by the dev host")
            parts.append("/" + re.escape(segment))
        elif match["optional"]:
            if index != len(segments) - 1:
                raise ValueError("only the last route segment may be optional")
            parts.append(f"(?:/(?P<{match['name']}>[^/]+))?")
        else:
            parts.append(f"/(?P<{match['name']}>[^/]+)")
    return re.compile("".join(parts) + "/?", re.IGNORECASE)


def _functions(root: Path, trigger_type: str) -> list[tuple[str, dict[str, Any]]]:
    """(function name, its trigger binding) for each function folder triggered by this type."""
    found = []
    for spec in sorted(root.glob("*/function.json")):
        bindings = json.loads(spec.read_text())["bindings"]
        triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
        if len(triggers) != 1:
            raise ValueError(f"{spec.parent.name}: a function has exactly one trigger")
        if triggers[0]["type"] == trigger_type:
            found.append((spec.parent.name, triggers[0]))
    return found


def discover(root: Path = ROOT) -> tuple[str, list[Route]]:
    host = json.loads((root / "host.json").read_text())
    prefix = str(host.get("extensions", {}).get("http", {}).get("routePrefix", "api")).strip("/")
    routes = []
    for name, trigger in _functions(root, "httpTrigger"):
        template = trigger.get("route") or name
        module = importlib.import_module(name)
        routes.append(
            Route(
                function=name,
                template=template,
                pattern=compile_route(template),
                methods=frozenset(m.upper() for m in trigger.get("methods") or ()),
                auth_level=trigger.get("authLevel", "function").lower(),
                handler=getattr(module, trigger.get("entryPoint", "main")),
            )
        )
    return prefix, routes


@dataclass(frozen=True)
class Trigger:
    """A queue- or timer-triggered function: what it listens to, and its runner."""

    function: str
    describes: str
    run: Callable[[], Coroutine[Any, Any, None]] | None  # None: not started, for `idle`
    idle: str | None = None


def _storage_unset(name: str, values: Mapping[str, str]) -> str | None:
    """Why a trigger cannot run: its storage setting is unset (the Functions host refuses to
    start such a trigger too). The HTTP functions are served all the same."""
    return None if values.get(name) else f"not started: app setting {name} is unset"


def discover_triggers(
    root: Path = ROOT,
    receive_visibility: float | None = None,
    clock: Clock | None = None,
    settings: Mapping[str, str] | None = None,
) -> list[Trigger]:
    """The queue and timer triggers of the function folders under `root`.

    The machinery lives in devtools.queues and devtools.timers, imported only when a function
    needs it: nothing here is ever imported by a function.
    """
    host = json.loads((root / "host.json").read_text())
    values = os.environ if settings is None else settings
    found = []
    queues = _functions(root, "queueTrigger")
    if queues:
        from devtools.queues import (
            RECEIVE_VISIBILITY_SECONDS,
            QueueBinding,
            QueueListener,
            QueueOptions,
        )

        options = QueueOptions.from_host_json(
            host, receive_visibility or RECEIVE_VISIBILITY_SECONDS
        )
        for name, trigger in queues:
            idle = _storage_unset(str(trigger.get("connection") or "AzureWebJobsStorage"), values)
            if idle is not None:
                found.append(Trigger(name, f"queue {trigger['queueName']}", None, idle))
                continue
            module = importlib.import_module(name)
            binding = QueueBinding.from_function_json(
                name, trigger, getattr(module, trigger.get("entryPoint", "main")), settings
            )
            listener = QueueListener(binding, options)
            found.append(Trigger(name, f"queue {binding.queue_name}", listener.run))
    timers = _functions(root, "timerTrigger")
    if timers:
        from devtools.timers import SystemClock, TimerRunner, parse_schedule

        for name, trigger in timers:
            idle = _storage_unset("AzureWebJobsStorage", values)
            if idle is not None:
                found.append(Trigger(name, f"timer {trigger['schedule']}", None, idle))
                continue
            module = importlib.import_module(name)
            schedule = parse_schedule(str(trigger["schedule"]), settings)
            runner = TimerRunner(
                name,
                schedule,
                bool(trigger.get("runOnStartup", False)),
                getattr(module, trigger.get("entryPoint", "main")),
                clock or SystemClock(),
            )
            found.append(Trigger(name, f"timer {schedule.expression}", runner.run))
    return found


class DevHost:
    def __init__(self, prefix: str, routes: list[Route], function_key: str | None) -> None:
        self.prefix = "/" + prefix if prefix else ""
        self.routes = routes
        self.function_key = function_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, headers, payload = await self._dispatch(scope, bytes(body))
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def _dispatch(self, scope: Scope, body: bytes) -> Answer:
        # Split the raw path before decoding, so an encoded "/" stays inside its route value.
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if not path.lower().startswith(self.prefix.lower() + "/"):
            return 404, [], b""
        rest = path[len(self.prefix) :]
        for route in self.routes:
            match = route.pattern.fullmatch(rest)
            if match is None:
                continue
            if route.methods and scope["method"] not in route.methods:
                return 405, [("Allow", ", ".join(sorted(route.methods)))], b""
            query = scope.get("query_string", b"").decode("latin-1")
            params = dict(parse_qsl(query, keep_blank_values=True))
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            if not self._authorised(route, headers, params):
                return 401, [], b""
            request = func.HttpRequest(
                method=scope["method"],
                url=f"http://{headers.get('host', 'localhost')}{path}",
                headers=headers,
                params=params,
                route_params={k: unquote(v) for k, v in match.groupdict().items() if v},
                body=body,
            )
            return await self._invoke(route, request)
        return 404, [], b""

    def _authorised(self, route: Route, headers: dict[str, str], params: dict[str, str]) -> bool:
        if self.function_key is None or route.auth_level == "anonymous":
            return True
        offered = headers.get("x-functions-key") or params.get("code")
        return offered == self.function_key

    @staticmethod
    async def _invoke(route: Route, request: func.HttpRequest) -> Answer:
        try:
            result = route.handler(request)
            response = await result if asyncio.iscoroutine(result) else result
        except Exception:
            logging.getLogger("devtools.host").exception("function %s raised", route.function)
            return 500, [], b""
        headers = list(response.headers.items())
        if not any(k.lower() == "content-type" for k, _ in headers) and response.mimetype:
            headers.append(("Content-Type", f"{response.mimetype}; charset={response.charset}"))
        return response.status_code, headers, response.get_body()


def load_local_settings(root: Path = ROOT) -> None:
    path = root / "local.settings.json"
    if path.exists():
        for key, value in json.loads(path.read_text()).get("Values", {}).items():
            os.environ.setdefault(key, str(value))


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    for noisy in ("azure", "msal", "httpx", "httpcore", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


async def serve(
    host: str,
    port: int,
    function_key: str | None,
    on_ready: Callable[[str], None],
    root: Path = ROOT,
    receive_visibility: float | None = None,
    functions: list[str] | None = None,
) -> None:
    import uvicorn

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the Functions worker puts the app root on sys.path too
    prefix, routes = discover(root)
    triggers = discover_triggers(root, receive_visibility)
    if functions is not None:  # like `func start --functions`: only these run
        unknown = set(functions) - {r.function for r in routes} - {t.function for t in triggers}
        if unknown:
            raise SystemExit(f"no such function: {', '.join(sorted(unknown))}")
        routes = [r for r in routes if r.function in functions]
        triggers = [t for t in triggers if t.function in functions]
    app = DevHost(prefix, routes, function_key)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    base = f"http://{host}:{sock.getsockname()[1]}"
    on_ready(base)
    for route in routes:
        methods = ",".join(sorted(route.methods)) or "ANY"
        print(f"  {route.function}: [{methods}] {base}{app.prefix}/{route.template}", flush=True)
    for trigger in triggers:
        idle = f" {trigger.idle}" if trigger.idle else ""
        print(f"  {trigger.function}: [{trigger.describes}]{idle}", flush=True)
    running = [
        asyncio.create_task(trigger.run(), name=trigger.function)
        for trigger in triggers
        if trigger.run is not None
    ]
    try:
        await server.serve(sockets=[sock])
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the function folders like `func start`.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--function-key", default=None)
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="the function app's folder (host.json and one folder per function)",
    )
    parser.add_argument(
        "--queue-receive-visibility",
        type=float,
        default=None,
        help="seconds a received queue message stays invisible (Azure: 600)",
    )
    parser.add_argument(
        "--functions",
        nargs="+",
        default=None,
        help="run only these functions (func start --functions)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    load_local_settings(args.root)
    asyncio.run(
        serve(
            args.host,
            args.port,
            args.function_key,
            lambda base: print(f"Dev host listening on {base}", flush=True),
            args.root.resolve(),
            args.queue_receive_visibility,
            args.functions,
        )
    )


if __name__ == "__main__":
    main()
