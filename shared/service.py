"""Unassign the user from one Autopilot device: read, guard, write, and re-read when unsure.

    GET device ── 404 ──────────────────────────────▶ DEVICE_NOT_FOUND
        │ no user ──────────────────────────────────▶ alreadyUnassigned (no write)
        │ user ≠ expectedUserPrincipalName ─────────▶ USER_MISMATCH (no write)
        ▼
    POST unassignUserFromDevice ── 2xx ─────────────▶ unassigned
        │ failed, and it may or may not have happened
        ▼
    GET device again ── no user ────────────────────▶ unassigned
        └── still assigned, or unreadable ──────────▶ the POST's own failure

Every step is safe to repeat, so a replayed ticket or a retried flow never does harm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.graph import AUTOPILOT, Call, GraphClient, problem_for
from shared.problems import Failure, Problem
from shared.request import UnassignRequest
from shared.retry import MIN_ATTEMPT_SECONDS

UNASSIGNED = "unassigned"
ALREADY_UNASSIGNED = "alreadyUnassigned"


@dataclass(frozen=True)
class Device:
    id: str
    serial_number: str
    user_principal_name: str
    addressable_user_name: str

    @classmethod
    def from_graph(cls, body: Any, device_id: str) -> Device:
        data = body if isinstance(body, dict) else {}

        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            id=device_id,
            serial_number=text("serialNumber"),
            user_principal_name=text("userPrincipalName"),
            addressable_user_name=text("addressableUserName"),
        )


@dataclass(frozen=True)
class Outcome:
    status: str
    device: Device

    def message(self) -> str:
        name = f"Autopilot device {self.device.serial_number or '(no serial)'} ({self.device.id})"
        if self.status == ALREADY_UNASSIGNED:
            return f"{name} has no assigned user; nothing was changed."
        return (
            f"Unassigned {self.device.user_principal_name} from {name}. "
            "Intune can take several minutes (up to about 15) to show the change."
        )


async def read_device(graph: GraphClient, device_id: str, call: Call) -> Device:
    response = await graph.call("GET", f"{AUTOPILOT}/{device_id}", call)
    if response.ok:
        device = Device.from_graph(response.body, device_id)
        call.device.setdefault("serialNumber", device.serial_number)
        call.device.setdefault("userPrincipalName", device.user_principal_name)
        return device
    if response.status == 404:
        err = response.error()
        raise Problem(
            Failure.DEVICE_NOT_FOUND,
            f"Intune has no Autopilot device with id {device_id}. Check that it is the Autopilot "
            "device identity id, not the Intune managed device id or the Entra device id.",
            graph_code=err.code,
            graph_request_id=err.request_id,
        )
    raise problem_for(response)


def _guard(device: Device, expected_upn: str | None) -> None:
    current = device.user_principal_name
    if expected_upn is None or current.casefold() == expected_upn.casefold():
        return
    raise Problem(
        Failure.USER_MISMATCH,
        f"The device is assigned to {current}, not to {expected_upn}; nothing was changed. "
        "If the ticket is still right, send it again with the current user.",
        extra={"currentUserPrincipalName": current, "serialNumber": device.serial_number},
    )


async def _post_unassign(graph: GraphClient, device: Device, call: Call) -> Problem | None:
    """None when Graph accepted the write, else the failure to report if the device disagrees."""
    try:
        response = await graph.call("POST", f"{AUTOPILOT}/{device.id}/unassignUserFromDevice", call)
    except Problem as exc:
        if exc.failure in (Failure.GRAPH_UNREACHABLE, Failure.GRAPH_ERROR):
            return exc
        raise  # throttled, out of time, identity: Graph did not act on it
    return None if response.ok else problem_for(response)


async def _write(graph: GraphClient, device: Device, call: Call) -> None:
    failure = await _post_unassign(graph, device, call)
    if failure is None:
        return
    # The write failed in a way that does not prove it did not happen (a 4xx after a stale read,
    # a dropped connection after Graph acted): the device itself is the only honest answer.
    if call.deadline.remaining() < MIN_ATTEMPT_SECONDS:
        raise failure
    try:
        now = await read_device(graph, device.id, call)
    except Problem:
        raise failure from None
    if now.user_principal_name:
        raise failure


async def unassign(graph: GraphClient, request: UnassignRequest, call: Call) -> Outcome:
    device = await read_device(graph, request.device_id, call)
    if not device.user_principal_name:
        return Outcome(ALREADY_UNASSIGNED, device)
    _guard(device, request.expected_upn)
    await _write(graph, device, call)
    return Outcome(UNASSIGNED, device)
