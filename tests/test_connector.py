"""The Power Automate connector definition.

- It is valid Swagger 2.0 and ready for `paconn validate`: each certification rule is a function
  that lists violations; it passes on the definition and fails on a deliberately weakened copy.
- Its operations are the routes and methods the function serves, one operation each.
- Every input carries the function's own rule (tests/request checks), no stricter and no looser,
  except for the differences each description states; those are pinned here too.
- The largest body it allows is within the function's body limits, so it never gets 413.
- The response check every end-to-end test passes through bites.
"""

from __future__ import annotations

import copy
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from openapi_spec_validator import validate

from devtools.graph_emulator import DEMO_ASSIGNED_ID, GraphEmulator
from shared import bulk, request
from shared.problems import Failure, Problem
from tests.contract import SPEC_PATH, check_response, spec
from tests.stack import ROOT, Stack

Document = dict[str, Any]
PROPERTIES_PATH = SPEC_PATH.with_name("apiProperties.json")
GUID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"


def api_properties() -> Document:
    loaded: Document = json.loads(PROPERTIES_PATH.read_text())
    return loaded


def each_operation(document: Document) -> Iterator[tuple[str, str, str, Document]]:
    """(METHOD, path, operationId, operation) for every operation."""
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, str(operation.get("operationId")), operation


def each_parameter(document: Document) -> Iterator[tuple[str, Document]]:
    """("<operationId> <name>", parameter) for every parameter of every operation."""
    for _, _, operation_id, operation in each_operation(document):
        for parameter in operation.get("parameters", []):
            yield f"{operation_id} {parameter.get('name')}", parameter


def each_property(document: Document) -> Iterator[tuple[str, str, Document]]:
    """("<Definition>.<name>", name, property) for every property of every definition.

    A property that is a bare `$ref` is left out: Swagger 2.0 ignores anything beside a `$ref`,
    so its title and description are those of what it refers to.
    """
    for definition, schema in document["definitions"].items():
        for name, prop in schema.get("properties", {}).items():
            if "$ref" not in prop:
                yield f"{definition}.{name}", name, prop


