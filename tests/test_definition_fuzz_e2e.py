"""Requests generated from the connector's definition, sent through the dev host with a function key.

Every request the definition calls valid is accepted, and every answer matches the definition.
schemathesis reads `connector/apiDefinition.swagger.json` (Swagger 2.0) and makes the requests:

- its coverage cases, a fixed set per operation: each value at and beyond its length limits, of
  the wrong type or off its pattern, fields and parameters missing or unexpected, the function
  key left out;
- requests it generates, as the definition allows them and as it does not: EXAMPLES of each per
  operation, derandomized, so the same requests on every run;
- requests on the emulator's seeded devices (SEEDED), so that some of them change a device, and
  bodies sent as other media types (MEDIA_TYPES), which schemathesis does not vary.

They go to a dev host that checks a function key (`--function-key`, as Azure does) under the
definition's `basePath`, half of them with the headers the connector's `setheader` policies add
(POLICY_HEADERS: `Accept: application/json`). What each must get is decided here from the
request as it was sent, whatever schemathesis meant it to be:

- schema-valid: a 2xx the operation declares, or 404 / 409 when the tenant says so (no such
  device; someone else assigned, several devices); a dry run writes nothing;
- schema-valid, but in a case the definition states and Swagger 2.0 cannot express: 400 and no
  Graph call for both or neither of deviceId and serialNumber, or a serial number holding a code
  point that no pattern can name; 502 graph-error for a serial number with hyphens that Graph
  will not search (the emulator refuses every hyphenated search, as Graph has been seen to) when
  no part without hyphens has 3 characters; in a bulk request, each of these for its entry only;
- schema-invalid: a 4xx and no Graph call. Two stated exceptions: a value whose only fault is
  more than 8 spaces, tabs or line breaks around it is trimmed by the function, so the request is
  judged as the trimmed one; a bulk entry that breaks its schema gets its own 400 result
  (input null) and the other entries go ahead;
- no function key: the host's empty 401; a method or path with no operation: its empty 404/405;
- every answer: a status the operation declares, no 5xx but the one stated above, the content
  type the definition produces (application/json for 2xx and for a problem asked for with the
  connector's Accept, application/problem+json for any other problem), a body matching the declared schema (tests/contract.py, on every answer), and the
  correlation id in its header and body.

State cannot make it flaky: the Graph emulator is reset before every request and has no write
limit, and the dev host's own write pace is far above what the run sends.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import httpx
import hypothesis.core as hypothesis_core
import pytest
from hypothesis import HealthCheck, given, note, reject, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.internal.conjecture import engine as hypothesis_engine
from jsonschema import Draft4Validator
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.generation.drivers import CoverageGenerator
from schemathesis.generation.feedback import FeedbackSources
from schemathesis.generation.overrides import Override
from schemathesis.openapi import from_path
from schemathesis.schemas import APIOperation

from devtools.azurite import Azurite
from devtools.graph_emulator import (
    DEMO_ASSIGNED_ID,
    DEMO_DEFAULT_STRING_IDS,
    DEMO_HYPHENATED_SERIAL_ID,
    DEMO_SPACED_SERIAL_ID,
    DEMO_UNASSIGNED_ID,
    GraphEmulator,
)
from devtools.identity_emulator import IdentityEmulator
from shared.problems import Problem
from shared.request import check_content_type
from tests.contract import SPEC_PATH, hook, operations, spec
from tests.stack import ROOT, Stack

KEY = "definition-fuzz-key-5b8e1c"
DOCUMENT = spec()
SCHEMA = from_path(SPEC_PATH)
Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]
OPERATIONS: dict[str, Operation] = {
    str(result.ok().definition.raw["operationId"]): result.ok()
    for result in SCHEMA.get_all_operations()
    if isinstance(result, Ok)
}
MODES = {"valid": GenerationMode.POSITIVE, "invalid": GenerationMode.NEGATIVE}
# Generated requests per operation and mode: 500 in all, besides about 270 coverage cases and 50
# written out here; the module takes about 20 s on two busy cores.
EXAMPLES = 50
FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=EXAMPLES,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

# The fixed headers the connector's setheader policies add to every request (apiProperties.json).
PROPERTIES = json.loads((ROOT / "connector" / "apiProperties.json").read_text())["properties"]
POLICY_HEADERS = {
    policy["parameters"]["x-ms-apimTemplateParameter.name"]: value
    for policy in PROPERTIES["policyTemplateInstances"]
    if policy["templateId"] == "setheader"
    and not (value := policy["parameters"]["x-ms-apimTemplateParameter.value"]).startswith("@")
}
BULK_REQUEST = {"$ref": "#/definitions/BulkRequest"}
BULK_JOB_REQUEST = {"$ref": "#/definitions/BulkJobRequest"}
# Operations that take no function key (`security: []`): the job's status URL.
ANONYMOUS = frozenset(
    str(operation["operationId"])
    for methods in DOCUMENT["paths"].values()
    for operation in methods.values()
    if operation.get("security") == []
)
HTTP_FUNCTIONS = [
    spec.parent.name
    for spec in sorted(ROOT.glob("*/function.json"))
    if any(b["type"] == "httpTrigger" for b in json.loads(spec.read_text())["bindings"])
]
BULK_DEVICE = {"$ref": "#/definitions/BulkDevice"}
# Headers that frame the message, which the HTTP client writes itself (none is a parameter).
FRAMING = frozenset({"content-length", "transfer-encoding", "host"})
# What the function trims around a device id, serial number or user principal name; the
# definition's patterns allow 8 of them on each side.
SURROUNDING = " \t\r\n"
TRIMMED_FIELDS = frozenset({"deviceId", "serialNumber", "expectedUserPrincipalName"})
# What the tenant may say about a valid request: no such device; another user, several devices.
# And about a job: no such job (or not this capability); an Idempotency-Key used before.
TENANT_SAYS = {
    404: {"device-not-found", "job-not-found"},
    409: {"user-mismatch", "ambiguous-serial", "idempotency-conflict"},
}
PROBLEM_TYPE = "tag:autopilot-unassign,2026:problem:"
DONE = frozenset({"unassigned", "alreadyUnassigned", "wouldUnassign"})


# --- The stack: a dev host that checks the function key, on emulators reset for every request. ---


@pytest.fixture(scope="module")
def keyed_stack(
    _graph_emulator: GraphEmulator, _identity_emulator: IdentityEmulator, azurite: Azurite
) -> Iterator[Stack]:
    _graph_emulator.reset()
    _identity_emulator.reset()
    stack = Stack(
        _graph_emulator,
        _identity_emulator,
        "--function-key",
        KEY,
        # The HTTP functions only: a job's worker would call Graph in the background, between
        # the requests whose Graph calls are checked here. Jobs stay stored and running.
        "--functions",
        *HTTP_FUNCTIONS,
        AzureWebJobsStorage=azurite.connection_string,
        JOB_PUBLIC_BASE_URL="https://jobs.example.test",
        # Far above the few writes this run sends, so the pace never makes a request wait.
        GRAPH_WRITES_PER_WINDOW="10000",
        # The default, not the other suites' 4 s: a slow moment on a busy machine is no failure.
        UNASSIGN_DEADLINE_SECONDS="20",
    )
    # A new connection for every request: on a kept-alive connection each answer of the dev host
    # comes about 40 ms late, which would be most of this module's time. Same contract hook.
    stack.client.close()
    stack.client = httpx.Client(
        base_url=stack.base_url,
        timeout=60.0,
        event_hooks={"response": [hook]},
        limits=httpx.Limits(max_keepalive_connections=0),
    )
    yield stack
    stack.close()


# --- What the definition says about a request, as it was sent. ----------------------------------


@dataclass
class Sent:
    """A request as it went on the wire."""

    method: str
    path: str  # percent-encoding kept, no query string
    query: list[tuple[str, str]]
    headers: httpx.Headers
    body: bytes

    def describe(self) -> str:
        query = f"?{self.query}" if self.query else ""
        body = self.body[:400].decode("utf-8", "replace")
        ctype = self.headers.get("content-type")
        return f"{self.method} {self.path}{query} [{ctype}] {body!r}"


@dataclass
class Judgement:
    operation_id: str | None = None
    violations: list[str] = field(default_factory=list)
    trimmed_only: bool = False  # invalid only for whitespace the function trims
    body: Any = None  # the JSON body, when there is one
    refusal: str | None = None  # a valid request the definition says is refused
    unsearchable: bool = False  # a valid serial number Graph will not search (stated)


ROUTES = operations(DOCUMENT)
# Each operation's success statuses, as declared.
SUCCESS = {
    operation["operationId"]: {int(s) for s in operation["responses"] if s.startswith("2")}
    for _, _, operation in ROUTES
}


def _validator(schema: dict[str, Any]) -> Draft4Validator:
    return Draft4Validator({"definitions": DOCUMENT["definitions"], **schema})


def _errors(schema: dict[str, Any], value: Any, where: str) -> list[str]:
    return [f"{where}: {error.message[:120]}" for error in _validator(schema).iter_errors(value)]


def _parameter_schema(parameter: dict[str, Any]) -> dict[str, Any]:
    keywords = ("type", "minLength", "maxLength", "pattern", "enum", "format")
    return {key: parameter[key] for key in keywords if key in parameter}


def _trim(value: Any, name: str) -> Any:
    if isinstance(value, str) and name in TRIMMED_FIELDS:
        return value.strip(SURROUNDING)
    if isinstance(value, dict):
        return {key: _trim(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [_trim(item, name) for item in value]
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a key named twice")
    return dict(pairs)


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _violations(
    sent: Sent, operation: dict[str, Any], match: re.Match[str], trim: bool
) -> list[str]:
    found: list[str] = []
    query: dict[str, list[str]] = {}
    for name, text in sent.query:
        query.setdefault(name, []).append(text)
    body_parameter = None
    for parameter in operation.get("parameters", []):
        name, where = parameter["name"], parameter["in"]
        if where == "body":
            body_parameter = parameter
            continue
        if where == "path":
            values = [unquote(match[name])]
        elif where == "query":
            values = query.pop(name, [])
        else:
            values = sent.headers.get_list(name)
        if len(values) > 1:
            found.append(f"{where} {name} given {len(values)} times")
        if not values:
            if parameter.get("required"):
                found.append(f"{where} {name} missing")
            continue
        given = _trim(values[0], name) if trim else values[0]
        found += _errors(_parameter_schema(parameter), given, f"{where} {name}")
    # Parameters the operation does not declare are not part of the definition.
    found += [f"query {name} not declared" for name in query]
    if body_parameter is None:
        if sent.body:
            found.append("a body on an operation without one")
        return found
    if not sent.body:
        if body_parameter.get("required"):
            found.append("body missing")
        return found
    # Media types are case-insensitive. No Content-Type at all names no type outside `consumes`
    # (and the function reads such a body as JSON).
    media = sent.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media not in DOCUMENT["consumes"]:
        found.append(f"content type {media!r} not consumed")
    try:
        value: Any = json.loads(
            sent.body.decode("utf-8"),
            object_pairs_hook=_no_duplicates,
            parse_constant=_refuse_constant,
        )
    except ValueError as error:
        return [*found, f"body is not JSON: {error}"]
    if trim:
        value = _trim(value, "")
    if body_parameter["schema"] in (BULK_REQUEST, BULK_JOB_REQUEST) and isinstance(value, dict):
        devices = value.get("devices")
        if isinstance(devices, list):
            # Each entry is judged on its own (the definition says so): see entry_violations.
            value = {**value, "devices": [{} for _ in devices]}
    found += _errors(body_parameter["schema"], value, "body")
    return found


def entry_violations(entry: Any) -> list[str]:
    """How a bulk entry breaks BulkDevice, whitespace the function trims aside."""
    return _errors(BULK_DEVICE, _trim(entry, ""), "entry")


def refused_serial(value: str) -> bool:
    """What the serial number patterns let through and the function refuses, as described."""
    for character in value.strip(SURROUNDING):
        category = unicodedata.category(character)
        if category in ("Cn", "Cs") or (ord(character) > 0xFFFF and category in ("Cf", "Co")):
            return True
    return False


def entry_refusal(entry: Any) -> str | None:
    """Why a schema-valid device (a body, or a bulk entry) gets 400, as the definition says."""
    if not isinstance(entry, dict) or ("deviceId" in entry) == ("serialNumber" in entry):
        return "exactly one of deviceId and serialNumber"
    serial = entry.get("serialNumber")
    if isinstance(serial, str) and refused_serial(serial):
        return "a serial number with a code point no pattern can name"
    return None


def judge(sent: Sent) -> Judgement:
    for route, method, operation in ROUTES:
        match = route.fullmatch(sent.path)
        if method != sent.method or match is None:
            continue
        operation_id = str(operation["operationId"])
        judgement = Judgement(operation_id=operation_id)
        judgement.violations = _violations(sent, operation, match, trim=False)
        if judgement.violations:
            judgement.trimmed_only = not _violations(sent, operation, match, trim=True)
        if not judgement.violations or judgement.trimmed_only:
            if sent.body:
                judgement.body = _trim(json.loads(sent.body), "")
            judgement.refusal = _refusal(operation_id, judgement.body, sent)
            judgement.unsearchable = unsearchable(_serial(operation_id, judgement.body, sent))
        return judgement
    return Judgement(violations=["no operation has this method and path"])


def _serial(operation_id: str, body: Any, sent: Sent) -> Any:
    if operation_id in ("UnassignUser", "UnassignUserBySerialNumber"):
        return body.get("serialNumber")
    if operation_id == "GetAssignmentBySerialNumber":
        return dict(sent.query).get("serialNumber")
    return None


def _refusal(operation_id: str, body: Any, sent: Sent) -> str | None:
    if operation_id == "UnassignUser":
        return entry_refusal(body)
    serial = _serial(operation_id, body, sent)
    if isinstance(serial, str) and refused_serial(serial):
        return "a serial number with a code point no pattern can name"
    return None


def unsearchable(serial: Any) -> bool:
    """A serial number with hyphens and no part without them of 3 characters, which the function
    searches for instead when Graph refuses a hyphenated search (as the emulator always does)."""
    if not isinstance(serial, str) or "-" not in serial:
        return False
    return max(len(part) for part in serial.strip(SURROUNDING).split("-")) < 3


# --- One exchange, and everything checked about it. ----------------------------------------------


def build(
    client: httpx.Client, base_url: str, case: AnyCase, keep_missing_key: bool
) -> httpx.Request:
    """The request for the case as schemathesis would send it, with our key in place of the
    generated one."""
    headers = case.headers if case.headers is not None else {}
    if "x-functions-key" in headers or not keep_missing_key:
        headers["x-functions-key"] = KEY
    case.headers = headers
    kwargs = case.as_transport_kwargs(base_url=base_url + DOCUMENT["basePath"])
    if "json" in kwargs:
        content = json.dumps(kwargs["json"]).encode()  # as requests sends it: ASCII, escaped
    else:
        data = kwargs.get("data")
        content = data.encode() if isinstance(data, str) else data or b""
    raw_headers = {
        name: value.encode("latin-1") if isinstance(value, str) else value
        for name, value in kwargs["headers"].items()
        if name.lower() not in FRAMING
    }
    # Half the requests as the connector sends them; which half follows from the request itself,
    # so a replayed example is sent the same way.
    request_key = repr((kwargs["method"], kwargs["url"], kwargs.get("params"), content))
    if zlib.crc32(request_key.encode()) % 2:
        policy = {name.lower() for name in POLICY_HEADERS}  # it overrides (existsAction)
        raw_headers = {k: v for k, v in raw_headers.items() if k.lower() not in policy}
        raw_headers.update({name: value.encode() for name, value in POLICY_HEADERS.items()})
    return client.build_request(
        kwargs["method"],
        kwargs["url"],
        params=kwargs.get("params"),
        headers=raw_headers,
        content=content,
    )


def as_sent(request: httpx.Request) -> Sent:
    return Sent(
        method=request.method,
        path=request.url.raw_path.split(b"?", 1)[0].decode("ascii"),
        query=parse_qsl(request.url.query.decode("latin-1"), keep_blank_values=True),
        headers=request.headers,
        body=request.content,
    )


def send(stack: Stack, case: AnyCase, keep_missing_key: bool) -> tuple[Sent, httpx.Response]:
    # The stack's client: its hook checks every answer against the definition (tests/contract.py).
    response = stack.client.send(build(stack.client, stack.base_url, case, keep_missing_key))
    return as_sent(response.request), response


# Only to judge a generated request before it is sent: nothing is sent with it.
_JUDGING_CLIENT = httpx.Client()


@st.composite
def possible(draw: st.DrawFn, strategy: st.SearchStrategy[AnyCase]) -> AnyCase:
    """A draw of `strategy`, leaving out the negations Hypothesis cannot generate: a job of more
    than 10,000 devices (maxItems) would need a list longer than it draws. That refusal is
    tested on its own (tests/test_jobs_e2e.py)."""
    try:
        return draw(strategy)
    except InvalidArgument as error:
        if "min_size is larger than Hypothesis supports" not in str(error):
            raise
        reject()


def breaks_the_definition(case: AnyCase) -> bool:
    """Whether the request, as it would be sent, is one the definition does not allow (beyond
    whitespace the function trims)."""
    request = build(_JUDGING_CLIENT, "http://fuzz.invalid", case, keep_missing_key=False)
    judgement = judge(as_sent(request))
    return bool(judgement.violations) and not judgement.trimmed_only


def check_answer(sent: Sent, response: httpx.Response, judgement: Judgement) -> None:
    """The answer's content type and headers are what the definition declares for its status."""
    status = response.status_code
    assert status < 500 or judgement.unsearchable, "a 5xx"
    if not response.content:
        return  # the host's own refusal (401 without a key, 404/405 for no route)
    media = response.headers.get("content-type", "").split(";")[0].strip()
    assert media in DOCUMENT["produces"], media
    plain = status < 300 or sent.headers.get("accept") == "application/json"
    assert media == ("application/json" if plain else "application/problem+json"), media
    assert judgement.operation_id is not None
    _, _, operation = next(r for r in ROUTES if r[2]["operationId"] == judgement.operation_id)
    declared = operation["responses"][str(status)].get("headers", {})
    for name, header in declared.items():
        value = response.headers.get(name)
        if header["type"] == "integer" and value is not None:
            assert value.isdigit(), f"{name}: {value!r}"
    correlation = response.headers.get("x-correlation-id")
    assert correlation and response.json()["correlationId"] == correlation


