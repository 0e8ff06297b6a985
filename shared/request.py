"""The edge: raw caller input in, a small validated request out (or a 4xx problem).

Nothing behind this module sees a raw string from the caller. The device id is the only value
that reaches a Graph URL, and it only does so in the normalised lower-case 8-4-4-4-12 form.
"""

from __future__ import annotations

import json
import math
import re
import string
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

from shared.problems import Failure, Problem
from shared.settings import GUID

# The largest body the connector's definition allows (every string at its longest, every
# character escaped as \uXXXX, pretty-printed) is about 4.4 KB: it must never be 413.
MAX_BODY_BYTES = 16 * 1024
FIELDS = ("deviceId", "serialNumber", "ticketId", "expectedUserPrincipalName", "dryRun")
MAX_UPN_LENGTH = 256
# A short serial would match (and page through) much of the tenant with `contains`.
MIN_SERIAL_LENGTH = 4
MAX_SERIAL_LENGTH = 128

_TICKET = re.compile(r"[A-Za-z0-9._:-]{1,64}", re.ASCII)
_CORRELATION = _TICKET
# Copy-paste from tickets brings spaces, tabs and line breaks around an id; nothing else is trimmed.
_SURROUNDING_WHITESPACE = " \t\r\n"
_ZERO_GUID = "00000000-0000-0000-0000-000000000000"
# A name from the caller is repeated in an answer only when it cannot carry anything but itself.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}", re.ASCII)
MAX_NAMED = 5
# The Functions host's own function key parameter: checked (and consumed) before we run.
_HOST_KEY_PARAMETER = "code"
# json.loads turns an escaped "\ud800" into a lone surrogate: a str that is not text.
_SURROGATE = re.compile("[\ud800-\udfff]")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


class UnassignRequest(NamedTuple):
    """Exactly one of `device_id` and `serial_number` is set."""

    device_id: str | None
    serial_number: str | None
    ticket_id: str | None = None
    expected_upn: str | None = None
    dry_run: bool = False


def invalid(detail: str) -> Problem:
    return Problem(Failure.INVALID_REQUEST, detail)


def plain_name(name: str) -> str | None:
    """`name` when it is safe to repeat in an answer (1 to 64 of A-Z a-z 0-9 . _ -), else None.

    Anything else the caller sent may be a secret pasted into the wrong place, a control
    character or markup; it is described, never echoed.
    """
    return name if isinstance(name, str) and _PLAIN_NAME.fullmatch(name) else None


def _unknown(names: list[str], noun: str, plural: str) -> str:
    """Names the plain ones (at most MAX_NAMED) and counts the rest: "unknown fields 'a' and 2 more"."""
    plain = sorted(name for name in names if plain_name(name) is not None)
    named = [f"'{name}'" for name in plain[:MAX_NAMED]]
    others = len(names) - len(named)
    if not named:
        return f"an unexpected {noun}" if others == 1 else f"{others} unexpected {plural}"
    kind = noun if len(names) == 1 else plural
    if others:
        return f"unknown {kind} {', '.join(named)} and {others} more"
    if len(named) == 1:
        return f"unknown {kind} {named[0]}"
    return f"unknown {kind} {', '.join(named[:-1])} and {named[-1]}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def check_query(params: Mapping[str, str], allowed: tuple[str, ...] = ()) -> None:
    """A 400 for any query parameter outside `allowed` (exact names), rather than ignoring it.

    A parameter we do not read is a caller's mistake (a `dryRun=true` that would be ignored on a
    write is the dangerous one), so it is refused. The host's function key `code`, in any case,
    is not ours to judge and is never named. Values are never echoed.
    """
    unexpected = [
        name
        for name in params
        if name not in allowed and not (name.isascii() and name.lower() == _HOST_KEY_PARAMETER)
    ]
    if not unexpected:
        return
    what = _unknown(unexpected, "query parameter", "query parameters")
    if allowed:
        hint = f"the query string accepts only {', '.join(allowed)}."
    else:
        hint = "POST takes no query parameters: send options in the JSON body."
    raise invalid(f"{_sentence(what)}; {hint}")


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029" for ch in text)


def normalise_device_id(value: object, source: str) -> str:
    """A GUID as lower-case 8-4-4-4-12; surrounding whitespace and one pair of braces allowed."""
    if not isinstance(value, str):
        raise invalid(f"{source} must be a string holding the Autopilot device id (a GUID).")
    text = value.strip(_SURROUNDING_WHITESPACE)
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not GUID.fullmatch(text):
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
    if not text.isascii():
        raise invalid(
            "expectedUserPrincipalName must be ASCII: user principal names are ASCII "
            "(omit the field to skip the check)."
        )
    if not text or len(text) > MAX_UPN_LENGTH or _has_control(text) or "@" not in text:
        raise invalid(
            "expectedUserPrincipalName must be a user principal name such as "
            "'alex@contoso.com' (omit the field to skip the check)."
        )
    return text