def schemas(node: Any) -> list[Document]:
    """Every object schema in the document."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found += schemas(value)
    elif isinstance(node, list):
        for value in node:
            found += schemas(value)
    return found


def test_the_definition_is_valid_swagger_2() -> None:
    validate(spec())


def test_it_has_what_a_custom_connector_needs() -> None:
    document = spec()
    assert document["securityDefinitions"] == {
        "function_key": {"type": "apiKey", "in": "header", "name": "x-functions-key"}
    }
    for _, _, _, operation in each_operation(document):
        assert operation["summary"] and operation["description"]
    for schema in schemas(document["definitions"]):
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            assert "x-ms-summary" in prop or "$ref" in prop, name


# --- Certification rules: `paconn validate` applies them to every definition. ------------------
# Each rule lists violations by name; [] on the definition, and a weakened copy names its flaw.

# https://learn.microsoft.com/en-us/connectors/custom-connectors/certification-submission :
# the definition carries `info.contact` (name, url, email) and `x-ms-connector-metadata` (Website,
# Privacy policy, Categories from the fixed list); apiProperties.json names `publisher` and
# `stackOwner`. https://learn.microsoft.com/en-us/connectors/custom-connectors/connector-string-guidance :
# the title has at most 30 characters, and neither it nor the description has the word "API".
CATEGORIES = frozenset({
    "Business Management", "Business Intelligence", "Collaboration", "Commerce",
    "Communication", "Content and Files", "Data", "Finance", "Human Resources",
    "Internet of Things", "IT Operations", "Lifestyle and Entertainment", "Marketing", "Productivity",
    "Sales and CRM", "Security", "Social Media", "Website",
})  # fmt: skip
URL = re.compile(r"https://[^\s/]+(/\S*)?")


def connector_info_violations(document: Document, properties: Document) -> list[str]:
    info = document.get("info", {})
    found = []
    contact = info.get("contact", {})
    if not contact:
        found.append("info.contact")
    if not contact.get("name"):
        found.append("info.contact name")
    if not URL.fullmatch(str(contact.get("url", ""))):
        found.append("info.contact url")
    if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", str(contact.get("email", ""))):
        found.append("info.contact email")
    metadata = {
        m.get("propertyName"): m.get("propertyValue")
        for m in document.get("x-ms-connector-metadata", [])
    }
    for name in ("Website", "Privacy policy"):
        if not URL.fullmatch(str(metadata.get(name, ""))):
            found.append(f"x-ms-connector-metadata {name}")
    categories = str(metadata.get("Categories", "")).split(";")
    if not categories or not set(categories) <= CATEGORIES:
        found.append("x-ms-connector-metadata Categories")
    for name in ("publisher", "stackOwner"):
        if not properties.get("properties", {}).get(name):
            found.append(f"apiProperties {name}")
    title = str(info.get("title", ""))
    if not title or len(title) > 30 or re.search(r"\bAPI\b", title):
        found.append("info.title")
    if re.search(r"\bAPI\b", str(info.get("description", ""))):
        found.append("info.description")
    return found


# https://learn.microsoft.com/en-us/connectors/custom-connectors/connector-string-guidance :
# an operation's summary is its name in the designer: at most 80 characters, no '/', and it
# does not end with a non-alphanumeric character (no trailing period, space or punctuation),
# bar the " (deprecated)" that deprecate-operation (below) appends.
def summary_violations(document: Document, properties: Document) -> list[str]:
    found = []
    for _, _, operation_id, operation in each_operation(document):
        summary = str(operation.get("summary", ""))
        core = summary.removesuffix(" (deprecated)")
        if not core or len(summary) > 80 or "/" in summary or not core[-1].isalnum():
            found.append(f"{operation_id} summary")
    return found


# https://learn.microsoft.com/en-us/connectors/custom-connectors/deprecate-operation : a
# deprecated operation has `deprecated: true` and "(deprecated)" appended to its summary and
# description; the designer then hides it from new flows and flows using it keep working.
def deprecation_violations(document: Document, properties: Document) -> list[str]:
    found = []
    for _, _, operation_id, operation in each_operation(document):
        marked = [
            operation.get("deprecated") is True,
            str(operation.get("summary", "")).endswith(" (deprecated)"),
            "(deprecated)" in str(operation.get("description", "")),
        ]
        if any(marked) and not all(marked):
            found.append(f"{operation_id} deprecated")
    return found


# https://learn.microsoft.com/en-us/connectors/custom-connectors/openapi-extensions and
# connector-string-guidance: `x-ms-summary` is the name shown for a parameter or a result
# property: Title Case, at most 80 characters.
MINOR_WORDS = frozenset({
    "a", "an", "and", "as", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "via",
    "with",
})  # fmt: skip


def is_title_case(text: str) -> bool:
    """Every word capitalised ("(Seconds)" too), bar short joining words after the first."""
    words = text.split(" ")
    for index, word in enumerate(words):
        core = word.lstrip("(")
        if not core:
            return False
        if index and word in MINOR_WORDS:
            continue
        if not (core[0].isupper() or core[0].isdigit()):
            return False
    return True


def title_case_violations(document: Document, properties: Document) -> list[str]:
    found = []
    named = [(label, p) for label, p in each_parameter(document)]
    named += [(label, p) for label, _, p in each_property(document)]
    for label, item in named:
        summary = item.get("x-ms-summary")
        if not isinstance(summary, str) or len(summary) > 80 or not is_title_case(summary):
            found.append(label)
    return found


# https://learn.microsoft.com/en-us/connectors/custom-connectors/connector-string-guidance and
# https://learn.microsoft.com/en-us/connectors/custom-connectors/coding-standards : every
# parameter and every property is described (the hint in its box, the text of its output).
def description_violations(document: Document, properties: Document) -> list[str]:
    named = [(label, p) for label, p in each_parameter(document)]
    named += [(label, p) for label, _, p in each_property(document)]
    return [label for label, item in named if not str(item.get("description", "")).strip()]


# https://learn.microsoft.com/en-us/connectors/custom-connectors/coding-standards : responses
# are defined by status, `default` only beside a success definition; the designer builds its
# outputs from the success schema only, so a `default` response carries no schema.
def default_response_violations(document: Document, properties: Document) -> list[str]:
    return [
        f"{operation_id} default"
        for _, _, operation_id, operation in each_operation(document)
        if "schema" in operation.get("responses", {}).get("default", {})
    ]


# https://learn.microsoft.com/en-us/connectors/custom-connectors/coding-standards : operationId
# in Pascal case (every word capitalised, no hyphens or underscores), and unique.
PASCAL_CASE = re.compile(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)*")


def operation_id_violations(document: Document, properties: Document) -> list[str]:
    ids = [operation_id for _, _, operation_id, _ in each_operation(document)]
    found = [i for i in ids if not PASCAL_CASE.fullmatch(i)]
    found += [f"{i} twice" for i in sorted(set(ids)) if ids.count(i) > 1]
    return found


# https://learn.microsoft.com/en-us/connectors/custom-connectors/openapi-extensions
# (x-ms-visibility): `important` is shown first, `advanced` behind "Show advanced options",
# `internal` never; an internal, required parameter needs a default. The device is what a flow
# maker fills in; correlation, dry run and Graph's ids are for whoever traces a call.
IMPORTANT = frozenset({"deviceId", "serialNumber"})
ADVANCED = frozenset(
    {"X-Correlation-Id", "dryRun", "graphRequestIds", "graphClientRequestId", "input"}
)


def visibility_violations(document: Document, properties: Document) -> list[str]:
    named = [(label, p.get("name"), p) for label, p in each_parameter(document)]
    named += list(each_property(document))
    found = []
    for label, name, item in named:
        wanted = "important" if name in IMPORTANT else "advanced" if name in ADVANCED else None
        if wanted is not None and item.get("x-ms-visibility") != wanted:
            found.append(label)
        if (
            item.get("x-ms-visibility") == "internal"
            and item.get("required")
            and "default" not in item
        ):
            found.append(f"{label} internal without a default")
    return found


Rule = Callable[[Document, Document], list[str]]
RULES: dict[str, Rule] = {
    "connector info": connector_info_violations,
    "summaries": summary_violations,
    "deprecation": deprecation_violations,
    "title case": title_case_violations,
    "descriptions": description_violations,
    "default response": default_response_violations,
    "operation ids": operation_id_violations,
    "visibility": visibility_violations,
}


@pytest.mark.parametrize("rule", RULES)
def test_the_definition_meets_the_certification_rule(rule: str) -> None:
    assert RULES[rule](spec(), api_properties()) == []


def _operation(document: Document, operation_id: str) -> Document:
    [found] = [op for _, _, i, op in each_operation(document) if i == operation_id]
    return found


def _param(document: Document, operation_id: str, name: str) -> Document:
    parameters: list[Document] = _operation(document, operation_id)["parameters"]
    [found] = [p for p in parameters if p["name"] == name]
    return found


def _prop(document: Document, definition: str, name: str) -> Document:
    found: Document = document["definitions"][definition]["properties"][name]
    return found


def _set_category(document: Document, value: str) -> None:
    for item in document["x-ms-connector-metadata"]:
        if item["propertyName"] == "Categories":
            item["propertyValue"] = value


Weakening = Callable[[Document, Document], object]
WEAKENINGS: list[tuple[str, Weakening, str]] = [
    ("connector info", lambda d, p: d["info"].pop("contact"), "info.contact"),
    ("connector info", lambda d, p: d["info"]["contact"].pop("email"), "info.contact email"),
    ("connector info", lambda d, p: d["info"]["contact"].update(url="your-function-app"), "info.contact url"),
    ("connector info", lambda d, p: d.pop("x-ms-connector-metadata"), "x-ms-connector-metadata Website"),
    ("connector info", lambda d, p: d["x-ms-connector-metadata"].pop(1), "x-ms-connector-metadata Privacy policy"),
    ("connector info", lambda d, p: _set_category(d, "IT Operations;Devices"), "x-ms-connector-metadata Categories"),
    ("connector info", lambda d, p: p["properties"].pop("stackOwner"), "apiProperties stackOwner"),
    ("connector info", lambda d, p: p["properties"].pop("publisher"), "apiProperties publisher"),
    ("connector info", lambda d, p: d["info"].update(title="Autopilot unassign API"), "info.title"),
    ("summaries", lambda d, p: _operation(d, "UnassignUser").update(summary="Unassign the user."), "UnassignUser summary"),
    ("summaries", lambda d, p: _operation(d, "GetAssignment").update(summary="Get " + "a" * 80), "GetAssignment summary"),
    ("summaries", lambda d, p: _operation(d, "BulkUnassignUser").update(summary="Unassign and/or check"), "BulkUnassignUser summary"),
    ("summaries", lambda d, p: _operation(d, "GetAssignment").update(summary="Get " + "a" * 64 + " (deprecated)"), "GetAssignment summary"),
    ("deprecation", lambda d, p: _operation(d, "UnassignUser").pop("deprecated"), "UnassignUser deprecated"),
    ("deprecation", lambda d, p: _operation(d, "UnassignUser").update(summary="Unassign the user"), "UnassignUser deprecated"),
    ("deprecation", lambda d, p: _operation(d, "UnassignUser").update(description="Removes the user."), "UnassignUser deprecated"),
    ("deprecation", lambda d, p: _operation(d, "GetAssignment").update(deprecated=True), "GetAssignment deprecated"),
    ("title case", lambda d, p: _param(d, "UnassignUserById", "X-Correlation-Id").update({"x-ms-summary": "Correlation id"}), "UnassignUserById X-Correlation-Id"),
    ("title case", lambda d, p: _prop(d, "BulkSummary", "total").update({"x-ms-summary": "total"}), "BulkSummary.total"),
    ("title case", lambda d, p: _prop(d, "UnassignResult", "message").pop("x-ms-summary"), "UnassignResult.message"),
    ("descriptions", lambda d, p: _param(d, "UnassignUser", "body").pop("description"), "UnassignUser body"),
    ("descriptions", lambda d, p: _prop(d, "UnassignOptions", "ticketId").update(description=" "), "UnassignOptions.ticketId"),
    ("default response", lambda d, p: _operation(d, "UnassignUser")["responses"].update(default={"description": "Other", "schema": {"$ref": "#/definitions/Problem"}}), "UnassignUser default"),
    ("operation ids", lambda d, p: _operation(d, "GetAssignment").update(operationId="getAssignment"), "getAssignment"),
    ("operation ids", lambda d, p: _operation(d, "GetAssignment").update(operationId="Get_Assignment"), "Get_Assignment"),
    ("operation ids", lambda d, p: _operation(d, "GetAssignment").update(operationId="UnassignUser"), "UnassignUser twice"),
    ("visibility", lambda d, p: _prop(d, "UnassignRequest", "serialNumber").pop("x-ms-visibility"), "UnassignRequest.serialNumber"),
    ("visibility", lambda d, p: _param(d, "GetAssignment", "deviceId").update({"x-ms-visibility": "advanced"}), "GetAssignment deviceId"),
    ("visibility", lambda d, p: _param(d, "BulkUnassignUser", "X-Correlation-Id").pop("x-ms-visibility"), "BulkUnassignUser X-Correlation-Id"),
    ("visibility", lambda d, p: _prop(d, "BulkRequest", "dryRun").update({"x-ms-visibility": "important"}), "BulkRequest.dryRun"),
    ("visibility", lambda d, p: _prop(d, "BulkItemResult", "input").pop("x-ms-visibility"), "BulkItemResult.input"),
    ("visibility", lambda d, p: _prop(d, "Assignment", "graphRequestIds").pop("x-ms-visibility"), "Assignment.graphRequestIds"),
    ("visibility", lambda d, p: _prop(d, "Problem", "graphClientRequestId").pop("x-ms-visibility"), "Problem.graphClientRequestId"),
    ("visibility", lambda d, p: _param(d, "GetAssignment", "deviceId").update({"x-ms-visibility": "internal"}), "GetAssignment deviceId internal without a default"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "weaken", "named"), WEAKENINGS)
def test_a_weakened_copy_fails_the_rule(rule: str, weaken: Weakening, named: str) -> None:
    document, properties = copy.deepcopy(spec()), copy.deepcopy(api_properties())
    assert RULES[rule](document, properties) == []  # the copy passes before it is weakened
    weaken(document, properties)
    violations = RULES[rule](document, properties)
    assert named in violations, violations


def test_every_rule_has_a_weakening() -> None:
    assert {rule for rule, _, _ in WEAKENINGS} == set(RULES)


# --- Operations: one per route and method the function serves. ----------------------------------


def served() -> set[tuple[str, str]]:
    """(METHOD, path) for every route and method in the functions' function.json."""
    found = set()
    for function_json in sorted(ROOT.glob("*/function.json")):
        bindings = json.loads(function_json.read_text())["bindings"]
        triggers = [b for b in bindings if b["type"] == "httpTrigger"]
        if not triggers:
            continue  # queue and timer functions have no route
        [trigger] = triggers
        route = "/" + trigger["route"]
        routes = [route]
        if route.endswith("?}"):  # an optional last segment: with it, and without
            routes = [route[: route.rindex("/{")], route.replace("?}", "}")]
        found |= {(m.upper(), r) for m in trigger["methods"] for r in routes}
    return found