def problem_slug(response: httpx.Response) -> str:
    kind = str(response.json().get("type", ""))
    return kind.removeprefix(PROBLEM_TYPE)


def check_bulk_results(judgement: Judgement, response: httpx.Response) -> None:
    """Each entry: done, or 404/409 from the tenant, or a 400 the definition states."""
    devices = judgement.body["devices"]
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(devices)))
    expected_by_device: dict[str, set[str]] = {}
    for entry, result in zip(devices, results, strict=True):
        if result["deviceId"] and isinstance(entry, dict) and "expectedUserPrincipalName" in entry:
            upn = entry["expectedUserPrincipalName"].lower()
            expected_by_device.setdefault(result["deviceId"], set()).add(upn)
    for entry, result in zip(devices, results, strict=True):
        status = result["httpStatus"]
        if entry_violations(entry):
            # Stated in the definition: an entry that is not a BulkDevice is answered in its own
            # result, not by refusing the whole request; its text is not repeated.
            assert status == 400 and result["input"] is None, result
        elif entry_refusal(entry):
            assert status == 400, result
        elif unsearchable(entry.get("serialNumber")):
            assert status == 502 and result["status"] == "graph-error", result  # as stated
        elif status == 400:
            # One device named twice with different expected users (README, Bulk).
            assert len(expected_by_device.get(result["deviceId"], ())) > 1, result
        elif status == 200:
            assert result["status"] in DONE, result
        else:
            assert status in TENANT_SAYS and result["status"] in TENANT_SAYS[status], result


