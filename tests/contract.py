"""Every response the end-to-end tests receive is checked against the connector's definition.

Swagger 2.0 has no `null` type; `x-nullable: true` (what Power Automate reads) is turned into
`["<type>", "null"]` before validating with JSON Schema draft 4, the dialect Swagger 2.0 uses.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import httpx
from jsonschema import Draft4Validator

from tests.stack import ROOT

SPEC_PATH = ROOT / "connector" / "apiDefinition.swagger.json"


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


@cache
def _operations() -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    document = spec()
    found = []
    for template, methods in document["paths"].items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", document["basePath"] + template)
        for method, operation in methods.items():
            found.append((re.compile(pattern + "/?"), method.upper(), operation))
    return found


def check_response(
    method: str, path: str, status: int, body: bytes, definitions: dict[str, Any] | None = None
) -> None:
    """Raise AssertionError when a response of an operation in the definition does not conform."""
    matching = [op for pattern, m, op in _operations() if m == method and pattern.fullmatch(path)]
    if not matching:
        return  # not an operation of ours (an unknown route or method the host answers)
    declared = matching[0]["responses"].get(str(status))
    assert declared is not None, (
        f"{method} {path} answered {status}, which is not in the definition"
    )
    if "schema" not in declared or (status == 401 and not body):
        return  # the Functions host's own 401 for a missing key has no body
    schema = {"definitions": definitions or spec()["definitions"], **declared["schema"]}
    errors = list(Draft4Validator(_nullable(schema)).iter_errors(json.loads(body)))
    assert not errors, f"{method} {path} {status} does not conform: {errors[0].message}"


def hook(response: httpx.Response) -> None:
    response.read()
    check_response(
        response.request.method, response.url.path, response.status_code, response.content
    )


async def async_hook(response: httpx.Response) -> None:
    await response.aread()
    check_response(
        response.request.method, response.url.path, response.status_code, response.content
    )
