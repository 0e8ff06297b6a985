"""Local stand-in for the Microsoft Graph v1.0 Autopilot endpoints the function uses.

Real Graph needs a tenant, an Intune licence and a consented permission, and it cannot be made to
throttle, time out or answer stale data on cue. This emulator keeps devices in memory, checks
emulator tokens (``devtools.tokens``), answers in Graph's shapes (``request-id`` headers, Graph
error bodies, Intune's JSON-in-a-string messages) and misbehaves when told to, so the function's
retry and error handling can be exercised locally and in tests.

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
FAULT_KINDS = frozenset({"status", "expired_token", "slow", "drop", "drop_after", "stale"})

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
               "intune": "intune", "userPrincipalName": "user_principal_name"}  # fmt: skip


@dataclass
class Fault:
    """A misbehaviour for the next ``count`` requests matching ``method`` and ``device_id``."""

    kind: str
    method: str | None = None  # None: any method
    device_id: str | None = None  # None: any request; otherwise only that device's
    count: int = 1
    status: int = 503  # for "status"
    retry_after: str | None = None  # sent verbatim as Retry-After by "status"
    delay: float = 0.0  # for "slow"
    code: str | None = None  # Graph error code for "status"; defaults by status
    intune: bool = False  # "status" nests its message as Intune does
    user_principal_name: str | None = None  # for "stale"; None: the user before the unassign

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}, not {self.kind!r}")
        if type(self.count) is not int or self.count < 1:
            raise ValueError("count must be a positive integer")
        if type(self.status) is not int or not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if type(self.delay) not in (int, float) or self.delay < 0 or type(self.intune) is not bool:
            raise ValueError("delay must be a non-negative number and intune a boolean")
        for name in ("method", "device_id", "retry_after", "code", "user_principal_name"):
            if not isinstance(getattr(self, name), str | None):
                raise ValueError(f"{name} must be a string")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    client_request_id: str | None
    token: str | None
    time: float


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
        with self._lock:
            self._log.append(
                RecordedRequest(incoming.method, incoming.path, incoming.query,
                                call.client_request_id, call.token, time.time())
            )  # fmt: skip
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
        kind = fault.kind if fault else ""
        if fault and kind in ("status", "expired_token", "drop"):
            return self._fault_reply(call, fault)
        if fault and kind == "slow":
            time.sleep(fault.delay)
        if action == "list":
            reply = self._list(call)
        elif action == "get":
            reply = self._get(call, device_id, fault if kind == "stale" else None)
        else:
            reply = self._throttle(call) or self._unassign(call, device_id)
        return DROP if kind == "drop_after" else reply

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

    def _unassign(self, call: _Call, device_id: str) -> Reply:
        with self._lock:
            device = self._devices.get(device_id)
            if device is None:
                reason = f"Cannot find device with ztd Id {device_id}"
            elif not device["userPrincipalName"]:
                reason = "Device has no user assigned"
            else:
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

    def _fault_reply(self, call: _Call, fault: Fault) -> Reply:
        if fault.kind == "drop":
            return DROP
        if fault.kind == "expired_token":
            message = "Lifetime validation failed, the token is expired."
            return self._error(call, 401, "InvalidAuthenticationToken", message)
        code, message = _STATUS_DEFAULTS.get(fault.status, ("UnknownError", "Injected failure."))
        if fault.intune:
            message = self._intune(
                call, message if fault.status == 403 else "An error has occurred"
            )
        if fault.intune and fault.status == 401:
            message = json.dumps({"ErrorCode": "Forbidden", "Message": message})
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        return self._error(call, fault.status, fault.code or code, message, headers)

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
        call: _Call, status: int, body: object = None, headers: dict[str, str] | None = None
    ) -> Reply:
        every = {"request-id": call.request_id}
        if call.client_request_id is not None:
            every["client-request-id"] = call.client_request_id
        return Reply(status, body, every | (headers or {}))

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