def test_the_operations_a_flow_maker_sees() -> None:
    operations = {
        (method, path, operation_id, operation.get("x-ms-visibility"), operation.get("deprecated"))
        for method, path, operation_id, operation in each_operation(spec())
    }
    assert operations == {
        ("POST", "/UnassignUser", "UnassignUser", None, True),
        ("POST", "/UnassignUser/", "UnassignUserBySerialNumber", None, None),
        ("POST", "/UnassignUser/{deviceId}", "UnassignUserById", None, None),
        ("GET", "/UnassignUser", "GetAssignmentBySerialNumber", None, None),
        ("GET", "/UnassignUser/{deviceId}", "GetAssignment", None, None),
        ("POST", "/BulkUnassignUser", "BulkUnassignUser", None, None),
        ("POST", "/BulkUnassignJobs", "StartBulkUnassignJob", None, None),
        ("GET", "/BulkUnassignJobs/{jobId}/{capability}", "GetBulkUnassignJob", None, None),
        ("DELETE", "/BulkUnassignJobs/{jobId}", "CancelBulkUnassignJob", None, None),
    }


def test_each_operation_is_a_route_and_method_the_function_serves() -> None:
    """Every route and method has an operation, and no operation names anything else.

    POST /UnassignUser has two: UnassignUser (deprecated) on "/UnassignUser" and
    UnassignUserBySerialNumber on "/UnassignUser/". Swagger 2.0 allows one operation per path
    and method, and the Functions host routes a trailing slash like none (ASP.NET Core routing:
    dotnet/aspnetcore issue 4220), so the slashed path is the same route; certified connectors
    give one route two operations this way (PartnerCenterReferrals, tyntec and Oneflow in
    microsoft/PowerPlatformConnectors). The function tells them apart by that slash.
    """
    operations = {(method, path) for method, path, _, _ in each_operation(spec())}
    assert {(method, path.rstrip("/")) for method, path in operations} == served()
    assert {(m, p) for m, p in operations if p.endswith("/")} == {("POST", "/UnassignUser/")}
    description = _operation(spec(), "UnassignUser")["description"]
    assert "exactly one of deviceId and serialNumber" in description
    assert "UnassignUserById" in description and "UnassignUserBySerialNumber" in description
    by_serial = _operation(spec(), "UnassignUserBySerialNumber")["description"]
    assert "trailing slash" in by_serial and "UnassignUserById" in by_serial


