"""The small threaded HTTP server both emulators run on.

Keep-alive HTTP/1.1, a large accept backlog for load tests, quiet logs, and a `stop()` that really
cuts open keep-alive connections so a stopped emulator looks down to a pooled client.
"""

from __future__ import annotations

import abc
import contextlib
import json
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit


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
    """What to answer: ``body`` is JSON-serialisable, None sends no body.

    ``raw`` is sent instead, byte for byte, with only the headers given (no Content-Type is
    added), so a reply can be anything a broken server or a proxy might send. Content-Length is
    always computed here; one in ``headers`` is ignored. 204, 304 and 1xx answers carry no body
    whatever is given, as HTTP requires: a client would not read it, and the bytes left on a
    kept-alive connection would be taken for the start of the next answer.
    """

    status: int
    body: object = None
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering at all
    raw: bytes | None = None

    def __post_init__(self) -> None:
        if self.raw is not None and self.body is not None:
            raise ValueError("a reply has a JSON body or a raw one, not both")


def _bodiless(status: int) -> bool:
    return status < 200 or status in (204, 304)


DROP = Reply(0, drop=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, a keep-alive client's
    # delayed ACK would add some 40 ms to every answer.
    disable_nagle_algorithm = True
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
        if reply.raw is not None:
            data = reply.raw
        else:
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
        if _bodiless(reply.status):
            data = b""
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        if reply.body is not None:
            self.send_header("Content-Type", "application/json")
        if not _bodiless(reply.status):
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
