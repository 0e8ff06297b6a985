"""Local stand-in for the App Service managed-identity token endpoint.

When IDENTITY_ENDPOINT and IDENTITY_HEADER are set, azure-identity's ManagedIdentityCredential
(through MSAL) asks that endpoint for tokens instead of Entra ID. Pointing those variables here
lets the function authenticate locally without any Azure credentials, and the fault switches let
tests see how it copes when the token endpoint is slow, failing or unreachable.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from devtools import tokens
from devtools.emulator_http import DROP, HttpEmulator, Incoming, Reply

API_VERSION = "2019-08-01"
# Client id reported for the system-assigned identity (made up; never a real application).
SYSTEM_ASSIGNED_CLIENT_ID = "7c0e5b2a-3f14-4d8e-9b6a-1e2d3c4b5a69"
_FAULT_KINDS = frozenset({"status", "slow", "drop"})


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
