"""Local stand-in for the Microsoft Graph v1.0 Autopilot endpoints the function uses.

Real Graph needs a tenant, an Intune licence and a consented permission, and it cannot be made to
throttle, time out or answer stale data on cue. This emulator keeps devices in memory, checks
emulator tokens (``devtools.tokens``), answers in Graph's shapes (``request-id`` headers, Graph
error bodies, Intune's JSON-in-a-string messages) and misbehaves when told to, so the function's
retry and error handling can be exercised locally and in tests. Like Graph, it refuses a
``client-request-id`` that is not a GUID with 400 before anything else.

Where the real service is undocumented, the emulator chooses: unassigning a device that has no
user answers 400 BadRequest "Device has no user assigned"; ``contains(serialNumber,'...')`` with a
"-" in the value answers 400, as reported for the real service; ``eq`` filters answer 400; the
collection without ``$filter`` lists every device, and query options other than ``$filter``,
``$top`` and ``$skiptoken`` answer 400 there (``$select`` included); a single device's GET ignores
its query string.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode

from devtools import tokens
from devtools.emulator_http import DROP, HttpEmulator, Incoming, Reply

_ENTITY_SET = "deviceManagement/windowsAutopilotDeviceIdentities"
DEVICES_PATH = f"/v1.0/{_ENTITY_SET}"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
DEMO_ASSIGNED_ID = "3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a31"  # 5CG1234XYZ, Alex Wilber
DEMO_UNASSIGNED_ID = "8b1e4c7a-2d5f-4a93-b6e0-9c3f7a2d1e42"  # PF3ABC12, no user
DEMO_SPACED_SERIAL_ID = "c2a7f5d1-6e3b-4d8a-8f19-0b4e6c9d2a53"  # "MXL 4411 22X"
DEMO_HYPHENATED_SERIAL_ID = "e5d3b9f7-4a1c-4b6e-a2d8-7f0c1e5b3a64"  # "R90-ABC-123"
# Two devices sharing the serial "Default string", as unbranded boards report it.
DEMO_DEFAULT_STRING_IDS = (
    "1a9c6e3f-8d2b-4f7a-b5c1-3e8d0f6a9b75",
    "7d4f1b8c-5e2a-4c9d-8b36-2a7e9c4f1d86",
)
FAULT_KINDS = frozenset({
    "status", "expired_token", "slow", "drop", "drop_after", "stale",
    "garbage", "content_type", "huge", "nested", "nested_message", "act_then",
})  # fmt: skip
# Kinds answered by the fault itself, without doing what was asked.
_INSTEAD = frozenset({"status", "expired_token", "drop", "garbage", "huge", "nested",
                      "nested_message"})  # fmt: skip

_NEVER = "0001-01-01T00:00:00Z"
_BOARD = "Default string"
# id, serial, user, addressable user name, manufacturer, model, managed device id, Entra device id
_SEED = (
    (DEMO_ASSIGNED_ID, "5CG1234XYZ", "alex.wilber@contoso.example", "Alex Wilber",
     "HP", "HP EliteBook 840 G8",
     "0d8c2b4e-6f1a-4e3b-9c7d-8a5f2e1b4c90", "4b7e1d3a-9c2f-4a8e-b5d6-1f3c7e9a2b48"),
    (DEMO_UNASSIGNED_ID, "PF3ABC12", "", "", "LENOVO", "20W0004GUS", ZERO_GUID, ZERO_GUID),
    (DEMO_SPACED_SERIAL_ID, "MXL 4411 22X", "megan.bowen@contoso.example", "Megan Bowen",
     "HP", "HP EliteDesk 800 G6",
     "5e2a9f7c-3b1d-4c6e-8a4f-0d9b7c5e3a12", "9f3d5b1e-7a2c-4e8d-a6b4-2c0e8f6d4b37"),
    (DEMO_HYPHENATED_SERIAL_ID, "R90-ABC-123", "lidia.holloway@contoso.example", "Lidia Holloway",
     "LENOVO", "11DT0039US", ZERO_GUID, ZERO_GUID),
    (DEMO_DEFAULT_STRING_IDS[0], _BOARD, "diego.siciliani@contoso.example", "Diego Siciliani",
     _BOARD, _BOARD,
     "2c6f8a0d-4e9b-4d1a-b7c3-5f1e9d3b7a26", "6a0c4e8f-2d7b-4f9a-8e1c-3b5d7f9a1c64"),
    (DEMO_DEFAULT_STRING_IDS[1], _BOARD, "adele.vance@contoso.example", "Adele Vance",
     _BOARD, _BOARD, ZERO_GUID, ZERO_GUID),
)  # fmt: skip
_FIELDS = {
    "displayName": "", "groupTag": "", "manufacturer": "", "model": "",
    "enrollmentState": "notContacted", "lastContactedDateTime": _NEVER,
    "azureActiveDirectoryDeviceId": ZERO_GUID, "managedDeviceId": ZERO_GUID,
    "purchaseOrderIdentifier": "", "productKey": "", "resourceName": "", "skuNumber": "",
    "systemFamily": "",
}  # fmt: skip
_CONTAINS = re.compile(r"\s*contains\(\s*serialNumber\s*,\s*'((?:[^']|'')*)'\s*\)\s*")
_ACTIONS = ("unassignUserFromDevice", "microsoft.graph.unassignUserFromDevice")
_STATUS_DEFAULTS = {
    400: ("BadRequest", "The request is invalid."),
    401: ("UnknownError", "Authorization has been denied for this request."),
    403: ("Forbidden", "Application is not authorized to perform this operation. Application "
          "must have one of the following scopes: DeviceManagementServiceConfig.ReadWrite.All"),
    429: ("TooManyRequests", "Too many requests."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "The upstream service answered with an error."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable."),
    504: ("GatewayTimeout", "The upstream service did not answer in time."),
}  # fmt: skip
_FAULT_JSON = {"kind": "kind", "method": "method", "deviceId": "device_id", "count": "count",
               "status": "status", "retryAfter": "retry_after", "delay": "delay", "code": "code",
               "intune": "intune", "userPrincipalName": "user_principal_name",
               "encoding": "encoding", "size": "size", "depth": "depth",
               "reassignTo": "reassign_to"}  # fmt: skip
# Microsoft Graph's REST API docs (request headers; throttling guidance) describe
# client-request-id as "a client-generated GUID", and at least one Graph workload refuses anything
# else with 400 "Client-Request-Id is not a guid". Braces and missing hyphens are refused too.
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
# A header value http.server can send: no CR, LF or other controls, Latin-1 only.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Cut-off, truncated, not UTF-8, not JSON, and not gzip either (no 1f 8b magic).
_GARBAGE = b'{"error": {"code": "Serv\xff\xfe\x00\x8b<!-- \xc3\x28 truncated'
# What a captive portal or an intercepting proxy answers in place of Graph.
_PORTAL_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to continue</title></head>\n"
    b"<body><h1>Network login required</h1><p>Sign in to use this network.</p></body></html>\n"
)
_MAX_BODY = 1 << 30  # a typo in a size or depth must not exhaust the test machine's memory


@dataclass
class Fault:
    """A misbehaviour for the next ``count`` requests matching ``method`` and ``device_id``.

    Kinds that answer instead of doing what was asked: "status" (a Graph error), "expired_token",
    "drop" (no answer), "garbage" (bytes that are not JSON, labelled JSON), "huge" (a valid body
    of ``size`` bytes), "nested" (JSON nested ``depth`` deep), "nested_message" (a Graph error
    whose message is such JSON in a string, as Intune puts JSON in messages) and "content_type"
    (an HTML page with the status the request would have had, as a captive portal sends).
    Kinds that do what was asked: "slow" (after ``delay``), "stale" (reads only: an old user),
    "drop_after" (then no answer) and "act_then" (then the "status" error: the write happened,
    the client is told it failed).
    """

    kind: str
    method: str | None = None  # None: any method
    device_id: str | None = None  # None: any request; otherwise only that device's
    count: int = 1
    status: int = 503  # of every kind that answers with its own status
    retry_after: str | None = None  # sent verbatim as Retry-After by every kind that answers
    delay: float = 0.0  # for "slow"
    code: str | None = None  # Graph error code of the error bodies; defaults by status
    intune: bool = False  # "status", "act_then" and "huge" nest the message as Intune does
    user_principal_name: str | None = None  # for "stale"; None: the user before the unassign
    encoding: str | None = None  # "gzip": "garbage" also claims Content-Encoding: gzip
    size: int = 9 * 1024 * 1024  # bytes of a "huge" body
    depth: int = 100_000  # nesting of "nested" and "nested_message"
    # A device's user becomes this as the fault fires ("" for nobody), as if an admin had just
    # reassigned it in the portal; for kinds that answer instead, the asked action is not done.
    reassign_to: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}, not {self.kind!r}")
        if type(self.count) is not int or self.count < 1:
            raise ValueError("count must be a positive integer")
        if type(self.status) is not int or not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if type(self.delay) not in (int, float) or self.delay < 0 or type(self.intune) is not bool:
            raise ValueError("delay must be a non-negative number and intune a boolean")
        for name in ("method", "device_id", "retry_after", "code", "user_principal_name",
                     "encoding", "reassign_to"):  # fmt: skip
            if not isinstance(getattr(self, name), str | None):
                raise ValueError(f"{name} must be a string")
        if self.retry_after is not None and not _HEADER_VALUE.fullmatch(self.retry_after):
            raise ValueError("retry_after must be sendable as a header: no line breaks")
        if self.encoding not in (None, "gzip"):
            raise ValueError('encoding must be "gzip" or absent')
        if type(self.size) is not int or not 1 <= self.size <= _MAX_BODY:
            raise ValueError(f"size must be an integer from 1 to {_MAX_BODY}")
        if type(self.depth) is not int or not 1 <= self.depth <= _MAX_BODY // 2:
            raise ValueError(f"depth must be an integer from 1 to {_MAX_BODY // 2}")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    client_request_id: str | None
    token: str | None
    time: float
    status: int | None = None  # as answered; 0 when the connection was dropped instead
    # A device read's userPrincipalName as the answer showed it (None: not a device read, or
    # not a readable one), so tests can tell what a client saw before it wrote.
    shown_user: str | None = None


@dataclass(frozen=True)
class _Call:
    incoming: Incoming
    url: str
    request_id: str
    client_request_id: str | None
    token: str | None


class GraphEmulator(HttpEmulator):
    """Graph's Autopilot device endpoints over in-memory devices; thread-safe."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        audience: str | None = None,  # None: tokens for this emulator's base_url
        seed: bool = True,
        write_limit: int | None = None,
        write_window_seconds: float = 20.0,
    ) -> None:
        super().__init__(host=host, port=port)
        self._audience, self._seed = audience, seed
        self._write_limit, self._write_window = write_limit, write_window_seconds
        self._lock = threading.Lock()
        self._devices: dict[str, dict[str, str]] = {}
        self._previous_users: dict[str, tuple[str, str]] = {}  # before each device's last unassign
        self._faults: list[Fault] = []
        self._log: list[RecordedRequest] = []
        self._writes: collections.deque[float] = collections.deque()  # accepted, in the window
        self.writes_accepted = 0  # POSTs the write limit let through (all when there is none)
        self.throttled = 0  # POSTs the write limit refused with 429 (faults not counted)
        self._in_flight = 0
        self.peak_in_flight = 0  # most Graph requests being answered at the same moment
        self.reset()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to a Graph path so far, oldest first (a copy)."""
        with self._lock:
            return list(self._log)

    def graph_calls(self, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if method is None or r.method == method.upper()]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def add_device(
        self,
        device_id: str,
        serial: str,
        user_principal_name: str = "",
        addressable_user_name: str = "",
        **fields: str,
    ) -> None:
        """Add or replace a device; ``fields`` are its other properties by their Graph names."""
        if unknown := sorted(set(fields) - set(_FIELDS)):
            raise ValueError(f"unknown device properties: {', '.join(unknown)}")
        device = {
            "id": device_id.lower(),
            "serialNumber": serial,
            "userPrincipalName": user_principal_name,
            "addressableUserName": addressable_user_name,
        }
        device |= _FIELDS | fields
        with self._lock:
            self._devices[device["id"]] = device
            self._previous_users.pop(device["id"], None)

    def device(self, device_id: str) -> dict[str, str] | None:
        with self._lock:
            found = self._devices.get(device_id.lower())
            return None if found is None else dict(found)

    def reset(self) -> None:
        """Back to the seed devices, with no faults, request log or write history."""
        with self._lock:
            self._devices.clear()
            self._previous_users.clear()
            self._faults.clear()
            self._log.clear()
            self._writes.clear()
            self.writes_accepted = self.throttled = self.peak_in_flight = 0
        for device_id, serial, upn, name, maker, model, managed, entra in (
            _SEED if self._seed else ()
        ):
            enrolled = managed != ZERO_GUID
            self.add_device(
                device_id, serial, upn, name, manufacturer=maker, model=model,
                managedDeviceId=managed, azureActiveDirectoryDeviceId=entra,
                enrollmentState="enrolled" if enrolled else "notContacted",
                lastContactedDateTime="2024-05-14T08:21:37Z" if enrolled else _NEVER,
                systemFamily=_BOARD if maker == _BOARD else "",
            )  # fmt: skip

    def inject(self, *faults: Fault) -> None:
        """Queue faults; copies are counted down, the caller's objects stay as they are."""
        with self._lock:
            self._faults.extend(dataclasses.replace(fault) for fault in faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, action: str, device_id: str | None) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if (
                    (fault.method is None or fault.method.upper() == method)
                    and (fault.device_id is None or fault.device_id.lower() == device_id)
                    and (fault.kind != "stale" or action == "get")  # stale only fits reads
                ):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[index]
                    return fault
        return None

    def _respond(self, incoming: Incoming) -> Reply:
        if incoming.path.startswith("/_emulator/"):
            return self._answer(incoming)
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            return self._answer(incoming)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, incoming: Incoming) -> Reply:
        scheme, _, token = (incoming.headers.get("Authorization") or "").partition(" ")
        call = _Call(
            incoming,
            self.base_url + incoming.path + (f"?{incoming.query}" if incoming.query else ""),
            str(uuid.uuid4()),
            incoming.headers.get("client-request-id"),
            token.strip() if scheme.lower() == "bearer" and token.strip() else None,
        )
        if incoming.path.startswith("/_emulator/"):
            try:
                return self._control(call)
            except (ValueError, TypeError) as exc:
                return self._error(call, 400, "BadRequest", f"Bad control request: {exc}")
        entry = RecordedRequest(incoming.method, incoming.path, incoming.query,
                                call.client_request_id, call.token, time.time())  # fmt: skip
        with self._lock:
            self._log.append(entry)
            index = len(self._log) - 1
        reply = self._answer_graph(call)
        body = reply.body if isinstance(reply.body, dict) and reply.raw is None else {}
        shown = body.get("userPrincipalName") if "@odata.context" in body else None
        answered = dataclasses.replace(
            entry, status=reply.status, shown_user=shown if isinstance(shown, str) else None
        )
        with self._lock:
            if index < len(self._log) and self._log[index] is entry:  # not cleared meanwhile
                self._log[index] = answered
        return reply

    def _answer_graph(self, call: _Call) -> Reply:
        incoming = call.incoming
        client_id = call.client_request_id
        if client_id is not None and not _GUID.fullmatch(client_id.strip(" \t")):
            # Refused before the token or any fault is looked at, as Graph does (see _GUID).
            return self._error(call, 400, "BadRequest", "Client-Request-Id is not a guid.")
        if denied := self._authenticate(call):
            return denied
        action, device_id = self._route(unquote(incoming.path))
        if not action:
            message = f"No HTTP resource was found that matches the request URI '{call.url}'."
            return self._error(call, 404, "UnknownError", message)
        allowed = "POST" if action == "unassign" else "GET"
        if incoming.method != allowed:
            message = f"The HTTP method '{incoming.method}' is not allowed for this resource."
            return self._error(call, 405, "MethodNotAllowed", message, {"Allow": allowed})
        fault = self._take_fault(incoming.method, action, device_id)
        if fault is None:
            return self._perform(call, action, device_id, None)
        if fault.reassign_to is not None and device_id:
            self._reassign(device_id, fault.reassign_to)
        if fault.kind in _INSTEAD:
            return self._fault_reply(call, fault, action, device_id)
        if fault.kind == "slow":
            time.sleep(fault.delay)
        if fault.kind == "content_type":
            # A portal answers in Graph's place, so the write never reaches Graph; the status
            # is the one Graph would have given, 200 for a 204 since a 204 cannot carry a page.
            if action == "unassign":
                reply = self._unassign(call, device_id, write=False)
            else:
                reply = self._perform(call, action, device_id, None)
            headers = {"Content-Type": "text/html; charset=utf-8"} | _retry_after(fault)
            return Reply(
                200 if reply.status == 204 else reply.status, None, headers, raw=_PORTAL_PAGE
            )
        reply = self._perform(call, action, device_id, fault if fault.kind == "stale" else None)
        if fault.kind == "drop_after":
            return DROP
        if fault.kind == "act_then":
            return self._fault_reply(call, fault, action, device_id)
        return reply

    def _perform(self, call: _Call, action: str, device_id: str, stale: Fault | None) -> Reply:
        """Do what the request asks and answer as Graph would."""
        if action == "list":
            return self._list(call)
        if action == "get":
            return self._get(call, device_id, stale)
        return self._throttle(call) or self._unassign(call, device_id)

    def _reassign(self, device_id: str, upn: str) -> None:
        with self._lock:
            device = self._devices.get(device_id)
            if device is not None:
                device["userPrincipalName"] = upn
                device["addressableUserName"] = _display_name(upn)

    @staticmethod
    def _route(path: str) -> tuple[str, str]:
        """("list" | "get" | "unassign", lower-case device id), or ("", "") for other paths."""
        if path == DEVICES_PATH:
            return "list", ""
        if not path.startswith(DEVICES_PATH + "/"):
            return "", ""
        parts = path.removeprefix(DEVICES_PATH + "/").split("/")
        if len(parts) == 1 and parts[0]:
            return "get", parts[0].lower()
        if len(parts) == 2 and parts[0] and parts[1] in _ACTIONS:
            return "unassign", parts[0].lower()
        return "", ""

    def _authenticate(self, call: _Call) -> Reply | None:
        claims = tokens.read(call.token) if call.token else None
        if call.token is None:
            message = "Access token is empty."
        elif claims is None:
            message = "CompactToken parsing failed with error code: 80049217"
        elif not cast(int, claims["iat"]) <= time.time() < cast(int, claims["exp"]):
            message = "Access token has expired or is not yet valid."
        elif str(claims["aud"]).rstrip("/") != (self._audience or self.base_url).rstrip("/"):
            message = "Invalid audience."
        else:
            return None
        return self._error(call, 401, "InvalidAuthenticationToken", message)

    def _throttle(self, call: _Call) -> Reply | None:
        """Apply the write limit to a POST: None to go ahead, else the 429."""
        with self._lock:
            now = time.monotonic()
            while self._writes and self._writes[0] <= now - self._write_window:
                self._writes.popleft()
            if self._write_limit is None or len(self._writes) < self._write_limit:
                self._writes.append(now)
                self.writes_accepted += 1
                return None
            self.throttled += 1
            wait = max(1, math.ceil(self._writes[0] + self._write_window - now))
        message = f"Write limit: {self._write_limit} per {self._write_window:g} seconds."
        return self._error(call, 429, "TooManyRequests", message, {"Retry-After": str(wait)})

    def _unassign(self, call: _Call, device_id: str, *, write: bool = True) -> Reply:
        """Unassign and answer; with ``write`` False only the answer it would give."""
        with self._lock:
            device = self._devices.get(device_id)
            if device is None:
                reason = f"Cannot find device with ztd Id {device_id}"
            elif not device["userPrincipalName"]:
                reason = "Device has no user assigned"
            else:
                if write:
                    upn, name = device["userPrincipalName"], device["addressableUserName"]
                    self._previous_users[device_id] = (upn, name)
                    device["userPrincipalName"] = device["addressableUserName"] = ""
                return self._reply(call, 204)
        return self._error(call, 400, "BadRequest", self._intune(call, reason))

    def _get(self, call: _Call, device_id: str, stale: Fault | None) -> Reply:
        with self._lock:
            found = self._devices.get(device_id)
            device = None if found is None else dict(found)
            previous = self._previous_users.get(device_id)
        if device is None:
            reason = f"Cannot find device with ztd Id {device_id}"
            return self._error(call, 404, "ResourceNotFound", self._intune(call, reason))
        if stale and stale.user_principal_name is not None:
            device["userPrincipalName"] = stale.user_principal_name
        elif stale and previous:
            device["userPrincipalName"], device["addressableUserName"] = previous
        context = f"{self.base_url}/v1.0/$metadata#{_ENTITY_SET}/$entity"
        return self._reply(call, 200, {"@odata.context": context, **device})

    def _list(self, call: _Call) -> Reply:
        params = dict(parse_qsl(call.incoming.query, keep_blank_values=True))
        options = {name for name in params if name.startswith("$")}
        if unsupported := sorted(options - {"$filter", "$top", "$skiptoken"}):
            message = f"Query option {unsupported[0]} is not supported."
            return self._error(call, 400, "BadRequest", message)
        no_filter = "contains(serialNumber,'')"  # matches every device
        match = _CONTAINS.fullmatch(params.get("$filter", no_filter))
        if match is None:
            message = "Only contains(serialNumber,'...') filters are supported on this collection."
            return self._error(call, 400, "BadRequest", message)
        needle = match[1].replace("''", "'")
        if "-" in needle:
            return self._error(call, 400, "BadRequest", self._intune(call, "An error has occurred"))
        top, skip = params.get("$top", "100"), params.get("$skiptoken", "0")
        if not (top.isdigit() and 1 <= int(top) <= 1000 and skip.isdigit()):
            return self._error(call, 400, "BadRequest", "Invalid $top or $skiptoken.")
        with self._lock:
            found = [
                dict(d)
                for d in self._devices.values()
                if needle.lower() in d["serialNumber"].lower()
            ]
        start, end = int(skip), int(skip) + int(top)
        body: dict[str, object] = {
            "@odata.context": f"{self.base_url}/v1.0/$metadata#{_ENTITY_SET}",
            "value": found[start:end],
        }
        if end < len(found):
            query = urlencode({**params, "$top": top, "$skiptoken": str(end)})
            body["@odata.nextLink"] = f"{self.base_url}{DEVICES_PATH}?{query}"
        return self._reply(call, 200, body)

    def _fault_reply(self, call: _Call, fault: Fault, action: str, device_id: str) -> Reply:
        """The answer of a fault that answers with its own status ("act_then" as "status")."""
        headers = _retry_after(fault)
        if fault.kind == "drop":
            return DROP
        if fault.kind == "expired_token":
            message = "Lifetime validation failed, the token is expired."
            return self._error(call, 401, "InvalidAuthenticationToken", message, headers)
        if fault.kind == "garbage":
            headers["Content-Type"] = "application/json"
            if fault.encoding == "gzip":
                headers["Content-Encoding"] = "gzip"  # _GARBAGE has no gzip header: undecodable
            return self._reply(call, fault.status, None, headers, raw=_GARBAGE)
        if fault.kind == "nested":
            # Written out flat: building it as Python objects would hit the recursion limit.
            raw = b'{"error":' + b"[" * fault.depth + b"]" * fault.depth + b"}"
            headers["Content-Type"] = "application/json"
            return self._reply(call, fault.status, None, headers, raw=raw)
        code, message = _STATUS_DEFAULTS.get(fault.status, ("UnknownError", "Injected failure."))
        if fault.kind == "nested_message":
            message = '{"Message":' + "[" * fault.depth + "]" * fault.depth + "}"
        elif fault.intune:
            message = self._intune(
                call, message if fault.status == 403 else "An error has occurred"
            )
            if fault.status == 401:
                message = json.dumps({"ErrorCode": "Forbidden", "Message": message})
        reply = self._error(call, fault.status, fault.code or code, message, headers)
        if fault.kind != "huge":
            return reply
        document = cast(dict[str, Any], reply.body)
        holder, key = document["error"], "message"
        if 200 <= fault.status < 300:
            document = self._device_document(action, device_id)
            holder, key = (document["value"][0] if action == "list" else document), "displayName"
        # json.dumps writes ASCII only, so each padding character is one byte and the body comes
        # out at exactly ``size``. Trailing spaces keep an Intune JSON-in-a-string message valid.
        holder[key] += " " * max(0, fault.size - len(json.dumps(document)))
        headers = {**reply.headers, "Content-Type": "application/json"}
        return Reply(fault.status, None, headers, raw=json.dumps(document).encode())

    def _device_document(self, action: str, device_id: str) -> dict[str, Any]:
        """What a 2xx answer to ``action`` looks like: the device as stored, or one like it."""
        with self._lock:
            found = self._devices.get(device_id)
            device: dict[str, Any] = (
                dict(found)
                if found is not None
                else {"id": device_id or ZERO_GUID, "serialNumber": "", "userPrincipalName": "",
                      "addressableUserName": "", **_FIELDS}
            )  # fmt: skip
        if action == "list":
            return {"@odata.context": f"{self.base_url}/v1.0/$metadata#{_ENTITY_SET}",
                    "value": [device]}  # fmt: skip
        return {"@odata.context": f"{self.base_url}/v1.0/$metadata#{_ENTITY_SET}/$entity",
                **device}  # fmt: skip

    def _control(self, call: _Call) -> Reply:
        """The /_emulator endpoints for trying things by hand; ValueError/TypeError mean 400."""
        route = (call.incoming.method, call.incoming.path)
        body: Any = json.loads(call.incoming.body) if call.incoming.body else None
        if route == ("POST", "/_emulator/faults"):
            specs = body if isinstance(body, list) else [body]
            if not all(isinstance(s, dict) and set(s) <= set(_FAULT_JSON) for s in specs):
                raise ValueError(f"a fault is a JSON object with keys from {list(_FAULT_JSON)}")
            self.inject(*(Fault(**{_FAULT_JSON[k]: v for k, v in s.items()}) for s in specs))
        elif route == ("DELETE", "/_emulator/faults"):
            self.clear_faults()
        elif route == ("POST", "/_emulator/reset"):
            self.reset()
        elif route == ("GET", "/_emulator/requests"):
            log = [
                {"method": r.method, "path": r.path, "query": r.query, "time": r.time,
                 "clientRequestId": r.client_request_id, "token": r.token}
                for r in self.requests
            ]  # fmt: skip
            return self._reply(call, 200, {"value": log})
        elif route == ("GET", "/_emulator/devices"):
            with self._lock:
                return self._reply(call, 200, {"value": [dict(d) for d in self._devices.values()]})
        elif route == ("POST", "/_emulator/devices"):
            if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
                raise ValueError("a device is a JSON object of string properties")
            if not body.get("id") or not body.get("serialNumber"):
                raise ValueError('"id" and "serialNumber" are required')
            device_id, serial = body.pop("id"), body.pop("serialNumber")
            upn, name = body.pop("userPrincipalName", ""), body.pop("addressableUserName", "")
            self.add_device(device_id, serial, upn, name, **body)
            return self._reply(call, 201, self.device(device_id))
        else:
            message = f"No emulator control endpoint {route[0]} {route[1]}"
            return self._error(call, 404, "UnknownError", message)
        return self._reply(call, 204)

    @staticmethod
    def _intune(call: _Call, reason: str) -> str:
        """Intune's error message: a JSON document in a string, the reason first in "Message"."""
        message = (
            f"{reason} - Operation ID (for customer support): {ZERO_GUID} - "
            f"Activity ID: {call.request_id} - Url: {call.url}"
        )
        return json.dumps(
            {"_version": 3, "Message": message, "CustomApiErrorPhrase": "", "RetryAfter": None,
             "ErrorSourceService": "", "HttpHeaders": "{}"}, indent=2,
        )  # fmt: skip

    @staticmethod
    def _reply(
        call: _Call,
        status: int,
        body: object = None,
        headers: dict[str, str] | None = None,
        *,
        raw: bytes | None = None,
    ) -> Reply:
        every = {"request-id": call.request_id}
        if call.client_request_id is not None:
            every["client-request-id"] = call.client_request_id
        return Reply(status, body, every | (headers or {}), raw=raw)

    @staticmethod
    def _error(
        call: _Call, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> Reply:
        inner = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "request-id": call.request_id,
            "client-request-id": call.client_request_id or call.request_id,
        }
        body = {"error": {"code": code, "message": message, "innerError": inner}}
        return GraphEmulator._reply(call, status, body, headers)


def _retry_after(fault: Fault) -> dict[str, str]:
    return {} if fault.retry_after is None else {"Retry-After": fault.retry_after}


def _display_name(upn: str) -> str:
    """What Intune shows for a user: "alex.wilber@contoso.example" -> "Alex Wilber"."""
    parts = re.split(r"[._-]+", upn.partition("@")[0])
    return " ".join(part.capitalize() for part in parts if part)
