"""The edge: raw caller input in, a small validated request out (or a 4xx problem).

Nothing behind this module sees a raw string from the caller. The device id is the only value
that reaches a Graph URL, and it only does so in the normalised lower-case 8-4-4-4-12 form.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.problems import Failure, Problem

MAX_BODY_BYTES = 16 * 1024
FIELDS = ("deviceId", "serialNumber", "ticketId", "expectedUserPrincipalName", "dryRun")
MAX_UPN_LENGTH = 256
# A short serial would match (and page through) much of the tenant with `contains`.
MIN_SERIAL_LENGTH = 4
MAX_SERIAL_LENGTH = 128

_GUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)
_TICKET = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
_CORRELATION = _TICKET
# Copy-paste from tickets brings spaces, tabs and line breaks around an id; nothing else is trimmed.
_SURROUNDING_WHITESPACE = " \t\r\n"
_ZERO_GUID = "00000000-0000-0000-0000-000000000000"


class UnassignRequest(NamedTuple):
    """Exactly one of `device_id` and `serial_number` is set."""

    device_id: str | None
    serial_number: str | None
    ticket_id: str | None = None
    expected_upn: str | None = None
    dry_run: bool = False


def invalid(detail: str) -> Problem:
    return Problem(Failure.INVALID_REQUEST, detail)


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029" for ch in text)


def normalise_device_id(value: object, source: str) -> str:
    """A GUID as lower-case 8-4-4-4-12; surrounding whitespace and one pair of braces allowed."""
    if not isinstance(value, str):
        raise invalid(f"{source} must be a string holding the Autopilot device id (a GUID).")
    text = value.strip(_SURROUNDING_WHITESPACE)
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not _GUID.fullmatch(text):
        raise invalid(
            f"{source} must be an Autopilot device id: a GUID such as "
            "'fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa'. It is not the Intune or Entra device id."
        )
    text = text.lower()
    if text == _ZERO_GUID:
        raise invalid(f"{source} is the all-zero GUID, which never names a real device.")
    return text


def normalise_serial(value: object) -> str:
    if not isinstance(value, str):
        raise invalid("serialNumber must be a string.")
    text = value.strip(_SURROUNDING_WHITESPACE)
    if not MIN_SERIAL_LENGTH <= len(text) <= MAX_SERIAL_LENGTH or not text.isprintable():
        raise invalid(
            f"serialNumber must be {MIN_SERIAL_LENGTH} to {MAX_SERIAL_LENGTH} printable "
            "characters (no control characters)."
        )
    return text


def ticket_id(value: object) -> str:
    if not isinstance(value, str) or not _TICKET.fullmatch(value):
        raise invalid("ticketId must be 1 to 64 characters of letters, digits and . _ : -")
    return value


def expected_upn(value: object) -> str:
    if not isinstance(value, str):
        raise invalid(
            "expectedUserPrincipalName must be a string (omit the field to skip the check)."
        )
    text = value.strip(_SURROUNDING_WHITESPACE)
    if not text or len(text) > MAX_UPN_LENGTH or _has_control(text) or "@" not in text:
        raise invalid(
            "expectedUserPrincipalName must be a user principal name such as "
            "'alex@contoso.com' (omit the field to skip the check)."
        )
    return text


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise invalid(f"The JSON body names {key!r} more than once.")
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    raise invalid(f"The JSON body holds {name}, which is not valid JSON.")


def check_content_type(content_type: str | None) -> None:
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise Problem(
            Failure.UNSUPPORTED_MEDIA_TYPE,
            f"Content-Type must be application/json, not {media[:64]!r}.",
        )


def dry_run(value: object) -> bool:
    if not isinstance(value, bool):
        raise invalid("dryRun must be a JSON boolean: true or false, not a string or number.")
    return value


def known_fields(data: dict[str, Any], fields: tuple[str, ...], where: str = "") -> None:
    unknown = sorted(key for key in data if key not in fields)
    if unknown:
        names = ", ".join(repr(key[:64]) for key in unknown[:5])
        raise invalid(
            f"Unknown field(s) {names}{where}; the allowed fields are {', '.join(fields)}."
        )


def parse_body(
    body: bytes, fields: tuple[str, ...] = FIELDS, limit: int = MAX_BODY_BYTES
) -> dict[str, Any]:
    """The body as a JSON object with known fields only; an empty body is an empty object."""
    if len(body) > limit:
        raise Problem(Failure.BODY_TOO_LARGE, f"The body must be at most {limit} bytes.")
    if not body.strip():
        return {}
    try:
        text = body.decode("utf-8")
        data = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise invalid("The body is not UTF-8 text.") from None
    except RecursionError:
        raise invalid("The JSON body is nested too deeply.") from None
    except json.JSONDecodeError as exc:
        raise invalid(f"The body is not valid JSON ({exc.msg} at character {exc.pos}).") from None
    except ValueError:  # e.g. an integer beyond Python's digit limit
        raise invalid("The JSON body holds a number too large to read.") from None
    if not isinstance(data, dict):
        raise invalid('The body must be a JSON object such as {"deviceId": "..."}.')
    known_fields(data, fields)
    return data


def target(data: dict[str, Any], route_device_id: str | None) -> tuple[str | None, str | None]:
    """(device id, serial number) with exactly one of them set."""
    path_id = None if route_device_id is None else normalise_device_id(route_device_id, "The URL")
    body_id = None if "deviceId" not in data else normalise_device_id(data["deviceId"], "deviceId")
    if path_id and body_id and path_id != body_id:
        raise invalid("The device id in the URL and deviceId in the body differ.")
    device_id = path_id or body_id
    serial = None if "serialNumber" not in data else normalise_serial(data["serialNumber"])
    if device_id and serial:
        raise invalid("Give either the Autopilot device id or serialNumber, not both.")
    if not device_id and not serial:
        raise invalid("Give the Autopilot device id (deviceId, or in the URL) or serialNumber.")
    return device_id, serial


def parse_unassign(
    body: bytes, route_device_id: str | None, content_type: str | None
) -> UnassignRequest:
    check_content_type(content_type)
    data = parse_body(body)
    device_id, serial = target(data, route_device_id)
    return UnassignRequest(
        device_id=device_id,
        serial_number=serial,
        ticket_id=ticket_id(data["ticketId"]) if "ticketId" in data else None,
        expected_upn=(
            expected_upn(data["expectedUserPrincipalName"])
            if "expectedUserPrincipalName" in data
            else None
        ),
        dry_run=dry_run(data["dryRun"]) if "dryRun" in data else False,
    )


def parse_lookup(route_device_id: str | None, params: Mapping[str, str]) -> UnassignRequest:
    """A status check: the device id in the URL or `?serialNumber=`; other parameters are ignored."""
    query = {"serialNumber": params["serialNumber"]} if "serialNumber" in params else {}
    device_id, serial = target(query, route_device_id)
    return UnassignRequest(device_id=device_id, serial_number=serial)


def correlation_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Correlation-Id when it is safe to log and forward, else a new one."""
    offered = headers.get("x-correlation-id")
    if offered is not None and _CORRELATION.fullmatch(offered):
        return offered
    return str(uuid.uuid4())