@dataclass(frozen=True)
class Outcome:
    kind: str  # valid, trimmed, refused, unsearchable, invalid, no key, no route
    status: int
    writes: int  # unassign calls that reached Graph
    media: str  # the answer's media type, "" for none


def exchange(stack: Stack, case: AnyCase, *, keep_missing_key: bool = False) -> Outcome:
    """Send one request on freshly reset emulators and check its answer."""
    graph = stack.graph
    graph.reset()
    sent, response = send(stack, case, keep_missing_key)
    kind = _checked(stack, sent, response)
    media = response.headers.get("content-type", "").split(";")[0].strip()
    return Outcome(kind, response.status_code, len(graph.graph_calls("POST")), media)


def _checked(stack: Stack, sent: Sent, response: httpx.Response) -> str:
    graph = stack.graph
    judgement = judge(sent)
    status = response.status_code
    posts = graph.graph_calls("POST")
    context = f"{sent.describe()}\n-> {status} {response.text[:600]}"
    try:
        check_answer(sent, response, judgement)
        if judgement.operation_id is None:  # the host answers before it checks the key
            assert status in (404, 405) and not response.content and not graph.requests
            return "no route"
        if sent.headers.get("x-functions-key") != KEY and judgement.operation_id not in ANONYMOUS:
            assert status == 401 and not response.content and not graph.requests
            return "no key"
        if judgement.violations and not judgement.trimmed_only:
            assert 400 <= status < 500, f"schema-invalid ({judgement.violations}) but accepted"
            assert not graph.requests, "schema-invalid, yet Graph was called"
            return "invalid"
        if judgement.refusal is not None:
            assert status == 400, f"stated refusal ({judgement.refusal}) not refused"
            assert not graph.requests, "refused, yet Graph was called"
            return "refused"
        if judgement.unsearchable:
            # Stated in each serialNumber description: Graph refused the search, and no part of the
            # serial number without hyphens is long enough to search instead.
            assert status == 502 and problem_slug(response) == "graph-error"
            return "unsearchable"
        assert status in SUCCESS[judgement.operation_id] | set(TENANT_SAYS), "valid but refused"
        if status in TENANT_SAYS:
            assert problem_slug(response) in TENANT_SAYS[status]
        if isinstance(judgement.body, dict) and judgement.body.get("dryRun") is True:
            assert not posts, "a dry run wrote"
        if judgement.operation_id == "BulkUnassignUser":
            check_bulk_results(judgement, response)
        return "trimmed" if judgement.trimmed_only else "valid"
    except AssertionError as error:
        raise AssertionError(f"{error}\n{context}") from None


