"""Unassign the user from one Autopilot device: read, guard, write, and re-read when unsure.

    (serial number ──▶ shared.lookup: the one device with it)
    GET device ── 404 ──────────────────────────────▶ DEVICE_NOT_FOUND
        │ no user ──────────────────────────────────▶ alreadyUnassigned (no write)
        │ user ≠ expectedUserPrincipalName ─────────▶ USER_MISMATCH (no write)
        │ dry run ──────────────────────────────────▶ wouldUnassign (no write)
        ▼
    POST unassignUserFromDevice ── 2xx ─────────────▶ unassigned
        │ failed, and it may or may not have happened
        ▼
    GET device again ── no user ────────────────────▶ unassigned (alreadyUnassigned when Graph
        │                                             refused every attempt of ours)
        ├── someone else ───────────────────────────▶ USER_MISMATCH
        └── still the user, or unreadable ──────────▶ the POST's own failure

Before any POST that follows a wait (retry, token, write pace) or a failed attempt, the device
is read again with the same three-way judgement: still the user first read, go on; nobody,
settle; someone else, 409 and no write. Graph has no conditional write, so a reassignment in the
moment between that read and the POST stays possible.

Every step is safe to repeat, so a replayed ticket or a retried flow never does harm.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from shared.graph import AUTOPILOT, Call, GraphClient
from shared.graph_answer import problem_for
from shared.lookup import find_by_serial
from shared.problems import Failure, Problem
from shared.request import UnassignRequest, same_user
from shared.retry import MIN_ATTEMPT_SECONDS

UNASSIGNED = "unassigned"
ALREADY_UNASSIGNED = "alreadyUnassigned"
WOULD_UNASSIGN = "wouldUnassign"


class Device(NamedTuple):
    """The Autopilot device as Graph described it."""

    id: str
    serial_number: str
    user_principal_name: str
    addressable_user_name: str
    enrollment_state: str
    last_contacted: str

    @classmethod
    def from_graph(cls, body: Any, device_id: str) -> Device:
        """The device Graph described, or GRAPH_ERROR: a guess about its user could do harm."""
        if not isinstance(body, dict) or not isinstance(body.get("userPrincipalName"), str):
            raise Problem(
                Failure.GRAPH_ERROR,
                "Graph answered the device read without the device's user; nothing was changed.",
            )
        if str(body.get("id", device_id)).lower() != device_id:
            raise Problem(
                Failure.GRAPH_ERROR, "Graph answered the device read with another device."
            )
        data = body

        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            id=device_id,
            serial_number=text("serialNumber"),
            user_principal_name=text("userPrincipalName"),
            addressable_user_name=text("addressableUserName"),
            enrollment_state=text("enrollmentState"),
            last_contacted=text("lastContactedDateTime"),
        )

    def name(self) -> str:
        return f"Autopilot device {self.serial_number or '(no serial)'} ({self.id})"


class Outcome(NamedTuple):
    """What the unassign did (or would do) to the device."""

    status: str
    device: Device

    def message(self) -> str:
        name = self.device.name()
        if self.status == ALREADY_UNASSIGNED:
            return f"{name} has no assigned user; nothing was changed."
        if self.status == WOULD_UNASSIGN:
            return (
                f"Dry run: would unassign {self.device.user_principal_name} from {name}; "
                "nothing was changed."
            )
        return (
            f"Unassigned {self.device.user_principal_name} from {name}. "
            "Intune can take several minutes (up to about 15) to show the change."
        )


async def read_device(graph: GraphClient, device_id: str, call: Call) -> Device:
    response = await graph.call("GET", f"{AUTOPILOT}/{device_id}", call)
    if response.ok:
        device = Device.from_graph(response.body, device_id)
        call.device.setdefault("id", device_id)
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
    if expected_upn is None or same_user(current, expected_upn):
        return
    raise Problem(
        Failure.USER_MISMATCH,
        f"The device is assigned to {current}, not to {expected_upn}; nothing was changed. "
        "If the ticket is still right, send it again with the current user.",
        extra={"currentUserPrincipalName": current, "serialNumber": device.serial_number},
    )


class Settled(Exception):
    """Read again before a write, the device needs none: it has no user now."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