def test_unassign_by_serial_number_takes_the_serial_number_alone() -> None:
    document = spec()
    body = _param(document, "UnassignUserBySerialNumber", "body")
    assert body["required"] is True
    assert body["schema"] == {"$ref": "#/definitions/UnassignBySerialNumberRequest"}
    schema = document["definitions"]["UnassignBySerialNumberRequest"]
    assert schema["required"] == ["serialNumber"] and schema["additionalProperties"] is False
    assert tuple(schema["properties"]) == tuple(f for f in request.FIELDS if f != "deviceId")


def test_unassign_by_id_takes_the_id_in_the_path_and_only_options_in_the_body() -> None:
    document = spec()
    device_id = _param(document, "UnassignUserById", "deviceId")
    assert device_id["required"] is True and device_id["x-ms-url-encoding"] == "single"
    body = _param(document, "UnassignUserById", "body")
    assert body["required"] is False
    assert body["schema"] == {"$ref": "#/definitions/UnassignOptions"}
    options = document["definitions"]["UnassignOptions"]
    assert set(options["properties"]) == {"ticketId", "expectedUserPrincipalName", "dryRun"}
    assert "required" not in options


def test_the_request_schemas_hold_exactly_the_fields_the_function_reads() -> None:
    definitions = spec()["definitions"]
    assert tuple(definitions["UnassignRequest"]["properties"]) == request.FIELDS
    assert "required" not in definitions["UnassignRequest"]  # one of two: said, not expressed
    assert tuple(definitions["BulkRequest"]["properties"]) == bulk.FIELDS
    assert tuple(definitions["BulkDevice"]["properties"]) == bulk.ITEM_FIELDS
    devices = definitions["BulkRequest"]["properties"]["devices"]
    assert (devices["minItems"], devices["maxItems"]) == (1, bulk.MAX_DEVICES)
    assert _param(spec(), "UnassignUser", "body")["required"] is True


def test_the_correlation_header_is_optional_and_free_form() -> None:
    """The function replaces one it cannot use, so the definition never refuses one."""
    headers = [p for _, p in each_parameter(spec()) if p["name"] == "X-Correlation-Id"]
    assert len(headers) == len(list(each_operation(spec())))
    for header in headers:
        assert header["in"] == "header" and header["required"] is False
        assert not {"pattern", "minLength", "maxLength", "enum"} & set(header)


def test_the_hosts_401_is_declared_without_a_schema() -> None:
    """Every keyed operation; the job status URL takes no key, and answers no 401."""
    for _, _, operation_id, operation in each_operation(spec()):
        if operation.get("security") == []:
            assert "401" not in operation["responses"], operation_id
            continue
        assert "schema" not in operation["responses"]["401"], operation_id


def test_bulk_answers_always_carry_resend() -> None:
    assert "resend" in spec()["definitions"]["BulkResult"]["required"]


# --- Inputs: the function's own rules. ----------------------------------------------------------

SURROUNDING = " \t\r\n"  # what shared.request trims around an id, serial or user name
WHITESPACE_BOUND = 8  # how many of them the definition's patterns allow on each side


def accepted(check: Callable[[Any], object], value: Any) -> bool:
    try:
        check(value)
    except Problem as problem:
        assert problem.status == 400
        return False
    return True


CHECKS: dict[str, Callable[[Any], object]] = {
    "deviceId": lambda value: request.normalise_device_id(value, "deviceId"),
    "serialNumber": request.normalise_serial,
    "ticketId": request.ticket_id,
    "expectedUserPrincipalName": request.expected_upn,
    "dryRun": request.dry_run,
}


def field_schema(name: str) -> Document:
    return _prop(spec(), "UnassignRequest", name)  # the same everywhere (the test below)


def valid(schema: Document, value: Any) -> bool:
    return bool(Draft4Validator(schema).is_valid(value))


RULE_KEYS = ("type", "pattern", "minLength", "maxLength")


def test_each_field_has_one_rule_wherever_it_is_taken() -> None:
    document = spec()
    places: dict[str, list[tuple[str, Document]]] = {}
    for label, parameter in each_parameter(document):
        if parameter["in"] in {"path", "query"}:
            places.setdefault(parameter["name"], []).append((label, parameter))
    for definition in (
        "UnassignRequest",
        "UnassignBySerialNumberRequest",
        "UnassignOptions",
        "BulkDevice",
        "BulkRequest",
    ):
        for name, prop in document["definitions"][definition]["properties"].items():
            places.setdefault(name, []).append((f"{definition}.{name}", prop))
    for name in CHECKS:
        rules = {label: {k: p.get(k) for k in RULE_KEYS} for label, p in places[name]}
        assert len({json.dumps(r, sort_keys=True) for r in rules.values()}) == 1, rules
        assert len(rules) >= 2, rules