# --- Coverage cases: a fixed set per operation. --------------------------------------------------


def coverage_cases(operation: Operation) -> list[AnyCase]:
    generator = CoverageGenerator(
        operation=operation,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=SCHEMA.config.generation_for(operation=operation, phase="coverage"),
        auth_storage=None,
        override=Override(),
        feedback=FeedbackSources(),
    )
    return list(generator)


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_coverage_cases(keyed_stack: Stack, operation_id: str) -> None:
    cases = coverage_cases(OPERATIONS[operation_id])
    outcomes = [exchange(keyed_stack, case, keep_missing_key=True) for case in cases]
    kinds = Counter(outcome.kind for outcome in outcomes)
    assert kinds["valid"] and kinds["invalid"], kinds
    assert kinds["no key"] or operation_id in ANONYMOUS, kinds
    # Problems both as the connector asks for them and as other callers get them.
    media = Counter(outcome.media for outcome in outcomes if outcome.status >= 400)
    assert media["application/json"] and media["application/problem+json"], media


def _one_of_two(entry: Any) -> Any:
    if isinstance(entry, dict) and "deviceId" in entry and "serialNumber" in entry:
        drop = "serialNumber" if len(entry["deviceId"]) % 2 else "deviceId"
        return {key: value for key, value in entry.items() if key != drop}
    return entry


