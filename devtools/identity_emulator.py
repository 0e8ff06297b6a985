"""Local stand-in for the App Service managed-identity token endpoint.

When IDENTITY_ENDPOINT and IDENTITY_HEADER are set, azure-identity's ManagedIdentityCredential
(through MSAL) asks that endpoint for tokens instead of Entra ID. Pointing those variables here
lets the function authenticate locally without any Azure credentials, and the fault switches let
tests see how it copes when the token endpoint is slow, failing or unreachable.

This module also holds the small threaded HTTP server that both emulators run on
(``HttpEmulator``): keep-alive HTTP/1.1, a large accept backlog for load tests, quiet logs, and a
``stop()`` that really cuts open keep-alive connections so a stopped emulator looks down.
"""

from __future__ import annotations

import abc
import contextlib
import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from devtools import tokens

API_VERSION = "2019-08-01"
# Client id reported for the system-assigned identity (made up; never a real application).
SYSTEM_ASSIGNED_CLIENT_ID = "7c0e5b2a-3f14-4d8e-9b6a-1e2d3c4b5a69"
_FAULT_KINDS = frozenset({"status", "slow", "drop"})


@dataclass(frozen=True)
class Incoming:
    """One HTTP request as an emulator sees it."""

    method: str
    path: str  # without the query string, still percent-encoded
    query: str
    headers: Message
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What to answer: ``body`` is JSON-serialisable, None sends no body."""

    status: int
    body: object = None
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering at all


DROP = Reply(0, drop=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: emulators serve thousands of requests in load tests."""

    def _dispatch(self) -> None:
        if "Transfer-Encoding" in self.headers:
            self.close_connection = True  # body not read below; never reuse this connection
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        reply = self.server.respond(Incoming(self.command, url.path, url.query, self.headers, body))
        if reply.drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        data = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json")
        if reply.status != 204:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # http.server looks request handlers up by these names.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], respond: Callable[[Incoming], Reply]) -> None:
        self.respond = respond
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which can stall for
        # seconds without working DNS; only the bound port matters here.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.socket.getsockname()[:2]

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._open_lock:
            if open_:
                self._open.add(connection)
            else:
                self._open.discard(connection)

    def cut_connections(self) -> None:
        with self._open_lock:
            for connection in self._open:
                with contextlib.suppress(OSError):  # already gone
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts, dropped faults, stop()) are routine, not errors.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class HttpEmulator(abc.ABC):
    """Base of both emulators: serves ``_respond`` on a background thread until ``stop()``.

    A restart binds the port of the first start again, so "down, then back" can be emulated.
    """

    def __init__(self, *, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: _Server | None = None

    @abc.abstractmethod
    def _respond(self, incoming: Incoming) -> Reply:
        """Answer one request; runs on the connection's own thread."""

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        server = _Server((self._host, self._port), self._respond)
        self._port = server.server_port
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # keeps stop() fast
            name=f"{type(self).__name__}:{self._port}",
            daemon=True,
        ).start()
        self._server = server
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.cut_connections()
            server.server_close()

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
    def base_url(self) -> str:
        if self._port == 0:
            raise RuntimeError(f"{type(self).__name__} has not been started yet")
        return f"http://{self._host}:{self._port}"


@dataclass
class _Fault:
    kind: str
    status: int
    delay: float
    remaining: int | None  # None: until cleared


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, {"statusCode": status, "message": message}, headers or {})


