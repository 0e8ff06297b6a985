"""Evaluate the few Bicep expressions the infra tests need, from pycep's parse tree.

Bicep cannot run here, so the tests evaluate what a template would give for given parameter
values: conditions (`a ? b : c`), `empty`, `contains`, `json`, `+`, property access, string
interpolation of names in scope, and `for (item, i) in array` loops. pycep writes a name and a
string literal alike, as a string: a string is read as a name when the scope holds that name,
else as itself. Anything else raises, so a test cannot silently evaluate what it does not know.
"""

from __future__ import annotations

import json
import re
from typing import Any

Scope = dict[str, Any]
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class Unsupported(ValueError):
    """An expression outside the subset above."""


def evaluate(node: Any, scope: Scope) -> Any:
    if isinstance(node, str):
        if node in scope:
            return scope[node]
        return _INTERPOLATION.sub(lambda m: str(_name(m[1], scope)), node)
    if node is None or isinstance(node, bool | int | float):
        return node
    if isinstance(node, list):
        return [evaluate(item, scope) for item in node]
    if not isinstance(node, dict):
        raise Unsupported(repr(node))
    if "operator" in node:
        return _operator(node["operator"], scope)
    if "function" in node:
        return _function(node["function"], scope)
    if "loop_type" in node:
        return _loop(node, scope)
    return {key: evaluate(value, scope) for key, value in node.items()}


def _name(name: str, scope: Scope) -> Any:
    if name not in scope:
        raise Unsupported(f"{name} is not in scope")
    return scope[name]


def _operator(operator: dict[str, Any], scope: Scope) -> Any:
    kind, operands = operator["type"], operator["operands"]
    if kind == "conditional":
        chosen = "true_value" if evaluate(operands["condition"], scope) else "false_value"
        return evaluate(operands[chosen], scope)
    if kind == "add":
        return evaluate(operands["operand_1"], scope) + evaluate(operands["operand_2"], scope)
    if kind == "property_accessor":
        target = evaluate(operands["operand_1"], scope)
        name = operands["operand_2"]
        if not isinstance(target, dict) or (isinstance(name, str) and name not in target):
            raise Unsupported(f"property {name!r} of {target!r}")
        return evaluate(name, target)
    raise Unsupported(kind)


def _function(function: dict[str, Any], scope: Scope) -> Any:
    kind, parameters = function["type"], function.get("parameters", {})
    args = [evaluate(value, scope) for value in parameters.values()]
    if kind == "empty":
        return not args[0]
    if kind == "contains":
        return args[1] in args[0]
    if kind == "json":
        return json.loads(args[0])
    raise Unsupported(kind)


def _loop(node: dict[str, Any], scope: Scope) -> list[Any]:
    loop = node["loop_type"]
    detail = loop["detail"]
    items = evaluate(detail["array_name"], scope)
    if loop["type"] not in ("array", "array_index") or not isinstance(items, list):
        raise Unsupported(f"loop {loop['type']} over {items!r}")
    found = []
    for index, item in enumerate(items):
        inner = {**scope, detail["item_name"]: item}
        if loop["type"] == "array_index":
            inner[detail["index_name"]] = index
        if node.get("condition") is None or evaluate(node["condition"], inner):
            found.append(evaluate(node["config"], inner))
    return found