def one_device(case: AnyCase) -> AnyCase:
    """Most valid bodies generated for UnassignUser name both devices or neither: Swagger 2.0
    cannot say "exactly one of", and that stated 400 is already among the coverage cases. So of a
    generated body (or bulk entry) with both, keep one: still valid, and it reaches Graph."""
    body = case.body
    if isinstance(body, dict):
        body = _one_of_two(body)
        devices = body.get("devices")
        if isinstance(devices, list):
            body = {**body, "devices": [_one_of_two(entry) for entry in devices]}
        case.body = body
    return case


def names_a_device(case: AnyCase) -> bool:
    """Not one of the stated refusals (the other valid requests reach Graph)."""
    if (
        isinstance(case.body, dict)
        and case.operation.definition.raw["operationId"] == "UnassignUser"
    ):
        return entry_refusal(case.body) is None
    serial = (case.query or {}).get("serialNumber")
    return not (isinstance(serial, str) and refused_serial(serial))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_generated_requests(keyed_stack: Stack, operation_id: str, mode: str) -> None:
    strategy = OPERATIONS[operation_id].as_strategy(generation_mode=MODES[mode])
    if mode == "valid":
        strategy = strategy.map(one_device)
        # Half of them drawn again until they name a device the function can look up.
        strategy = st.one_of(strategy, strategy.filter(names_a_device))
    else:
        # Half of them drawn again until they break the definition: a negative strategy cannot
        # always negate a pattern, and how often it fails to varies with the seed.
        strategy = possible(strategy)
        strategy = st.one_of(strategy, strategy.filter(breaks_the_definition))
    kinds: Counter[str] = Counter()

    @FUZZ
    @given(case=strategy)
    def run(case: AnyCase) -> None:
        note(repr(case))  # a failing example's Case prints as nothing by itself
        kinds[exchange(keyed_stack, case).kind] += 1

    run()
    assert kinds[mode] >= EXAMPLES // 4, kinds  # not mostly something else (a stated refusal)