class IdentityEmulator(HttpEmulator):
    """The App Service managed-identity endpoint (``GET /msi/token``, api-version 2019-08-01).

    ``client_ids=None`` accepts the system-assigned identity and any client id; otherwise only
    the listed user-assigned client ids are accepted, and a request without client_id is refused
    because the app then has no system-assigned identity.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        identity_header: str | None = None,
        client_ids: frozenset[str] | None = None,
        token_lifetime_seconds: float = 86400,
    ) -> None:
        self._identity_header = (
            secrets.token_urlsafe(24) if identity_header is None else identity_header
        )
        self._client_ids = client_ids
        self._lifetime = token_lifetime_seconds
        self._lock = threading.Lock()
        self._token_requests = 0
        self._tokens_issued = 0
        self._requests: list[dict[str, str]] = []
        self._fault: _Fault | None = None
        super().__init__(host=host, port=port)

    @property
    def endpoint(self) -> str:
        """The value for IDENTITY_ENDPOINT."""
        return self.base_url + "/msi/token"

    @property
    def identity_header(self) -> str:
        """The value for IDENTITY_HEADER."""
        return self._identity_header

    @property
    def token_requests(self) -> int:
        """Requests that reached /msi/token, whether they got a token or not."""
        return self._token_requests

    @property
    def tokens_issued(self) -> int:
        return self._tokens_issued

    @property
    def requests(self) -> list[dict[str, str]]:
        """Query parameters of every /msi/token request so far (a copy)."""
        with self._lock:
            return [dict(query) for query in self._requests]

    def reset(self) -> None:
        with self._lock:
            self._token_requests = self._tokens_issued = 0
            self._requests.clear()
            self._fault = None

    def set_fault(
        self, kind: str, *, status: int = 500, delay: float = 0.0, count: int | None = None
    ) -> None:
        """Misbehave on the next ``count`` token requests (all of them when None).

        "status" answers ``status`` (with Retry-After: 1 for 429/503), "slow" waits ``delay``
        seconds and then answers normally, "drop" closes the connection without answering.
        """
        if kind not in _FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(_FAULT_KINDS)}, not {kind!r}")
        if type(status) is not int or not 100 <= status <= 599:
            raise ValueError("status must be an HTTP status code")
        if type(delay) not in (int, float) or delay < 0:
            raise ValueError("delay must be a non-negative number of seconds")
        if count is not None and (type(count) is not int or count < 1):
            raise ValueError("count must be a positive integer or null")
        with self._lock:
            self._fault = _Fault(kind, status, delay, count)

    def clear_fault(self) -> None:
        with self._lock:
            self._fault = None

    def _take_fault(self) -> _Fault | None:
        fault = self._fault
        if fault is not None and fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining == 0:
                self._fault = None
        return fault

    def _respond(self, incoming: Incoming) -> Reply:
        route = (incoming.method, incoming.path)
        if route == ("GET", "/msi/token"):
            return self._token(incoming)
        if route == ("POST", "/_emulator/fault"):
            return self._post_fault(incoming)
        if route == ("DELETE", "/_emulator/fault"):
            self.clear_fault()
            return Reply(204)
        if route == ("GET", "/_emulator/stats"):
            stats = {"tokenRequests": self._token_requests, "tokensIssued": self._tokens_issued}
            return Reply(200, stats)
        if incoming.path in ("/msi/token", "/_emulator/fault", "/_emulator/stats"):
            return _error(405, f"{incoming.method} is not supported on {incoming.path}")
        return _error(404, f"No endpoint at {incoming.path}")

    def _token(self, incoming: Incoming) -> Reply:
        query = dict(parse_qsl(incoming.query, keep_blank_values=True))
        with self._lock:
            self._token_requests += 1
            self._requests.append(query)
            fault = self._take_fault()
        if fault is not None:
            if fault.kind == "drop":
                return DROP
            if fault.kind == "status":
                retry = {"Retry-After": "1"} if fault.status in (429, 503) else None
                return _error(fault.status, "Injected failure of the identity endpoint", retry)
            time.sleep(fault.delay)
        if incoming.headers.get("X-IDENTITY-HEADER") != self._identity_header:
            return _error(401, "The X-IDENTITY-HEADER header is missing or wrong")
        if query.get("api-version") != API_VERSION:
            return _error(400, f"api-version must be {API_VERSION}")
        resource = query.get("resource")
        if not resource:
            return _error(400, "The resource query parameter is required")
        client_id = query.get("client_id")
        if self._client_ids is not None and client_id not in self._client_ids:
            if client_id is None:
                return _error(400, "No system-assigned managed identity is assigned to this app")
            return _error(
                400, f"No managed identity with client id {client_id} is assigned to this app"
            )
        client_id = client_id or SYSTEM_ASSIGNED_CLIENT_ID
        token, expires_on = tokens.mint(
            resource, client_id=client_id, lifetime_seconds=self._lifetime, now=time.time()
        )
        with self._lock:
            self._tokens_issued += 1
        return Reply(
            200,
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id,
            },
        )

    def _post_fault(self, incoming: Incoming) -> Reply:
        try:
            spec = json.loads(incoming.body)
            if not isinstance(spec, dict) or set(spec) - {"kind", "status", "delay", "count"}:
                raise ValueError('expected a JSON object with "kind", "status", "delay", "count"')
            kind = spec.get("kind")
            if not isinstance(kind, str):
                raise ValueError('"kind" is required')
            self.set_fault(
                kind,
                status=spec.get("status", 500),
                delay=spec.get("delay", 0.0),
                count=spec.get("count"),
            )
        except ValueError as exc:
            return _error(400, str(exc))
        return Reply(204)
