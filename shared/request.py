"""The edge: raw caller input in, a small validated request out (or a 4xx problem).

Nothing behind this module sees a raw string from the caller. The device id is the only value
that reaches a Graph URL, and it only does so in the normalised lower-case 8-4-4-4-12 form.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.problems import Failure, Problem

MAX_BODY_BYTES = 16 * 1024
FIELDS = ("deviceId", "ticketId", "expectedUserPrincipalName")
MAX_UPN_LENGTH = 256

_GUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)
_TICKET = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
_CORRELATION = _TICKET
# Copy-paste from tickets brings spaces, tabs and line breaks around an id; nothing else is trimmed.
_SURROUNDING_WHITESPACE = " \t\r\n"
_ZERO_GUID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class UnassignRequest:
    device_id: str
    ticket_id: str | None
    expected_upn: str | None


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


def _ticket_id(value: object) -> str:
    if not isinstance(value, str) or not _TICKET.fullmatch(value):
        raise invalid("ticketId must be 1 to 64 characters of letters, digits and . _ : -")
    return value


def _expected_upn(value: object) -> str:
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


def parse_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object with known fields only; an empty body is an empty object."""
    if len(body) > MAX_BODY_BYTES:
        raise Problem(Failure.BODY_TOO_LARGE, f"The body must be at most {MAX_BODY_BYTES} bytes.")
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
    if not isinstance(data, dict):
        raise invalid('The body must be a JSON object such as {"deviceId": "..."}.')
    unknown = sorted(key for key in data if key not in FIELDS)
    if unknown:
        names = ", ".join(repr(key[:64]) for key in unknown[:5])
        raise invalid(f"Unknown field(s) {names}; the allowed fields are {', '.join(FIELDS)}.")
    return data


def parse_unassign(
    body: bytes, route_device_id: str | None, content_type: str | None
) -> UnassignRequest:
    check_content_type(content_type)
    data = parse_body(body)
    path_id = None if route_device_id is None else normalise_device_id(route_device_id, "The URL")
    body_id = None if "deviceId" not in data else normalise_device_id(data["deviceId"], "deviceId")
    if path_id and body_id and path_id != body_id:
        raise invalid("The device id in the URL and deviceId in the body differ.")
    device_id = path_id or body_id
    if device_id is None:
        raise invalid("Give the Autopilot device id as deviceId in the body or in the URL.")
    return UnassignRequest(
        device_id=device_id,
        ticket_id=_ticket_id(data["ticketId"]) if "ticketId" in data else None,
        expected_upn=(
            _expected_upn(data["expectedUserPrincipalName"])
            if "expectedUserPrincipalName" in data
            else None
        ),
    )


def correlation_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Correlation-Id when it is safe to log and forward, else a new one."""
    offered = headers.get("x-correlation-id")
    if offered is not None and _CORRELATION.fullmatch(offered):
        return offered
    return str(uuid.uuid4())