# --- On the seeded devices: requests that change a real device. ---------------------------------

UPN = "alex.wilber@contoso.example"  # DEMO_ASSIGNED_ID's user
OTHER = "someone.else@contoso.example"


@dataclass(frozen=True)
class Seeded:
    operation_id: str
    parts: dict[str, Any]  # path_parameters, query, body of the request
    status: int
    writes: bool  # whether an unassign reaches Graph
    kind: str = "valid"


SPACES = " \t" * 5  # 10 around a value: beyond the patterns' 8, trimmed by the function
MALFORMED = [
    42,
    {"deviceID": DEMO_ASSIGNED_ID},
    {"serialNumber": "abc"},
    {"deviceId": DEMO_UNASSIGNED_ID, "dryRun": True},
]
SEEDED = [
    Seeded("UnassignUser", {"body": {"deviceId": DEMO_ASSIGNED_ID, "ticketId": "INC0012345"}}, 200, True),
    Seeded("UnassignUser", {"body": {"serialNumber": " 5cg1234xyz\n", "expectedUserPrincipalName": UPN.upper(), "dryRun": True}}, 200, False),
    Seeded("UnassignUser", {"body": {"deviceId": "{" + DEMO_ASSIGNED_ID.upper() + "}", "expectedUserPrincipalName": OTHER}}, 409, False),
    Seeded("UnassignUser", {"body": {"serialNumber": "R90-ABC-123", "ticketId": "RITM0010001"}}, 200, True),
    Seeded("UnassignUser", {"body": {"serialNumber": "Default string"}}, 409, False),
    Seeded("UnassignUser", {"body": {"deviceId": DEMO_UNASSIGNED_ID, "dryRun": False}}, 200, False),
    Seeded("UnassignUser", {"body": {"deviceId": DEMO_ASSIGNED_ID, "serialNumber": "5CG1234XYZ"}}, 400, False, "refused"),
    Seeded("UnassignUser", {"body": {"serialNumber": SPACES + "5CG1234XYZ" + SPACES}}, 200, True, "trimmed"),
    Seeded("UnassignUser", {"body": {"serialNumber": "AB-CD"}}, 502, False, "unsearchable"),
    Seeded("UnassignUserBySerialNumber", {"body": {"serialNumber": "5CG1234XYZ", "ticketId": "INC0012346"}}, 200, True),
    Seeded("UnassignUserBySerialNumber", {"body": {"serialNumber": "mxl 4411 22x", "expectedUserPrincipalName": OTHER}}, 409, False),
    Seeded("UnassignUserBySerialNumber", {"body": {"serialNumber": "5CG1234XYZ", "deviceId": DEMO_ASSIGNED_ID}}, 400, False, "invalid"),
    Seeded("UnassignUserBySerialNumber", {"body": {"deviceId": DEMO_ASSIGNED_ID}}, 400, False, "invalid"),
    Seeded("UnassignUserBySerialNumber", {"body": {"serialNumber": "AB-CD"}}, 502, False, "unsearchable"),
    Seeded("UnassignUserById", {"path_parameters": {"deviceId": DEMO_SPACED_SERIAL_ID}}, 200, True),
    Seeded("UnassignUserById", {"path_parameters": {"deviceId": "\t" + DEMO_ASSIGNED_ID.upper() + " "}, "body": {"expectedUserPrincipalName": UPN, "ticketId": "CHG1", "dryRun": False}}, 200, True),
    Seeded("UnassignUserById", {"path_parameters": {"deviceId": DEMO_HYPHENATED_SERIAL_ID}, "body": {"expectedUserPrincipalName": UPN}}, 409, False),
    Seeded("UnassignUserById", {"path_parameters": {"deviceId": DEMO_ASSIGNED_ID}, "body": {"expectedUserPrincipalName": SPACES + UPN + SPACES}}, 200, True, "trimmed"),
    Seeded("GetAssignment", {"path_parameters": {"deviceId": DEMO_ASSIGNED_ID}}, 200, False),
    Seeded("GetAssignment", {"path_parameters": {"deviceId": "{" + DEMO_UNASSIGNED_ID + "}"}}, 200, False),
    Seeded("GetAssignment", {"path_parameters": {"deviceId": SPACES + DEMO_ASSIGNED_ID + SPACES}}, 200, False, "trimmed"),
    Seeded("GetAssignmentBySerialNumber", {"query": {"serialNumber": "mxl 4411 22x"}}, 200, False),
    Seeded("GetAssignmentBySerialNumber", {"query": {"serialNumber": "R90-ABC-123"}}, 200, False),
    Seeded("GetAssignmentBySerialNumber", {"query": {"serialNumber": "Default string"}}, 409, False),
    Seeded("GetAssignmentBySerialNumber", {"query": {"serialNumber": "R9-0A-BC"}}, 502, False, "unsearchable"),
    Seeded("BulkUnassignUser", {"body": {"devices": [{"deviceId": DEMO_ASSIGNED_ID}, {"serialNumber": "PF3ABC12"}], "ticketId": "RITM1"}}, 200, True),
    Seeded("BulkUnassignUser", {"body": {"devices": [
        {"deviceId": DEMO_ASSIGNED_ID, "expectedUserPrincipalName": UPN},
        {"serialNumber": "5CG1234XYZ"},
        {"serialNumber": "MXL 4411 22X", "expectedUserPrincipalName": OTHER},
        {"serialNumber": "Default string"},
        {"deviceId": DEMO_DEFAULT_STRING_IDS[1]},
        {"deviceId": "0f0e0d0c-0b0a-0908-0706-050403020100"},
        {"serialNumber": "R90-ABC-123", "expectedUserPrincipalName": "lidia.holloway@contoso.example"},
        {"deviceId": DEMO_UNASSIGNED_ID, "serialNumber": "PF3ABC12"},
        {},
        {"serialNumber": "A-B-C-D"},
    ]}}, 207, True),
    Seeded("BulkUnassignUser", {"body": {"devices": [{"deviceId": DEMO_ASSIGNED_ID}, *MALFORMED], "ticketId": "RITM2"}}, 207, True),
    Seeded("BulkUnassignUser", {"body": {"devices": [{"deviceId": DEMO_SPACED_SERIAL_ID, "expectedUserPrincipalName": "megan.bowen@contoso.example"}, {"serialNumber": "mxl 4411 22x", "expectedUserPrincipalName": OTHER}]}}, 207, False),
]  # fmt: skip