def user_key(upn: str) -> str:
    """The form user names are grouped and compared by: A-Z lowered, nothing else touched.

    Entra ID compares user principal names (which are ASCII) without regard to ASCII case.
    Unicode case folding would make 'STRASSE' equal 'straße' and a long s (U+017F) equal s:
    names that are different users.
    """
    return upn.translate(_ASCII_LOWER)


def same_user(a: str, b: str) -> bool:
    """Whether two user principal names name the same user (ASCII case-insensitive only)."""
    return user_key(a) == user_key(b)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            name = plain_name(key)
            named = f"'{name}'" if name else "a field"
            raise invalid(f"The JSON body names {named} more than once.")
        seen[key] = value
    return seen


def _reject_constant(name: str) -> Any:
    raise invalid(f"The JSON body holds {name}, which is not valid JSON.")


def _finite(text: str) -> float:
    """A JSON number as a float; one too large for a float (1e999) would read as infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise invalid("The JSON body holds a number too large to read.")
    return value


def check_content_type(content_type: str | None) -> None:
    """application/json (the only type the connector's definition consumes), or none at all."""
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise Problem(Failure.UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json.")


def dry_run(value: object) -> bool:
    if not isinstance(value, bool):
        raise invalid("dryRun must be a JSON boolean: true or false, not a string or number.")
    return value


def known_fields(data: dict[str, Any], fields: tuple[str, ...], where: str = "") -> None:
    """A 400 for any field outside `fields`; only plain names are repeated back."""
    unknown = [key for key in data if key not in fields]
    if unknown:
        what = _unknown(unknown, "field", "fields")
        raise invalid(f"{_sentence(what)}{where}; the allowed fields are {', '.join(fields)}.")


def _holds_surrogate(value: Any) -> bool:
    """Whether any string in a decoded JSON value (keys included) holds a surrogate code point.

    A loop over a work list, not recursion: the value may be as deep as json.loads allows.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _reject_surrogates(data: dict[str, Any]) -> None:
    """A 400 for a lone surrogate anywhere: it cannot be logged, audited or sent on as UTF-8."""
    for key, value in data.items():
        if _holds_surrogate(key) or _holds_surrogate(value):
            name = plain_name(key) or "A field"
            raise invalid(
                f"{name} holds a lone UTF-16 surrogate (\\ud800 to \\udfff), which is not "
                "text; nothing was changed."
            )


def printable_echo(value: Any) -> Any:
    """A copy of a JSON-like value safe to encode as UTF-8: lone surrogates become U+FFFD.

    For echoing caller input back (the bulk report). It never raises: other types are kept as
    they are, non-string keys are kept, a container met twice is copied once (so even a cycle
    ends), and the walk is a loop rather than recursion. Two keys that differ only in their
    surrogates become one key (the later value wins).
    """
    copies: dict[int, Any] = {}
    pending: list[tuple[Any, Any]] = []

    def clean(item: Any) -> Any:
        if isinstance(item, str):
            return _SURROGATE.sub("\ufffd", item)
        if not isinstance(item, dict | list | tuple):
            return item
        if id(item) in copies:
            return copies[id(item)]
        copy: dict[Any, Any] | list[Any] = {} if isinstance(item, dict) else []
        copies[id(item)] = copy
        pending.append((item, copy))
        return copy

    result = clean(value)
    while pending:
        source, copy = pending.pop()
        if isinstance(copy, dict):
            for key, item in source.items():
                copy[_SURROGATE.sub("\ufffd", key) if isinstance(key, str) else key] = clean(item)
        else:
            copy.extend(clean(item) for item in source)
    return result


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
            text,
            object_pairs_hook=_reject_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite,
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
    if b"\\u" in body:  # a lone surrogate can only come from a \uXXXX escape
        _reject_surrogates(data)
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
    body: bytes,
    route_device_id: str | None,
    content_type: str | None,
    *,
    serial_only: bool = False,
) -> UnassignRequest:
    """An unassign request. `serial_only`: POST /UnassignUser/ (trailing slash), the
    connector's UnassignUserBySerialNumber, which names the device by serialNumber alone."""
    check_content_type(content_type)
    data = parse_body(body)
    if serial_only:
        if "deviceId" in data:
            raise invalid(
                "POST /UnassignUser/ takes serialNumber only; to name the device by its"
                " Autopilot device id, POST /UnassignUser/{deviceId}."
            )
        if "serialNumber" not in data:
            raise invalid("Give serialNumber.")
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
    """A status check: the device id in the URL or `?serialNumber=`.

    Any other query parameter is a 400 (see check_query), so a mistyped `serialnumber=` is
    reported instead of quietly turning the check into one for the device in the URL.
    """
    check_query(params, ("serialNumber",))
    query = {"serialNumber": params["serialNumber"]} if "serialNumber" in params else {}
    device_id, serial = target(query, route_device_id)
    return UnassignRequest(device_id=device_id, serial_number=serial)


def correlation_id(headers: Mapping[str, str]) -> str:
    """The caller's X-Correlation-Id when it is safe to log and forward, else a new one."""
    offered = headers.get("x-correlation-id")
    if offered is not None and _CORRELATION.fullmatch(offered):
        return offered
    return str(uuid.uuid4())