def beyond_the_bound(value: Any) -> bool:
    """Whether more surrounding whitespace is around `value` than the patterns allow."""
    if not isinstance(value, str):
        return False
    lead = len(value) - len(value.lstrip(SURROUNDING))
    trail = len(value) - len(value.rstrip(SURROUNDING))
    return lead > WHITESPACE_BOUND or trail > WHITESPACE_BOUND


def outside_the_serial_pattern(value: Any) -> bool:
    """Characters the function refuses in a serial number and the pattern cannot name: lone
    surrogates, unassigned code points, and format or private-use characters beyond U+FFFF."""
    return isinstance(value, str) and any(
        unicodedata.category(ch) in {"Cs", "Cn"} or (ord(ch) > 0xFFFF and not ch.isprintable())
        for ch in value
    )


def assert_same_rule(name: str, value: Any) -> None:
    """The definition accepts `value` exactly when the function does, bar the stated differences:
    the function trims any amount of surrounding whitespace (the patterns: up to 8 a side), and
    refuses in a serial number what no ECMA 262 character class spells out."""
    in_schema, in_function = valid(field_schema(name), value), accepted(CHECKS[name], value)
    if in_schema == in_function:
        return
    if in_function:
        assert name != "ticketId" and beyond_the_bound(value), (name, value)
    else:
        assert name == "serialNumber" and outside_the_serial_pattern(value), (name, value)


GUID_CASES = [
    GUID,
    GUID.upper(),
    "{" + GUID + "}",
    "{" + GUID.upper() + "}",
    " \t\r\n" + GUID + "\n\r\t ",
    " " * 8 + "{" + GUID + "}" + "\t" * 8,
    " " * 9 + GUID,
    GUID + "\n" * 9,
    ZERO_GUID,
    "{" + ZERO_GUID + "}",
    " " + ZERO_GUID + " ",
    "00000000-0000-0000-0000-000000000001",
    "{" + GUID,
    GUID + "}",
    "{{" + GUID + "}}",
    "{ " + GUID + " }",
    GUID.replace("-", ""),
    GUID + "\n",
    GUID + "\x0b",
    "\u00a0" + GUID,
    GUID.replace("f", "\uff46", 1),
    GUID.replace("0", "\u0660", 1),
    "",
    "   ",
    7,
    None,
]


@pytest.mark.parametrize("value", GUID_CASES)
def test_the_device_id_rule_is_the_functions(value: Any) -> None:
    assert_same_rule("deviceId", value)


SERIAL_CASES = [
    "5CG1234XYZ",
    "MXL 4411 22X",
    "R90-ABC-123",
    "ABCD",
    "ABC",
    "  ABC  ",
    " AB C ",
    "\r\n5CG1234XYZ\t",
    " " * 8 + "S" * 128 + "\n" * 8,
    "S" * 128,
    "S" * 129,
    " " * 9 + "ABCD",
    "ABCD" + "\t" * 9,
    "AB\tCD",
    "AB\nCD",
    "ABCD\n",
    "AB\u00a0CD",
    "AB\u200bCD",
    "AB\u2028CD",
    "\u00a0ABCD",
    "AB\ue000CD",
    "AB\u0378CD",
    "ÄÖÜ\u00df",
    "\U0001f600" * 4,
    "\U0001f600" * 128,
    "AB\U000e0001CD",
    "AB\U000f0000CD",
    "AB\ud800CD",
    "AB\x7fCD",
    "AB\x85CD",
    "",
    1234,
    None,
]


@pytest.mark.parametrize("value", SERIAL_CASES)
def test_the_serial_number_rule_is_the_functions(value: Any) -> None:
    assert_same_rule("serialNumber", value)


TICKET_CASES = [
    "INC0012345",
    "a",
    "A" * 64,
    "A" * 65,
    "RITM.1:2_3-4",
    "",
    "INC 1",
    "INC1\n",
    "\nINC1",
    "INC1é",
    5,
]


@pytest.mark.parametrize("value", TICKET_CASES)
def test_the_ticket_id_rule_is_the_functions(value: Any) -> None:
    assert_same_rule("ticketId", value)


UPN_CASES = [
    "leaver@contoso.com",
    "@",
    "a@",
    "@b",
    "a b@c",
    " leaver@contoso.com ",
    "\t\r\nleaver@contoso.com\n",
    " " * 8 + "a" * 127 + "@" + "b" * 128 + "\n" * 8,
    "a" * 128 + "@" + "b" * 128,
    " " * 9 + "a@b",
    "a@b" + "\r" * 9,
    "leaver.contoso.com",
    "",
    "   ",
    "a\t@b",
    "a@b\x7f",
    "a@b\n",
    "straße@contoso.com",
    "a@\u00a0b",
    "\x0ba@b",
    "~!#$%^&*()+={}[]|\\:;\"'<>,.?/`@x",
    None,
]


@pytest.mark.parametrize("value", UPN_CASES)
def test_the_user_principal_name_rule_is_the_functions(value: Any) -> None:
    assert_same_rule("expectedUserPrincipalName", value)


@pytest.mark.parametrize("value", [True, False, "true", 1, 0, None])
def test_the_dry_run_rule_is_the_functions(value: Any) -> None:
    assert valid(field_schema("dryRun"), value) == accepted(CHECKS["dryRun"], value)


