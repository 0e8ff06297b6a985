"""Local stand-in for the few Microsoft Graph v1.0 Intune Autopilot endpoints the function uses.

Real Graph needs a tenant, an Intune licence and an admin-consented permission, and it cannot be
made to throttle, time out or lie on cue. This emulator keeps Autopilot devices in memory, checks
emulator tokens (see ``devtools.tokens``), answers in Graph's shapes (``request-id`` headers,
Graph error bodies, Intune's JSON-inside-a-string messages) and can be told to misbehave, so the
function's retry and error handling can be exercised locally and in tests.

Choices where the real service is vague or undocumented:

- Unassigning a device that has no user answers 400 BadRequest with the nested message "Device
  has no user assigned". Graph documents no answer for this; 400 is the conservative guess.
- ``contains(serialNumber,'...')`` with a "-" in the value answers 400 BadRequest, as reported
  for the real service; ``eq`` filters answer 400 as well, since the endpoint rejects them.
- Without ``$filter`` the collection lists every device; ``$select`` is honoured; other ``$``
  query options answer 400.
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
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

from devtools import tokens
from devtools.identity_emulator import DROP, EmulatorServer, Incoming, Reply

DEVICES_PATH = "/v1.0/deviceManagement/windowsAutopilotDeviceIdentities"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
DEMO_ASSIGNED_ID = "3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a31"  # 5CG1234XYZ, Alex Wilber
DEMO_UNASSIGNED_ID = "8b1e4c7a-2d5f-4a93-b6e0-9c3f7a2d1e42"  # PF3ABC12, no user
DEMO_SPACED_SERIAL_ID = "c2a7f5d1-6e3b-4d8a-8f19-0b4e6c9d2a53"  # "MXL 4411 22X"
DEMO_HYPHENATED_SERIAL_ID = "e5d3b9f7-4a1c-4b6e-a2d8-7f0c1e5b3a64"  # "R90-ABC-123"
DEMO_DEFAULT_STRING_IDS = (  # two devices whose serial is "Default string"
    "1a9c6e3f-8d2b-4f7a-b5c1-3e8d0f6a9b75",
    "7d4f1b8c-5e2a-4c9d-8b36-2a7e9c4f1d86",
)
FAULT_KINDS = frozenset({"status", "expired_token", "slow", "drop", "drop_after", "stale"})

_NEVER = "0001-01-01T00:00:00Z"
_HP, _LENOVO, _WHITE_BOX = "HP", "LENOVO", "Default string"
# id, serial, user, addressable name, manufacturer, model, managed device id, Entra device id
_SEED = (
    (DEMO_ASSIGNED_ID, "5CG1234XYZ", "alex.wilber@contoso.example", "Alex Wilber", _HP,
     "HP EliteBook 840 G8", "0d8c2b4e-6f1a-4e3b-9c7d-8a5f2e1b4c90", "4b7e1d3a-9c2f-4a8e-b5d6-1f3c7e9a2b48"),
    (DEMO_UNASSIGNED_ID, "PF3ABC12", "", "", _LENOVO, "20W0004GUS", ZERO_GUID, ZERO_GUID),
    (DEMO_SPACED_SERIAL_ID, "MXL 4411 22X", "megan.bowen@contoso.example", "Megan Bowen", _HP,
     "HP EliteDesk 800 G6", "5e2a9f7c-3b1d-4c6e-8a4f-0d9b7c5e3a12", "9f3d5b1e-7a2c-4e8d-a6b4-2c0e8f6d4b37"),
    (DEMO_HYPHENATED_SERIAL_ID, "R90-ABC-123", "lidia.holloway@contoso.example", "Lidia Holloway",
     _LENOVO, "11DT0039US", ZERO_GUID, ZERO_GUID),
    (DEMO_DEFAULT_STRING_IDS[0], "Default string", "diego.siciliani@contoso.example",
     "Diego Siciliani", _WHITE_BOX, _WHITE_BOX, "2c6f8a0d-4e9b-4d1a-b7c3-5f1e9d3b7a26",
     "6a0c4e8f-2d7b-4f9a-8e1c-3b5d7f9a1c64"),
    (DEMO_DEFAULT_STRING_IDS[1], "Default string", "adele.vance@contoso.example", "Adele Vance",
     _WHITE_BOX, _WHITE_BOX, ZERO_GUID, ZERO_GUID),
)  # fmt: skip
_DEFAULT_FIELDS = {
    "displayName": "", "groupTag": "", "manufacturer": "", "model": "",
    "enrollmentState": "notContacted", "lastContactedDateTime": _NEVER,
    "azureActiveDirectoryDeviceId": ZERO_GUID, "managedDeviceId": ZERO_GUID,
    "purchaseOrderIdentifier": "", "productKey": "", "resourceName": "", "skuNumber": "",
    "systemFamily": "",
}  # fmt: skip
_PROPERTIES = {"id", "serialNumber", "userPrincipalName", "addressableUserName", *_DEFAULT_FIELDS}
_ACTIONS = ("unassignUserFromDevice", "microsoft.graph.unassignUserFromDevice")
_CONTAINS = re.compile(r"\s*contains\(\s*serialNumber\s*,\s*'((?:[^']|'')*)'\s*\)\s*")
_FORBIDDEN = (
    "Application is not authorized to perform this operation. Application must have one of the "
    "following scopes: DeviceManagementServiceConfig.ReadWrite.All"
)
_STATUS_DEFAULTS = {
    400: ("BadRequest", "The request is invalid."),
    401: ("UnknownError", "Authorization has been denied for this request."),
    403: ("Forbidden", _FORBIDDEN),
    429: ("TooManyRequests", "Too many requests."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "The upstream service answered with an error."),
    503: ("ServiceUnavailable", "The service is temporarily unavailable."),
    504: ("GatewayTimeout", "The upstream service did not answer in time."),
}
_FAULT_JSON = {"kind": "kind", "method": "method", "deviceId": "device_id", "count": "count",
               "status": "status", "retryAfter": "retry_after", "delay": "delay", "code": "code",
               "intune": "intune", "userPrincipalName": "user_principal_name"}  # fmt: skip


@dataclass
class Fault:
    """One injected misbehaviour; it applies to the next ``count`` matching requests."""

    kind: str
    method: str | None = None  # None: any method
    device_id: str | None = None  # None: any request (a device fault skips the collection)
    count: int = 1
    status: int = 503
    retry_after: str | None = None  # sent verbatim as Retry-After
    delay: float = 0.0
    code: str | None = None  # Graph error code; defaults by status
    intune: bool = False  # nest the message as Intune does
    user_principal_name: str | None = None  # for "stale"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}, not {self.kind!r}")
        if type(self.count) is not int or self.count < 1:
            raise ValueError("count must be a positive integer")
        if type(self.status) is not int or not 100 <= self.status <= 599:
            raise ValueError("status must be an HTTP status code")
        if type(self.delay) not in (int, float) or self.delay < 0:
            raise ValueError("delay must be a non-negative number of seconds")
        if type(self.intune) is not bool:
            raise ValueError("intune must be true or false")
        for name in ("method", "device_id", "retry_after", "code", "user_principal_name"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
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
    params: dict[str, str]
    token: str | None
    client_request_id: str | None
    request_id: str


def _route(path: str) -> tuple[str, str | None] | None:
    """("list" | "get" | "unassign", device id) for a Graph path, None when unknown."""
    if path == DEVICES_PATH:
        return "list", None
    if not path.startswith(DEVICES_PATH + "/"):
        return None
    segments = path[len(DEVICES_PATH) + 1 :].split("/")
    if len(segments) == 1 and segments[0]:
        return "get", segments[0].lower()
    if len(segments) == 2 and segments[0] and segments[1] in _ACTIONS:
        return "unassign", segments[0].lower()
    return None


class GraphEmulator:
    """Graph's Autopilot device endpoints, in memory. Thread-safe; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        audience: str | None = None,
        seed: bool = True,
        write_limit: int | None = None,
        write_window_seconds: float = 20.0,
    ) -> None:
        self._audience = audience
        self._seed = seed
        self._write_limit = write_limit
        self._write_window = write_window_seconds
        self._lock = threading.Lock()
        self._devices: dict[str, dict[str, str]] = {}
        self._previous_users: dict[str, tuple[str, str]] = {}  # before the latest unassign
        self._faults: list[Fault] = []
        self._log: list[RecordedRequest] = []
        self._writes: collections.deque[float] = collections.deque()
        self._writes_accepted = 0
        self._throttled = 0
        self._http = EmulatorServer(host=host, port=port, respond=self._respond, name="graph-emulator")
        self.reset()

    def start(self) -> GraphEmulator:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> GraphEmulator:
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
        return self._http.base_url

    @property
    def writes_accepted(self) -> int:
        """POSTs that passed the write limit (all of them when there is none)."""
        return self._writes_accepted

    @property
    def throttled(self) -> int:
        """POSTs refused with 429 by the write limit (injected faults not counted)."""
        return self._throttled

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
        """Add or replace a device; ``fields`` are other v1.0 properties by their Graph names."""
        unknown = set(fields) - set(_DEFAULT_FIELDS)
        if unknown:
            raise ValueError(f"not settable through fields: {', '.join(sorted(unknown))}")
        device = {"id": device_id.lower(), "serialNumber": serial}
        device |= {"userPrincipalName": user_principal_name}
        device |= {"addressableUserName": addressable_user_name} | _DEFAULT_FIELDS | fields
        with self._lock:
            self._devices[device["id"]] = device
            self._previous_users.pop(device["id"], None)

    def device(self, device_id: str) -> dict[str, str] | None:
        with self._lock:
            device = self._devices.get(device_id.lower())
            return None if device is None else dict(device)

    def reset(self) -> None:
        """Back to the starting devices, with no faults, no request log and no write history."""
        with self._lock:
            self._devices.clear()
            self._previous_users.clear()
            self._faults.clear()
            self._log.clear()
            self._writes.clear()
            self._writes_accepted = self._throttled = 0
        for device_id, serial, upn, name, maker, model, managed, entra in self._seed * _SEED:
            enrolled = managed != ZERO_GUID
            self.add_device(
                device_id, serial, upn, name, manufacturer=maker, model=model,
                managedDeviceId=managed, azureActiveDirectoryDeviceId=entra,
                enrollmentState="enrolled" if enrolled else "notContacted",
                lastContactedDateTime="2024-05-14T08:21:37Z" if enrolled else _NEVER,
                systemFamily=_WHITE_BOX if maker == _WHITE_BOX else "",
            )  # fmt: skip

    def inject(self, *faults: Fault) -> None:
        """Queue faults (copies; the originals are not counted down)."""
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
                    and (fault.kind != "stale" or action == "get")
                ):
                    fault.count -= 1
                    if fault.count == 0:
                        del self._faults[index]
                    return fault
        return None

    # -- HTTP ---------------------------------------------------------------------------------

    def _respond(self, incoming: Incoming) -> Reply:
        authorization = incoming.headers.get("Authorization") or ""
        scheme, _, token = authorization.partition(" ")
        call = _Call(
            incoming,
            f"{self.base_url}{incoming.path}" + (f"?{incoming.query}" if incoming.query else ""),
            dict(parse_qsl(incoming.query, keep_blank_values=True)),
            token.strip() if scheme.lower() == "bearer" and token.strip() else None,
            incoming.headers.get("client-request-id"),
            str(uuid.uuid4()),
        )
        if incoming.path.startswith("/_emulator/"):
            return self._control(call)
        with self._lock:
            self._log.append(
                RecordedRequest(
                    incoming.method, incoming.path, incoming.query, call.client_request_id,
                    call.token, time.time(),
                )
            )  # fmt: skip
        denied = self._authenticate(call)
        if denied is not None:
            return denied
        route = _route(unquote(incoming.path))
        if route is None:
            message = f"No HTTP resource was found that matches the request URI '{call.url}'."
            return self._error(call, 404, "UnknownError", message)
        action, device_id = route
        allowed = "POST" if action == "unassign" else "GET"
        if incoming.method != allowed:
            message = f"The HTTP method '{incoming.method}' is not allowed for this resource."
            return self._error(call, 405, "MethodNotAllowed", message, {"Allow": allowed})
        fault = self._take_fault(incoming.method, action, device_id)
        if fault is not None and fault.kind in ("status", "expired_token", "drop"):
            return self._fault_reply(call, fault)
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        stale = fault if fault is not None and fault.kind == "stale" else None
        reply = self._serve(call, action, device_id, stale)
        return DROP if fault is not None and fault.kind == "drop_after" else reply

    def _authenticate(self, call: _Call) -> Reply | None:
        if call.token is None:
            return self._error(call, 401, "InvalidAuthenticationToken", "Access token is empty.")
        claims = tokens.read(call.token)
        if claims is None:
            message = "CompactToken parsing failed with error code: 80049217"
            return self._error(call, 401, "InvalidAuthenticationToken", message)
        now = time.time()
        if not claims["iat"] <= now + 300 < claims["exp"] + 300:  # type: ignore[operator]
            message = "Access token has expired or is not yet valid."
            return self._error(call, 401, "InvalidAuthenticationToken", message)
        audience = (self._audience or self.base_url).rstrip("/")
        if str(claims["aud"]).rstrip("/") != audience:
            return self._error(call, 401, "InvalidAuthenticationToken", "Invalid audience.")
        return None

    def _serve(self, call: _Call, action: str, device_id: str | None, stale: Fault | None) -> Reply:
        if action == "list":
            return self._list(call)
        assert device_id is not None
        if action == "get":
            return self._get(call, device_id, stale)
        if self._write_limit is not None:
            with self._lock:
                now = time.monotonic()
                while self._writes and self._writes[0] <= now - self._write_window:
                    self._writes.popleft()
                if len(self._writes) >= self._write_limit:
                    self._throttled += 1
                    wait = max(1, math.ceil(self._writes[0] + self._write_window - now))
                    message = f"At most {self._write_limit} writes per {self._write_window:g} s."
                    return self._error(
                        call, 429, "TooManyRequests", message, {"Retry-After": str(wait)}
                    )
                self._writes.append(now)
        with self._lock:
            self._writes_accepted += 1
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
        if stale is not None and stale.user_principal_name is not None:
            device["userPrincipalName"] = stale.user_principal_name
        elif stale is not None and previous is not None:
            device["userPrincipalName"], device["addressableUserName"] = previous
        return self._select(call, [device], "/$entity")

    def _list(self, call: _Call) -> Reply:
        raw_filter = call.params.get("$filter")
        if raw_filter is None:
            needle = ""
        elif (match := _CONTAINS.fullmatch(raw_filter)) is None:
            operator = "'eq' is" if re.search(r"\beq\b", raw_filter) else "this filter is"
            message = f"Invalid filter clause: {operator} not supported here; use contains(serialNumber,'...')."
            return self._error(call, 400, "BadRequest", message)
        elif "-" in (needle := match[1].replace("''", "'")):
            return self._error(call, 400, "BadRequest", self._intune(call, "An error has occurred"))
        top, skip = call.params.get("$top", "100"), call.params.get("$skiptoken", "0")
        if not (top.isdigit() and 1 <= int(top) <= 1000 and skip.isdigit()):
            return self._error(call, 400, "BadRequest", "Invalid $top or $skiptoken value.")
        with self._lock:
            found = [dict(d) for d in self._devices.values() if needle.lower() in d["serialNumber"].lower()]
        start, end = int(skip), int(skip) + int(top)
        reply = self._select(call, found[start:end], "")
        if end < len(found) and isinstance(reply.body, dict):
            query = {k: v for k, v in call.params.items() if k in ("$filter", "$select")}
            query |= {"$top": top, "$skiptoken": str(end)}
            reply.body["@odata.nextLink"] = f"{self.base_url}{DEVICES_PATH}?{urlencode(query)}"
        return reply

    def _select(self, call: _Call, devices: list[dict[str, str]], suffix: str) -> Reply:
        """Answer ``devices`` (one entity when ``suffix`` is "/$entity"), honouring $select."""
        unsupported = sorted(p for p in call.params if p.startswith("$") and p != "$select")
        if unsupported and suffix or set(unsupported) - {"$filter", "$top", "$skiptoken"}:
            message = f"Query option '{unsupported[0]}' is not supported here."
            return self._error(call, 400, "BadRequest", message)
        selected = [s.strip() for s in call.params["$select"].split(",")] if "$select" in call.params else []
        for name in selected:
            if name not in _PROPERTIES:
                message = f"Could not find a property named '{name}' on type 'microsoft.graph.windowsAutopilotDeviceIdentity'."
                return self._error(call, 400, "BadRequest", message)
        if selected:
            devices = [{k: v for k, v in d.items() if k in selected} for d in devices]
        context = DEVICES_PATH.replace("/v1.0/", "/v1.0/$metadata#", 1)
        context += f"({','.join(selected)})" if selected else ""
        context = f"{self.base_url}{context}{suffix}"
        if suffix:
            return self._reply(call, 200, {"@odata.context": context, **devices[0]})
        return self._reply(call, 200, {"@odata.context": context, "value": devices})

    def _fault_reply(self, call: _Call, fault: Fault) -> Reply:
        if fault.kind == "drop":
            return DROP
        if fault.kind == "expired_token":
            message = "Lifetime validation failed, the token is expired."
            return self._error(call, 401, "InvalidAuthenticationToken", message)
        code, message = _STATUS_DEFAULTS.get(fault.status, ("UnknownError", "Injected failure."))
        if fault.intune:
            message = self._intune(call, message if fault.status == 403 else "An error has occurred")
        if fault.intune and fault.status == 401:
            inner = {"ErrorCode": "Forbidden", "Message": message, "Target": None, "Details": None,
                     "InnerError": None, "InstanceAnnotations": [], "TypeAnnotation": None}  # fmt: skip
            message = json.dumps(inner)
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        return self._error(call, fault.status, fault.code or code, message, headers)

    def _control(self, call: _Call) -> Reply:
        route = (call.incoming.method, call.incoming.path)
        try:
            if route == ("POST", "/_emulator/faults"):
                body = self._json(call)
                specs = body if isinstance(body, list) else [body]
                if not all(isinstance(s, dict) and set(s) <= set(_FAULT_JSON) for s in specs):
                    raise ValueError(f"a fault is a JSON object with keys from {list(_FAULT_JSON)}")
                self.inject(*(Fault(**{_FAULT_JSON[k]: v for k, v in s.items()}) for s in specs))
            elif route == ("DELETE", "/_emulator/faults"):
                self.clear_faults()
            elif route == ("POST", "/_emulator/reset"):
                self.reset()
            elif route == ("GET", "/_emulator/requests"):
                log = [{"method": r.method, "path": r.path, "query": r.query, "time": r.time,
                        "clientRequestId": r.client_request_id, "token": r.token}
                       for r in self.requests]  # fmt: skip
                return self._reply(call, 200, {"value": log})
            elif route == ("GET", "/_emulator/devices"):
                with self._lock:
                    devices = [dict(d) for d in self._devices.values()]
                return self._reply(call, 200, {"value": devices})
            elif route == ("POST", "/_emulator/devices"):
                body = self._json(call)
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
        except (ValueError, TypeError) as exc:
            return self._error(call, 400, "BadRequest", str(exc))
        return self._reply(call, 204)

    # -- building answers ---------------------------------------------------------------------

    @staticmethod
    def _json(call: _Call) -> Any:
        try:
            return json.loads(call.incoming.body)
        except ValueError:
            raise ValueError("the request body is not JSON") from None

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

    def _error(
        self,
        call: _Call,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        inner = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
            "request-id": call.request_id,
            "client-request-id": call.client_request_id or call.request_id,
        }
        body = {"error": {"code": code, "message": message, "innerError": inner}}
        return self._reply(call, status, body, headers)
