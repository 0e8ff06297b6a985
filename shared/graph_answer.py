"""What Graph answered: read within bounds, its errors decoded, and what they mean for a caller.

An answer that cannot be read (too large, not decompressible) raises `UnreadableAnswer`; a body
that is not a JSON document we can read (not JSON, nested too deeply, a non-finite number) is read
as no body, and the status decides. Graph's error shape and Intune's JSON-in-a-string messages
are decoded here; the table in `shared.problems` maps them to our answers.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, NamedTuple

import httpx

from shared.problems import Failure, Problem
from shared.retry import parse_retry_after

PERMISSION = "DeviceManagementServiceConfig.ReadWrite.All"
THROTTLING = frozenset({429, 503})
# Bounds on reading an answer: a serial number search reads up to five pages of devices, and no
# Graph answer nests deeper than a few levels.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
MAX_ANSWER_DEPTH = 64
# Header values we keep (request ids) are short GUIDs; a huge one is cut, not carried along.
MAX_HEADER_CHARS = 128
MAX_DETAIL_CHARS = 400


class GraphError(NamedTuple):
    """Graph's error code and readable reason from an error answer."""

    code: str
    message: str
    request_id: str | None


class GraphResponse(NamedTuple):
    """A final answer from Graph: status, decoded JSON body and request id."""

    status: int
    body: Any
    request_id: str | None
    retry_after: str | None = None
    # A body came that is not a JSON document we can read (HTML from a proxy, garbage).
    unreadable: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> GraphError:
        return decode_error(self.status, self.body, self.request_id)


def _readable(message: str) -> str:
    """Intune nests a JSON document in `error.message`; keep its reason and support ids only."""
    try:
        inner = json.loads(message)
    except (ValueError, RecursionError):
        return message[:MAX_DETAIL_CHARS]
    if isinstance(inner, dict) and isinstance(inner.get("Message"), str):
        return str(inner["Message"]).split(" - Url:", 1)[0][:MAX_DETAIL_CHARS]
    return "Graph gave no readable reason."


def decode_error(status: int, body: Any, request_id: str | None) -> GraphError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphError(f"HTTP{status}", "", request_id)
    code = error.get("code")
    message = error.get("message")
    return GraphError(
        code if isinstance(code, str) and code else f"HTTP{status}",
        _readable(message) if isinstance(message, str) else "",
        request_id,
    )


def problem_for(response: GraphResponse) -> Problem:
    """What a Graph error means for our caller (see the table in shared.problems)."""
    err = response.error()
    # Each use adds its own sentence after this one: no full stop of Graph's may double ours.
    reason = f"Graph answered {response.status} {err.code}: {err.message}".rstrip(": .")
    if response.status == 403 or (
        response.status == 401 and err.code != "InvalidAuthenticationToken"
    ):
        return Problem(
            Failure.GRAPH_PERMISSION,
            f"{reason}. The Function App's managed identity needs the Microsoft Graph application "
            f"permission {PERMISSION} (and the tenant an Intune licence). A new grant reaches an "
            "app that already holds a token only with its next token, which can take hours: "
            "this app reuses its token until 5 minutes before it expires.",
            graph_code=err.code,
            graph_request_id=err.request_id,
        )
    if response.status in THROTTLING:
        return Problem(
            Failure.GRAPH_THROTTLED,
            f"{reason}. Try again after the Retry-After interval.",
            retry_after=parse_retry_after(response.retry_after, time.time()) or 1.0,
            graph_code=err.code,
            graph_request_id=err.request_id,
        )
    return Problem(
        Failure.GRAPH_ERROR, f"{reason}.", graph_code=err.code, graph_request_id=err.request_id
    )


class UnreadableAnswer(Exception):
    """Graph's answer could not be read within our bounds (size)."""


def parse_json(content: bytes) -> Any:
    """The JSON document in `content`, or None when it is not one we can read.

    Not JSON, nested deeper than MAX_ANSWER_DEPTH, or holding a number that is not finite (which
    no answer of ours could carry on as JSON): each is no body.
    """
    if not content:
        return None
    try:
        value = _DECODER.decode(content.decode(json.detect_encoding(content), "surrogatepass"))
    except (ValueError, RecursionError):
        return None
    if content.count(b"{") + content.count(b"[") > MAX_ANSWER_DEPTH and not _shallow(value):
        return None
    return value


def _not_a_number(name: str) -> float:
    raise ValueError(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


# Built once: json.loads with hooks would build a new decoder for every answer.
_DECODER = json.JSONDecoder(parse_constant=_not_a_number, parse_float=_finite)


def _shallow(value: Any) -> bool:
    """Whether no list or object in `value` sits deeper than MAX_ANSWER_DEPTH (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_ANSWER_DEPTH:
            return False
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return True


async def read_bounded(response: httpx.Response) -> bytes:
    """The decoded body, refusing more than MAX_ANSWER_BYTES (declared or sent)."""
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and len(declared) > len(str(MAX_ANSWER_BYTES)):
        raise UnreadableAnswer(f"it declares more than {MAX_ANSWER_BYTES} bytes")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise UnreadableAnswer(f"it declares more than {MAX_ANSWER_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise UnreadableAnswer(f"it is larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