SPACE = st.text(st.sampled_from(" \t\r\n\x0b\x0c\u00a0\u2003"), max_size=11)
GUID_TEXT = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.just(ZERO_GUID),
    st.uuids().map(lambda u: u.hex),
    st.text(st.sampled_from("0123456789abcdefABCDEF-{}g \u0660"), max_size=40),
)
DEVICE_IDS = st.builds(
    lambda a, o, g, c, b: a + o + g + c + b,
    SPACE,
    st.sampled_from(["", "{", "{{", "("]),
    GUID_TEXT,
    st.sampled_from(["", "}", "}}", ")"]),
    SPACE,
)
ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
SERIALS = st.builds(
    lambda a, s, b: a + s + b,
    SPACE,
    st.one_of(
        st.text(ANY_CHARACTER, max_size=140),
        st.text(
            st.sampled_from("AB 1-\t\u00a0\u200b\u0378\ue000\U0001f600\U000e0001"), max_size=140
        ),
    ),
    SPACE,
)
UPNS = st.builds(
    lambda a, u, at, d, b: a + u + at + d + b,
    SPACE,
    st.text(st.characters(max_codepoint=0x7F) | st.sampled_from("é\u00a0\u2028"), max_size=140),
    st.sampled_from(["@", "", "@@"]),
    st.text(st.characters(max_codepoint=0x7F), max_size=140),
    SPACE,
)
TICKETS = st.text(st.sampled_from("Az09._:- \n\té/") | st.characters(), max_size=70)


@given(DEVICE_IDS)
@example(" " * 8 + "{" + GUID.upper() + "}" + " " * 8)
def test_generated_device_ids_meet_the_same_rule(value: str) -> None:
    assert_same_rule("deviceId", value)


@given(SERIALS)
def test_generated_serial_numbers_meet_the_same_rule(value: str) -> None:
    assert_same_rule("serialNumber", value)


@given(UPNS)
def test_generated_user_principal_names_meet_the_same_rule(value: str) -> None:
    assert_same_rule("expectedUserPrincipalName", value)


@given(TICKETS)
def test_generated_ticket_ids_meet_the_same_rule(value: str) -> None:
    assert_same_rule("ticketId", value)


def pattern_check(name: str) -> Callable[[str], bool]:
    """The field's pattern and lengths, compiled once (as jsonschema applies them: re.search)."""
    schema = field_schema(name)
    pattern = re.compile(schema["pattern"])
    low, high = schema.get("minLength", 0), schema["maxLength"]
    return lambda value: low <= len(value) <= high and pattern.search(value) is not None


SWEEPS = {
    # (field, templates: each code point in turn in the place of "*")
    "deviceId": [GUID[:9] + "*" + GUID[10:], "*" + GUID, "{" + GUID + "*"],
    "serialNumber": ["AB*CD", "*ABC", "ABC*"],
    "ticketId": ["A*B", "*"],
    "expectedUserPrincipalName": ["a*@b", "*a@b", "a@b*", "*@"],
}


@pytest.mark.parametrize("name", SWEEPS)
def test_every_character_of_the_basic_plane_meets_the_same_rule(name: str) -> None:
    """Each code point up to U+FFFF, in each place: the differences are only those stated."""
    in_schema, check = pattern_check(name), CHECKS[name]
    differ = {}
    for template in SWEEPS[name]:
        for code in range(0x10000):
            value = template.replace("*", chr(code))
            if in_schema(value) != accepted(check, value):
                differ[value] = unicodedata.category(chr(code))
    if name == "serialNumber":  # unassigned code points and lone surrogates: no class names them
        assert set(differ.values()) <= {"Cn", "Cs"}, differ
        assert all(not accepted(check, v) for v in differ)
    else:
        assert differ == {}


@pytest.mark.parametrize("name", SWEEPS)
def test_characters_beyond_the_basic_plane_meet_the_same_rule(name: str) -> None:
    in_schema, check = pattern_check(name), CHECKS[name]
    differ = set()
    for code in range(0x10000, 0x110000, 61):
        for template in SWEEPS[name]:
            value = template.replace("*", chr(code))
            if in_schema(value) != accepted(check, value):
                assert name == "serialNumber" and not chr(code).isprintable(), hex(code)
                differ.add(unicodedata.category(chr(code)))
    assert differ <= {"Cn", "Co", "Cf"}


@pytest.mark.parametrize(
    ("name", "value", "in_schema", "in_function"),
    [
        ("deviceId", " " * 9 + GUID, False, True),
        ("serialNumber", "ABCD" + "\n" * 9, False, True),
        ("expectedUserPrincipalName", "\t" * 9 + "a@b", False, True),
        ("serialNumber", "AB\u0378CD", True, False),  # unassigned
        ("serialNumber", "AB\U000e0001CD", True, False),  # a format character beyond U+FFFF
    ],
)
def test_the_stated_differences_are_real(
    name: str, value: str, in_schema: bool, in_function: bool
) -> None:
    assert valid(field_schema(name), value) is in_schema
    assert accepted(CHECKS[name], value) is in_function


def test_the_descriptions_state_the_differences() -> None:
    for name in ("deviceId", "serialNumber", "expectedUserPrincipalName"):
        assert "trims any number" in field_schema(name)["description"], name
    serial = field_schema("serialNumber")["description"]
    assert "unassigned code points" in serial and "beyond U+FFFF" in serial


# --- The largest body the definition allows, against the function's body limits. -----------------
# Each string at its maxLength, every character written as a \uXXXX escape (as an encoder that
# escapes everything may: 6 bytes, 12 for a character beyond U+FFFF, a surrogate pair), keys
# escaped the same way, every optional property and array item present, and pretty-printed with
# CRLF and four spaces a level (JSON allows any whitespace between tokens: this is the most a
# serializer writes).

ASTRAL = "\U0001f600"
WIDEST = {
    "deviceId": " " * 8 + "{" + GUID.upper() + "}" + "\t" * 8,
    "serialNumber": " " * 8 + ASTRAL * 128 + "\n" * 8,
    "ticketId": "T" * 64,
    "expectedUserPrincipalName": " " * 8 + "a" * 127 + "@" + "b" * 128 + " " * 8,
}


def escaped(text: str) -> str:
    units = text.encode("utf-16-be")
    return (
        '"' + "".join(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)) + '"'
    )