@pytest.mark.parametrize("seeded", SEEDED, ids=lambda s: s.operation_id)
def test_requests_on_seeded_devices(keyed_stack: Stack, seeded: Seeded) -> None:
    parts = dict(seeded.parts)
    if "path_parameters" in parts:  # generated path values come percent-encoded: so do these
        parts["path_parameters"] = {
            k: quote(v, safe="") for k, v in parts["path_parameters"].items()
        }
    if "body" in parts:
        parts["media_type"] = "application/json"
    outcome = exchange(keyed_stack, OPERATIONS[seeded.operation_id].Case(**parts))
    assert (outcome.status, outcome.kind) == (seeded.status, seeded.kind)
    assert (outcome.writes > 0) is seeded.writes


def test_the_base_path_is_the_hosts_route_prefix() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    prefix = host.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    assert DOCUMENT["basePath"] == "/" + prefix


def test_the_definition_states_what_the_fuzz_allows() -> None:
    """Each allowance above is in the definition, where a flow maker reads it."""
    definitions = DOCUMENT["definitions"]
    bulk = DOCUMENT["paths"]["/BulkUnassignUser"]["post"]["description"]
    assert "Each entry is checked on its own" in bulk and "does not make the request 400" in bulk
    assert "not by refusing the request" in definitions["BulkDevice"]["description"]
    serials = [
        definitions["UnassignRequest"]["properties"]["serialNumber"],
        definitions["UnassignBySerialNumberRequest"]["properties"]["serialNumber"],
        definitions["BulkDevice"]["properties"]["serialNumber"],
        OPERATIONS["GetAssignmentBySerialNumber"].definition.raw["parameters"][1],
    ]
    for serial in serials:
        text = serial["description"]
        assert "if no part has 3 characters the answer is 502" in text
        assert "trims any number" in text and "unassigned code points" in text
    assert (
        "exactly one of deviceId and serialNumber"
        in DOCUMENT["paths"]["/UnassignUser"]["post"]["description"]
    )


