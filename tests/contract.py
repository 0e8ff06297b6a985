"""Every response the end-to-end tests receive is checked against the connector's definition.

Swagger 2.0 has no `null` type; `x-nullable: true` (what Power Automate reads) is turned into
`["<type>", "null"]` before validating with JSON Schema draft 4, the dialect Swagger 2.0 uses.

A request must match an operation of the definition (method, and path as sent, percent-encoding
kept). The one exception is the Functions host's own answer to a route or method that no function
declares: 404 or 405 with an empty body, before any of our code runs.

Declared response headers are checked too, when the answer carries them: an integer is digits
within the declared `minimum` and `maximum`, a `uri` an absolute http(s) URL. A 202 must carry
every header it declares: Power Automate's asynchronous pattern follows its `Location` and waits
its `Retry-After`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import httpx
from jsonschema import Draft4Validator

from tests.stack import ROOT

SPEC_PATH = ROOT / "connector" / "apiDefinition.swagger.json"
# What the Functions host answers itself, empty, for a route or method no function declares.
HOST_REFUSALS = frozenset({404, 405})


def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return loaded


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: _nullable(value) for key, value in node.items()}
        if out.pop("x-nullable", False) and isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    return node


def operations(document: dict[str, Any]) -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    """(path pattern, METHOD, operation) for every operation of `document`; the pattern names
    each path parameter.

    The Functions host routes a path with a trailing slash as the same path without one
    (ASP.NET Core routing, dotnet/aspnetcore issue 4220), so a path matches its operation either
    way, unless the definition names the slashed path for the same method as an operation of
    its own (as certified connectors do to give one route two operations).
    """
    paths = document["paths"]
    found = []
    for template, methods in paths.items():
        pattern = re.sub(r"\{([^}]+)\}", r"(?P<\1>[^/]+)", document["basePath"] + template)
        for method, operation in methods.items():
            slashed = template.endswith("/") or method in paths.get(template + "/", {})
            regex = re.compile(pattern if slashed else pattern + "/?")
            found.append((regex, method.upper(), operation))
    return found


@cache
def _operations() -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    return operations(spec())


def check_response(
    method: str,
    path: str,
    status: int,
    body: bytes,
    definitions: dict[str, Any] | None = None,
    document: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Raise AssertionError unless the response is one the definition declares for its request.

    `path` is the path as sent (percent-encoded, without the query string); `document` replaces
    the connector's definition (a test's altered copy); `headers`, when given, are checked against
    the declared ones.
    """
    ops = _operations() if document is None else operations(document)
    matching = [op for pattern, m, op in ops if m == method and pattern.fullmatch(path)]
    if not matching:
        assert status in HOST_REFUSALS and not body, (
            f"{method} {path} matches no operation in the definition (answered {status})"
        )
        return  # the host's own refusal of a route or method no function declares
    declared = matching[0]["responses"].get(str(status))
    assert declared is not None, (
        f"{method} {path} answered {status}, which is not in the definition"
    )
    if headers is not None:
        _check_headers(f"{method} {path} {status}", status, declared.get("headers", {}), headers)
    if "schema" in declared:
        schema = declared["schema"]
    elif body:
        # Declared without a schema for the host's empty answer (the 401 for a missing key); a
        # body there is ours, and ours are problem documents.
        schema = {"$ref": "#/definitions/Problem"}
    else:
        return
    if definitions is None:
        definitions = (spec() if document is None else document)["definitions"]
    errors = list(
        Draft4Validator(_nullable({"definitions": definitions, **schema})).iter_errors(
            json.loads(body)
        )
    )
    assert not errors, f"{method} {path} {status} does not conform: {errors[0].message}"


def _check_headers(
    where: str, status: int, declared: dict[str, Any], headers: Mapping[str, str]
) -> None:
    sent = {name.lower(): value for name, value in headers.items()}
    for name, rule in declared.items():
        value = sent.get(name.lower())
        if value is None:
            assert status != 202, f"{where}: the header {name} is declared but missing"
            continue
        if rule.get("type") == "integer":
            assert re.fullmatch(r"[0-9]+", value), f"{where}: {name} {value!r} is not an integer"
            number = int(value)
            assert number >= rule.get("minimum", number), f"{where}: {name} {value} is too small"
            assert number <= rule.get("maximum", number), f"{where}: {name} {value} is too large"
        if rule.get("format") == "uri":
            parts = urlsplit(value)
            assert parts.scheme in ("http", "https") and parts.netloc, (
                f"{where}: {name} {value!r} is not an absolute URL"
            )


def _sent_path(response: httpx.Response) -> str:
    """The path as sent, percent-encoding kept (so an encoded '/' stays inside its segment)."""
    return response.url.raw_path.split(b"?", 1)[0].decode("ascii")


def hook(response: httpx.Response) -> None:
    response.read()
    check_response(
        response.request.method,
        _sent_path(response),
        response.status_code,
        response.content,
        headers=response.headers,
    )


async def async_hook(response: httpx.Response) -> None:
    await response.aread()
    check_response(
        response.request.method,
        _sent_path(response),
        response.status_code,
        response.content,
        headers=response.headers,
    )