def worst_json(value: Any, depth: int = 0) -> str:
    inner, outer = "\r\n" + "    " * (depth + 1), "\r\n" + "    " * depth
    if isinstance(value, dict):
        members = [inner + escaped(k) + ": " + worst_json(v, depth + 1) for k, v in value.items()]
        return "{" + ",".join(members) + outer + "}"
    if isinstance(value, list):
        return "[" + ",".join(inner + worst_json(v, depth + 1) for v in value) + outer + "]"
    if isinstance(value, str):
        return escaped(value)
    return json.dumps(value)


def widest(schema: Document, definitions: Document, name: str = "") -> Any:
    """The schema-valid instance that takes the most bytes: every property, every item."""
    if "$ref" in schema:
        return widest(definitions[schema["$ref"].rsplit("/", 1)[1]], definitions, name)
    kind = schema.get("type")
    if kind == "object":
        return {k: widest(p, definitions, k) for k, p in schema["properties"].items()}
    if kind == "array":
        return [widest(schema["items"], definitions, name)] * schema["maxItems"]
    if kind == "string":
        value = WIDEST[name]
        assert len(value) == schema["maxLength"], name
        return value
    assert kind == "boolean", schema
    return False  # "false": one byte longer than "true"


@pytest.mark.parametrize("name", WIDEST)
def test_no_value_of_a_field_costs_more_than_its_widest(name: str) -> None:
    """At maxLength, and no character of it could be one beyond U+FFFF (twice the bytes)."""
    schema = field_schema(name)
    value = WIDEST[name]
    assert valid(schema, value) and len(value) == schema["maxLength"]
    assert accepted(CHECKS[name], value)
    for index, character in enumerate(value):
        if character != ASTRAL:
            assert not valid(schema, value[:index] + ASTRAL + value[index + 1 :]), index


BODIES = [
    ("UnassignRequest", request.FIELDS, request.MAX_BODY_BYTES),
    ("UnassignBySerialNumberRequest", request.FIELDS, request.MAX_BODY_BYTES),
    ("UnassignOptions", request.FIELDS, request.MAX_BODY_BYTES),
    ("BulkRequest", bulk.FIELDS, bulk.MAX_BODY_BYTES),
]


def worst_body(definition: str) -> bytes:
    definitions = spec()["definitions"]
    instance = widest({"$ref": f"#/definitions/{definition}"}, definitions)
    schema = {"definitions": definitions, "$ref": f"#/definitions/{definition}"}
    assert valid(schema, instance)
    raw = worst_json(instance).encode("ascii")
    assert json.loads(raw) == instance
    return raw


@pytest.mark.parametrize(("definition", "fields", "limit"), BODIES)
def test_the_largest_body_the_definition_allows_is_within_the_limit(
    definition: str, fields: tuple[str, ...], limit: int
) -> None:
    raw = worst_body(definition)
    assert len(raw) <= limit, f"{definition}: {len(raw)} bytes, over {limit}"
    assert set(request.parse_body(raw, fields, limit)) <= set(fields)  # read, not 413


def test_the_worst_bodies_are_what_the_limits_were_chosen_for() -> None:
    """Worst cases: about 4.4 KB for one device (16 KiB), about 395 KB for 100 (512 KiB)."""
    sizes = {d: len(worst_body(d)) for d, _, _ in BODIES}
    assert sizes["UnassignRequest"] < request.MAX_BODY_BYTES // 3
    assert sizes["UnassignOptions"] < sizes["UnassignBySerialNumberRequest"]
    assert sizes["UnassignBySerialNumberRequest"] < sizes["UnassignRequest"]
    assert bulk.MAX_BODY_BYTES // 2 < sizes["BulkRequest"] <= bulk.MAX_BODY_BYTES


def test_the_largest_bodies_get_through_the_function() -> None:
    by_id = request.parse_unassign(worst_body("UnassignOptions"), GUID, "application/json")
    assert by_id.device_id == GUID and by_id.ticket_id == "T" * 64
    by_serial = request.parse_unassign(
        worst_body("UnassignBySerialNumberRequest"), None, "application/json", serial_only=True
    )
    assert by_serial.serial_number == ASTRAL * 128 and by_serial.device_id is None
    with pytest.raises(Problem) as caught:  # deviceId and serialNumber both: 400, not 413
        request.parse_unassign(worst_body("UnassignRequest"), None, "application/json")
    assert caught.value.failure is Failure.INVALID_REQUEST
    parsed = bulk.parse_bulk(worst_body("BulkRequest"), "application/json")
    assert len(parsed.items) == bulk.MAX_DEVICES


# --- The response check. --------------------------------------------------------------------------


def test_a_real_response_conforms_and_an_altered_one_is_rejected(
    stack: Stack, graph: GraphEmulator
) -> None:
    response = stack.post(json={"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC1"})
    path = "/api/UnassignUser"
    check_response("POST", path, 200, response.content)  # passes, as the hook already saw
    body = response.json()
    for altered in (
        {k: v for k, v in body.items() if k != "status"},
        {**body, "status": "done"},
        {**body, "extra": 1},
        {**body, "graphRequestIds": "one"},
    ):
        with pytest.raises(AssertionError):
            check_response("POST", path, 200, json.dumps(altered).encode())
    with pytest.raises(AssertionError, match="not in the definition"):
        check_response("POST", path, 418, response.content)


def test_a_202_carries_its_declared_location_and_retry_after_and_bad_ones_are_rejected() -> None:
    """The function's own 202 (recorded from it, and kept in step by
    tests/test_servicenow_fixtures.py) passes; a 202 without its Location, or with a relative
    one, or a Retry-After out of 5 to 60 or not in whole seconds, does not."""
    answer = json.loads(
        (ROOT / "integrations/servicenow/test/fixtures/job_running.json").read_text()
    )
    body = json.dumps(answer["body"]).encode()
    headers: dict[str, str] = answer["headers"]
    check_response("GET", answer["path"], 202, body, headers=headers)
    location = urlsplit(headers["location"])
    for altered in (
        {k: v for k, v in headers.items() if k != "location"},
        {k: v for k, v in headers.items() if k != "retry-after"},
        {**headers, "location": location.path},
        {**headers, "retry-after": "61"},
        {**headers, "retry-after": "4"},
        {**headers, "retry-after": "5.0"},
    ):
        with pytest.raises(AssertionError, match=r"Location|Retry-After"):
            check_response("GET", answer["path"], 202, body, headers=altered)
    # Outside a 202, a declared header may be left out (Swagger 2.0 has no required headers).
    report = json.loads(
        (ROOT / "integrations/servicenow/test/fixtures/job_report.json").read_text()
    )
    check_response("GET", report["path"], 200, json.dumps(report["body"]).encode(), headers={})