def _judge(first: Device, now: Device, call: Call) -> None:
    """Whether a write may go on against `now`, the device read again since `first`.

    Returns when the user first read is still there; raises Settled when nobody is (ours if one
    of our attempts may have acted, else someone else's doing) and a 409 when someone else is.
    """
    if now.user_principal_name and same_user(now.user_principal_name, first.user_principal_name):
        return
    if not now.user_principal_name:
        if call.write_may_have_acted:
            raise Settled(Outcome(UNASSIGNED, first))
        raise Settled(Outcome(ALREADY_UNASSIGNED, now))
    raise Problem(
        Failure.USER_MISMATCH,
        f"{first.name()} was assigned to {first.user_principal_name} when this request read it, "
        f"and is now assigned to {now.user_principal_name}; "
        + ("nothing more was changed" if call.write_may_have_acted else "nothing was changed")
        + ". The ticket was about the first user: check it before sending it again.",
        extra={
            "currentUserPrincipalName": now.user_principal_name,
            "serialNumber": first.serial_number,
        },
    )


async def _write(graph: GraphClient, device: Device, call: Call) -> Outcome:
    """Unassign the user `device` was read with, and nobody else."""

    async def recheck() -> None:
        _judge(device, await read_device(graph, device.id, call), call)

    path = f"{AUTOPILOT}/{device.id}/unassignUserFromDevice"
    try:
        response = await graph.call("POST", path, call, recheck=recheck)
    except Settled as settled:
        return settled.outcome
    except Problem as exc:
        if exc.failure is Failure.USER_MISMATCH or not call.write_may_have_acted:
            raise  # reassigned, or every attempt was refused or never sent: nothing was done
        failure = exc
    else:
        if response.ok and not response.unreadable:
            return Outcome(UNASSIGNED, device)
        call.write_may_have_acted |= response.ok  # a 2xx not from Graph may hide one from it
        failure = (
            Problem(
                Failure.GRAPH_ERROR,
                f"The answer to the write (HTTP {response.status}) was not Graph's, so whether "
                "the user was removed is unknown; check the device's assignment.",
                graph_request_id=response.request_id,
            )
            if response.ok
            else problem_for(response)
        )
    # The write failed in a way that does not prove it did not happen (a 4xx after a stale read,
    # a dropped connection after Graph acted): the device itself is the only honest answer.
    if call.deadline.remaining() < MIN_ATTEMPT_SECONDS:
        raise failure
    try:
        now = await read_device(graph, device.id, call)
    except Problem:
        raise failure from None
    try:
        _judge(device, now, call)
    except Settled as settled:
        return settled.outcome
    raise failure


async def resolve(graph: GraphClient, request: UnassignRequest, call: Call) -> str:
    if request.device_id is not None:
        return request.device_id
    assert request.serial_number is not None  # the edge guarantees exactly one of the two
    return await find_by_serial(graph, request.serial_number, call)


async def current(graph: GraphClient, request: UnassignRequest, call: Call) -> Device:
    """The device as Graph has it now: the status check."""
    return await read_device(graph, await resolve(graph, request, call), call)


async def unassign(graph: GraphClient, request: UnassignRequest, call: Call) -> Outcome:
    device = await current(graph, request, call)
    if not device.user_principal_name:
        return Outcome(ALREADY_UNASSIGNED, device)
    _guard(device, request.expected_upn)
    if request.dry_run:
        return Outcome(WOULD_UNASSIGN, device)
    return await _write(graph, device, call)


class Memory(Protocol):
    """What earlier attempts at one job input left behind, kept in the job's storage."""

    @property
    def first_user(self) -> str | None:
        """The user read before the first write of any attempt; None before that."""

    @property
    def write_started(self) -> bool:
        """Whether an earlier attempt may have sent a write (stored before sending it)."""

    async def remember(self, user: str) -> None:
        """Store `user` as the first user read, and that a write is starting, before it is sent."""


async def unassign_remembering(
    graph: GraphClient, request: UnassignRequest, call: Call, memory: Memory
) -> Outcome:
    """The single-device path for an input that may be attempted again, hours apart.

    The first attempt stores the user it read before it writes. Every later attempt judges the
    device against that stored user, as the single-device path judges a re-read against its
    first read: still that user, write; nobody, `unassigned` naming them when an earlier write
    may have landed (else `alreadyUnassigned`); someone else, 409 and no write. So a retry never
    removes a new owner.
    """
    device = await current(graph, request, call)
    first = memory.first_user
    if first is None:
        if not device.user_principal_name:
            return Outcome(ALREADY_UNASSIGNED, device)
        _guard(device, request.expected_upn)
        if request.dry_run:
            return Outcome(WOULD_UNASSIGN, device)
        await memory.remember(device.user_principal_name)
        return await _write(graph, device, call)
    seen = device._replace(user_principal_name=first)
    call.write_may_have_acted = memory.write_started
    try:
        _judge(seen, device, call)
    except Settled as settled:
        return settled.outcome
    return await _write(graph, device, call)