def test_hypothesis_still_shows_failing_examples() -> None:
    """schemathesis, a pytest plugin, blanks them in every test when loaded; conftest.py undoes it."""

    @settings(derandomize=True, database=None, max_examples=5)
    @given(st.just(7))
    def fails(number: int) -> None:
        assert number != 7

    with pytest.raises(AssertionError) as caught:
        fails()
    assert "number=7" in "\n".join(getattr(caught.value, "__notes__", [])), caught.value
    for module in (hypothesis_core, hypothesis_engine):
        assert module.BUFFER_SIZE == 8 * 1024


# --- The body's media type: what schemathesis does not vary. -------------------------------------

MEDIA_TYPES = [
    ("application/json", "valid"),
    ("application/json; charset=utf-8", "valid"),
    ("Application/JSON", "valid"),  # media types are case-insensitive
    ("application/vnd.contoso+json", "invalid"),
    ("application/merge-patch+json", "invalid"),
    ("text/json", "invalid"),
    ("text/plain", "invalid"),
]


@pytest.mark.parametrize(("media_type", "kind"), MEDIA_TYPES)
@pytest.mark.parametrize(
    "operation_id",
    ["UnassignUser", "UnassignUserBySerialNumber", "UnassignUserById", "BulkUnassignUser"],
)
def test_the_body_media_type(
    keyed_stack: Stack, operation_id: str, media_type: str, kind: str
) -> None:
    bodies = {
        "UnassignUser": {"deviceId": DEMO_ASSIGNED_ID, "dryRun": True},
        "UnassignUserBySerialNumber": {"serialNumber": "5CG1234XYZ", "dryRun": True},
        "UnassignUserById": {"dryRun": True},
        "BulkUnassignUser": {"devices": [{"deviceId": DEMO_ASSIGNED_ID}], "dryRun": True},
    }
    case = OPERATIONS[operation_id].Case(
        path_parameters={"deviceId": DEMO_ASSIGNED_ID},
        body=json.dumps(bodies[operation_id]).encode(),
        headers={"Content-Type": media_type},
        media_type="application/octet-stream",
    )
    outcome = exchange(keyed_stack, case)
    assert outcome.kind == kind
    if kind == "invalid":
        assert outcome.status == 415


@pytest.mark.parametrize("media_type", ["application/merge-patch+json", "application/problem+json"])
def test_a_json_suffix_is_not_application_json(media_type: str) -> None:
    """The definition consumes application/json only, and so does the function: a type with a
    +json suffix is JSON too, but it is not application/json."""
    for content_type in (media_type, media_type.upper() + "; charset=utf-8"):
        with pytest.raises(Problem) as caught:
            check_content_type(content_type)
        assert caught.value.status == 415