def test_a_problem_that_drops_a_required_field_is_rejected(
    stack: Stack, graph: GraphEmulator
) -> None:
    response = stack.post(json={"deviceId": "bad"})
    assert response.status_code == 400
    altered = {k: v for k, v in response.json().items() if k != "correlationId"}
    with pytest.raises(AssertionError):
        check_response("POST", "/api/UnassignUser", 400, json.dumps(altered).encode())


def test_unassign_by_id_with_options_conforms(stack: Stack, graph: GraphEmulator) -> None:
    options = {
        "ticketId": "INC7",
        "expectedUserPrincipalName": " ALEX.WILBER@contoso.example\n",
        "dryRun": True,
    }
    assert valid(
        {"definitions": spec()["definitions"], "$ref": "#/definitions/UnassignOptions"}, options
    )
    response = stack.post(f"/api/UnassignUser/{{{DEMO_ASSIGNED_ID.upper()}}}", json=options)
    assert response.status_code == 200, response.text  # and the hook found it conforms
    assert response.json()["status"] == "wouldUnassign"
    assert graph.graph_calls("GET") and not graph.graph_calls("POST")


def test_unassign_by_serial_number_is_the_trailing_slash(
    stack: Stack, graph: GraphEmulator
) -> None:
    """POST /UnassignUser/ takes serialNumber alone; without the slash, deviceId still works."""
    by_id = {"deviceId": DEMO_ASSIGNED_ID, "dryRun": True}
    refused = stack.post("/api/UnassignUser/", json=by_id)
    assert refused.status_code == 400, refused.text
    assert "POST /UnassignUser/{deviceId}" in refused.json()["detail"]
    assert not graph.graph_calls("GET") and not graph.graph_calls("POST")
    both = stack.post("/api/UnassignUser/", json={**by_id, "serialNumber": "5CG1234XYZ"})
    assert both.status_code == 400 and not graph.graph_calls("GET")
    assert "takes serialNumber only" in both.json()["detail"]  # not the "not both" of /UnassignUser
    neither = stack.post("/api/UnassignUser/", json={"dryRun": True})
    assert (neither.status_code, neither.json()["detail"]) == (400, "Give serialNumber.")
    # The same probe sees Graph called when the request is one it takes.
    deprecated = stack.post("/api/UnassignUser", json=by_id)
    assert deprecated.status_code == 200 and deprecated.json()["status"] == "wouldUnassign"
    assert graph.graph_calls("GET")
    graph.reset()
    by_serial = stack.post(
        "/api/UnassignUser/", json={"serialNumber": " 5cg1234xyz\n", "ticketId": "INC9"}
    )
    assert by_serial.status_code == 200, by_serial.text  # the hook: UnassignUserBySerialNumber
    assert by_serial.json()["status"] == "unassigned"
    assert by_serial.json()["deviceId"] == DEMO_ASSIGNED_ID
    assert graph.graph_calls("POST")


def test_a_request_that_matches_no_operation_fails_the_check(
    stack: Stack, graph: GraphEmulator
) -> None:
    response = stack.post(f"/api/UnassignUser/{DEMO_ASSIGNED_ID}")
    assert response.status_code == 200  # the hook matched it to UnassignUserById
    path = f"/api/UnassignUser/{DEMO_ASSIGNED_ID}"
    without = copy.deepcopy(spec())
    del without["paths"]["/UnassignUser/{deviceId}"]["post"]
    with pytest.raises(AssertionError, match="matches no operation"):
        check_response("POST", path, 200, response.content, document=without)
    for method, unmatched, status in [
        ("DELETE", "/api/UnassignUser", 200),
        ("PUT", path, 400),
        ("POST", "/api/Nope", 200),
        ("POST", "/api/UnassignUser/a/b", 400),
        ("GET", "/api/BulkUnassignUser", 404),  # a body: not the host's empty refusal
    ]:
        with pytest.raises(AssertionError, match="matches no operation"):
            check_response(method, unmatched, status, response.content)


def test_the_hosts_own_refusals_are_not_operations(stack: Stack, graph: GraphEmulator) -> None:
    """The Functions host answers a route or method no function declares, empty, before us."""
    assert stack.post("/api/Nope", json={}).status_code == 404  # passed the hook
    assert stack.client.delete(f"/api/UnassignUser/{DEMO_ASSIGNED_ID}").status_code == 405
    check_response("GET", "/api/BulkUnassignUser", 405, b"")
    check_response("POST", "/api/Nope", 404, b"")


def test_a_401_may_be_the_hosts_empty_one_or_our_problem_document() -> None:
    problem = {
        "type": "https://example.invalid/problems/unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "A bearer token is required.",
        "correlationId": "c-1",
        "graphClientRequestId": str(uuid.uuid4()),
    }
    check_response("POST", "/api/UnassignUser", 401, b"")
    check_response("POST", "/api/UnassignUser", 401, json.dumps(problem).encode())
    with pytest.raises(AssertionError, match="does not conform"):
        check_response("POST", "/api/UnassignUser", 401, b'{"error": "no"}')


def test_a_bulk_answer_without_resend_is_rejected(stack: Stack, graph: GraphEmulator) -> None:
    response = stack.post(
        "/api/BulkUnassignUser", json={"devices": [{"deviceId": DEMO_ASSIGNED_ID}]}
    )
    assert response.status_code == 200 and response.json()["resend"] == []
    altered = {k: v for k, v in response.json().items() if k != "resend"}
    with pytest.raises(AssertionError, match="resend"):
        check_response("POST", "/api/BulkUnassignUser", 200, json.dumps(altered).encode())
