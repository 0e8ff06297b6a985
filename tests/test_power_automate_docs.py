"""docs/power-automate.md tells the truth about bulk jobs: the definition's operations and fields,
and the code's numbers.

Each claim is a check in `doc_violations`, which lists what is wrong. It finds nothing in the guide
and the definition as they are, and it names the claim in an altered copy of either (the
parametrized tests below), so no check passes because it looked at nothing.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.jobs.api import MAX_RETRY_AFTER_SECONDS, MIN_RETRY_AFTER_SECONDS, STARTING_RETRY_SECONDS
from shared.jobs.results import RESEND
from shared.jobs.settings import (
    DEFAULT_JOB_DEADLINE_SECONDS,
    DEFAULT_RETENTION_DAYS,
    load_job_settings,
)
from shared.jobs.store import IDEMPOTENCY_SECONDS, STATUSES
from shared.problems import Failure, Problem
from tests.contract import SPEC_PATH

Document = dict[str, Any]
ROOT = SPEC_PATH.parent.parent
GUIDE = ROOT / "docs" / "power-automate.md"
STATUS_FUNCTION = ROOT / "BulkUnassignJobStatus" / "function.json"
DAY = 86_400
HOUR = 3_600
# Power Automate's limits (learn.microsoft.com/power-automate/limits-and-config): a run lasts at
# most 30 days, an asynchronous request waits at most 30 days, a Do until makes at most 5,000
# rounds.
RUN_DAYS = 30
UNTIL_MAX_ROUNDS = 5_000
# The margin the guide adds to a job's deadline for the action's Timeout ("plus two hours").
MARGIN_SECONDS = 2 * HOUR
# The names section 10's expressions give the actions, and the answers each reads:
# (operationId, response statuses whose schema its body has).
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "Start_job": ("StartBulkUnassignJob", ("200",)),
    "Resend_job": ("StartBulkUnassignJob", ("200",)),
    "Start": ("StartBulkUnassignJob", ("202",)),
    "Poll": ("GetBulkUnassignJob", ("200", "202")),
    "Cancel_job": ("CancelBulkUnassignJob", ("200",)),
}
# The three job operations, and the one whose 200 is the report.
JOB_OPERATIONS = ("StartBulkUnassignJob", "GetBulkUnassignJob", "CancelBulkUnassignJob")
REPORT = ("GetBulkUnassignJob", "200")
# Connector fields section 10 names in italics, by their x-ms-summary.
FIELDS = ("Devices", "Ticket ID", "Idempotency Key", "Job ID", "Status Capability")
# CamelCase names in backticks or italics that are not operationIds.
NOT_OPERATIONS = frozenset(
    {"AzureConnectors", "LogicApps", "GlobalPerConnector", "DisableAsyncPattern", "BadRequest"}
)
HEADING = re.compile(r"^## (\d+)\. ", re.M)
CAMEL = re.compile(r"[`*]([A-Z][a-z]+(?:[A-Z][a-z]*)+)[`*]")
CHAIN = re.compile(
    r"\b(body|outputs)\('([A-Za-z_]+)'\)((?:\?\['[^']+'\])+)|\bitem\(\)((?:\?\['[^']+'\])+)"
)
KEY = re.compile(r"\?\['([^']+)'\]")
TICKED = re.compile(r"`([^`]+)`")
# The wait between two reads: max(<floor>, int(coalesce(<Retry-After header>, '<floor>'))).
WAIT = re.compile(r"`max\((\d+), int\(coalesce\([^`]*?, '(\d+)'\)\)\)`")
DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?")


def guide() -> str:
    return GUIDE.read_text()


def definition() -> Document:
    loaded: Document = json.loads(SPEC_PATH.read_text())
    return loaded


def flat(text: str) -> str:
    """Line breaks aside: a claim may wrap anywhere."""
    return " ".join(text.split())


def number(text: str) -> int:
    return int(text.replace(",", ""))


def seconds(duration: str) -> int | None:
    """An ISO 8601 duration of days, hours, minutes and seconds, as Power Automate takes them."""
    match = DURATION.fullmatch(duration)
    if match is None or duration in ("P", "PT") or duration.endswith("T"):
        return None
    days, hours, minutes, secs = (int(part or 0) for part in match.groups())
    return days * DAY + hours * HOUR + minutes * 60 + secs


def sections(doc: str) -> dict[str, str]:
    """Each numbered section's text, by its number."""
    starts = [(m.group(1), m.start()) for m in HEADING.finditer(doc)]
    ends = [m.start() for m in re.finditer(r"^## ", doc, re.M)] + [len(doc)]
    found = {}
    for number_, start in starts:
        end = min(e for e in ends if e > start)
        found[number_] = doc[start:end]
    return found


def operations(spec: Document) -> dict[str, Document]:
    return {
        op["operationId"]: op
        for methods in spec["paths"].values()
        for op in methods.values()
        if isinstance(op, dict) and "operationId" in op
    }


def deref(schema: Document, spec: Document) -> Document:
    while "$ref" in schema:
        schema = spec["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def response_schema(spec: Document, operation_id: str, status: str) -> Document | None:
    response = operations(spec).get(operation_id, {}).get("responses", {}).get(status)
    if response is None or "schema" not in response:
        return None
    return deref(response["schema"], spec)


def walk(schema: Document, keys: list[str], spec: Document) -> bool:
    for key in keys:
        schema = deref(schema, spec)
        if schema.get("type") == "array":
            schema = deref(schema.get("items", {}), spec)
        properties = schema.get("properties", {})
        if key not in properties:
            return False
        schema = properties[key]
    return True


def names(schema: Document | None, spec: Document) -> set[str]:
    if schema is None:
        return set()
    schema = deref(schema, spec)
    if schema.get("type") == "array":
        schema = deref(schema.get("items", {}), spec)
    return set(schema.get("properties", {}))


def table(text: str, header: str) -> dict[str, str]:
    """The rows of the table under `header`: first cell's ticked name → second cell."""
    rows: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if line.strip() == header:
            next(lines, None)  # the |---| line
            for row in lines:
                if not row.startswith("|"):
                    break
                cells = [cell.strip() for cell in row.strip("|").split("|")]
                rows[cells[0].strip("`")] = cells[1]
    return rows


def summaries(spec: Document) -> Iterator[str]:
    """Every x-ms-summary of the job operations' parameters and their body's properties."""
    for operation_id in JOB_OPERATIONS:
        for parameter in operations(spec).get(operation_id, {}).get("parameters", []):
            yield str(parameter.get("x-ms-summary"))
            if "schema" in parameter:
                schema = deref(parameter["schema"], spec)
                for field in schema.get("properties", {}).values():
                    yield str(field.get("x-ms-summary"))


def accepted(env: dict[str, str]) -> bool:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true", "WEBSITE_HOSTNAME": "a.example"}
    try:
        load_job_settings({**base, **env})
    except Problem:
        return False
    return True


def structure_violations(doc: str, spec: Document) -> list[str]:
    found = []
    numbers = [m.group(1) for m in HEADING.finditer(doc)]
    if numbers != [str(n) for n in range(1, len(numbers) + 1)] or "10" not in numbers:
        found.append(f"section numbering {numbers}")
    parts = sections(doc)
    if "never answers 202" in flat(doc):
        found.append("the stale claim that the function never answers 202")
    if "section 10" not in flat(parts.get("8", "")):
        found.append("Time limits does not point to section 10")
    ops = operations(spec)
    listed = {}
    for row in parts.get("1", "").splitlines():
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if row.startswith("|") and len(cells) >= 3 and re.fullmatch(r"`\w+`", cells[1]):
            listed[cells[1].strip("`")] = cells[0]
    for operation_id, operation in ops.items():
        if operation_id not in listed:
            found.append(f"operation {operation_id} is not in section 1's table")
        elif listed[operation_id] != operation["summary"]:
            found.append(f"operation {operation_id}'s action is not named by its summary")
    found += [f"section 1 names {name}, no operation" for name in listed if name not in ops]
    for name in sorted(set(CAMEL.findall(doc)) - NOT_OPERATIONS - set(ops)):
        found.append(f"{name} is neither an operation nor a known name")
    return found


def expression_violations(section: str, spec: Document) -> list[str]:
    found = []
    report = response_schema(spec, *REPORT)
    item = deref(report["properties"]["results"]["items"], spec) if report else {}
    used = set()
    for match in CHAIN.finditer(section):
        kind, action, keys_text, item_keys = match.groups()
        text = match.group(0)
        if item_keys is not None:
            if not walk(item, KEY.findall(item_keys), spec):
                found.append(f"{text}: no such field in a report's results")
            continue
        keys = KEY.findall(keys_text)
        if action not in ACTIONS:
            found.append(f"{text}: unknown action {action}")
            continue
        used.add(action)
        operation_id, statuses = ACTIONS[action]
        if kind == "outputs":
            first, keys = keys[0], keys[1:]
            if first == "statusCode" and not keys:
                continue
            if first == "headers" and len(keys) == 1:
                responses = operations(spec).get(operation_id, {}).get("responses", {})
                if not any(keys[0] in responses.get(s, {}).get("headers", {}) for s in statuses):
                    found.append(f"{text}: {operation_id} declares no header {keys[0]}")
                continue
            if first != "body":
                found.append(f"{text}: not an output Power Automate gives")
                continue
        schemas = [response_schema(spec, operation_id, s) for s in statuses]
        if not any(s is not None and walk(s, keys, spec) for s in schemas):
            found.append(f"{text}: no such field in {operation_id}'s {'/'.join(statuses)}")
    found += [f"action {a} is never used" for a in ACTIONS if a not in used]
    return found


def report_violations(section: str, spec: Document) -> list[str]:
    found = []
    report = response_schema(spec, *REPORT)
    same = {json.dumps(response_schema(spec, op, "200")) for op in JOB_OPERATIONS}
    if len(same) != 1:
        found.append("the job operations' 200s are not the same report")
    rows = table(section, "| field | what it holds |")
    if set(rows) != names(report, spec):
        found.append(f"report fields {sorted(rows)} are not {sorted(names(report, spec))}")
    properties = deref(report, spec).get("properties", {}) if report else {}
    for field in ("summary", "results"):
        listed = set(TICKED.findall(rows.get(field, "")))
        if listed != names(properties.get(field), spec):
            found.append(f"the {field} row lists {sorted(listed)}")
    if set(TICKED.findall(rows.get("status", ""))) != set(STATUSES) - {"running"}:
        found.append("the status row's words are not the ended statuses")
    if set(TICKED.findall(rows.get("resend", ""))) - {"status", "[]"} != RESEND:
        found.append("the resend row's statuses are not the ones resend takes")
    for field in FIELDS:
        if f"*{field}*" not in section or field not in set(summaries(spec)):
            found.append(f"connector field {field}")
    start = operations(spec).get("StartBulkUnassignJob", {})
    headers = [p["name"] for p in start.get("parameters", []) if p.get("in") == "header"]
    if "Idempotency-Key" not in headers or "`@{workflow()?['run']?['name']}`" not in section:
        found.append("the Idempotency-Key header set to the run's id")
    get = operations(spec).get("GetBulkUnassignJob", {})
    binding = json.loads(STATUS_FUNCTION.read_text())["bindings"][0]
    if get.get("security") != [] or binding["authLevel"] != "anonymous":
        found.append("the status URL is anonymous in neither the definition nor the host")
    if "anonymous to the Functions host" not in flat(section):
        found.append("the guide does not say the status URL is anonymous")
    return found


def number_violations(section: str, spec: Document) -> list[str]:
    found = []
    text = flat(section)
    bounds = re.findall(r"a `Retry-After` of (\d+) to (\d+) s", text)
    if not bounds or any(
        (int(low), int(high)) != (MIN_RETRY_AFTER_SECONDS, MAX_RETRY_AFTER_SECONDS)
        for low, high in bounds
    ):
        found.append(f"Retry-After bounds {bounds}")
    fixed = {int(n) for n in re.findall(r"`Retry-After: (\d+)`", text)}
    if fixed != {MIN_RETRY_AFTER_SECONDS, int(STARTING_RETRY_SECONDS)}:
        found.append(f"fixed Retry-After values {sorted(fixed)}")
    last = re.findall(r"at most one `Retry-After` \((\d+) s\)", text)
    if [int(n) for n in last] != [MAX_RETRY_AFTER_SECONDS]:
        found.append("the last read's delay after the deadline")
    for operation_id, status in (("StartBulkUnassignJob", "202"), ("GetBulkUnassignJob", "202")):
        response = operations(spec).get(operation_id, {}).get("responses", {}).get(status, {})
        described = response.get("headers", {}).get("Retry-After", {}).get("description", "")
        if f"({MIN_RETRY_AFTER_SECONDS} to {MAX_RETRY_AFTER_SECONDS})" not in described:
            found.append(f"{operation_id} {status} Retry-After description")
    default = re.findall(r"`JOB_DEADLINE_SECONDS` \(([\d,]+) s, (\d+) hours, by default\)", text)
    if [(number(s), int(h) * HOUR) for s, h in default] != [(DEFAULT_JOB_DEADLINE_SECONDS,) * 2]:
        found.append(f"default deadline {default}")
    largest = re.findall(r"`JOB_DEADLINE_SECONDS` is at most ([\d,]+) \((\d+) days\)", text)
    if len(largest) != 1:
        found.append("the largest deadline is not stated once")
    for most, days in largest:
        if not accepted({"JOB_DEADLINE_SECONDS": str(number(most))}) or accepted(
            {"JOB_DEADLINE_SECONDS": str(number(most) + 1)}
        ):
            found.append(f"largest deadline {most}: not the setting's maximum")
        if int(days) * DAY != number(most) or int(days) > RUN_DAYS:
            found.append(f"largest deadline {most} is not {days} days within a run's 30")
    retention = re.findall(r"`JOB_RETENTION_DAYS` \((\d+) by default, (\d+) to (\d+)\)", text)
    if len(retention) != 1:
        found.append("retention is not stated once")
    for default_days, low, high in retention:
        if float(default_days) != DEFAULT_RETENTION_DAYS:
            found.append(f"default retention {default_days}")
        key = "JOB_RETENTION_DAYS"
        inside = accepted({key: low}) and accepted({key: high})
        if not inside or accepted({key: str(int(low) - 1)}) or accepted({key: str(int(high) + 1)}):
            found.append(f"retention range {low} to {high}")
    windows = re.findall(r"(?:within|After) (\d+) hours", text)
    if not windows or {int(h) * HOUR for h in windows} != {IDEMPOTENCY_SECONDS}:
        found.append(f"idempotency window {windows}")
    problems = re.findall(r"\b(\d{3}) `([a-z]+(?:-[a-z]+)+)`", text)
    by_slug = {failure.slug: failure.status for failure in Failure}
    if not problems:
        found.append("no problem type named")
    for status, slug in problems:
        if by_slug.get(slug) != int(status):
            found.append(f"problem {status} {slug}")
    return found


def timeout_violations(section: str) -> list[str]:
    found = []
    text = flat(section)
    recommended = re.findall(r"set \*Timeout\* to `([^`]+)`", text)
    timeout = seconds(recommended[0]) if len(recommended) == 1 else None
    if timeout is None:
        found.append(f"recommended timeout {recommended}")
        timeout = 0
    elif timeout != DEFAULT_JOB_DEADLINE_SECONDS + MARGIN_SECONDS or timeout > RUN_DAYS * DAY:
        found.append(f"timeout {recommended[0]} is not the default deadline plus two hours")
    if timeout < DEFAULT_JOB_DEADLINE_SECONDS + MAX_RETRY_AFTER_SECONDS:
        found.append("the timeout ends before the default deadline's last read")
    for duration, deadline in re.findall(r"`(P[^`]+)` for ([\d,]+)", text):
        if seconds(duration) != number(deadline) + MARGIN_SECONDS:
            found.append(f"example timeout {duration} for {deadline}")
    loop = re.findall(r"\*Count\* ([\d,]+), \*Timeout\* `([^`]+)`", text)
    floors = {int(n) for pair in WAIT.findall(text) for n in pair}
    stated = {int(n) for n in re.findall(r"The floor of (\d+) s", text)}
    if len(loop) != 1 or len(floors) != 1 or stated != floors:
        found.append(f"the polling loop's limits {loop}, floors {floors}, stated {stated}")
        return found
    count, loop_timeout = number(loop[0][0]), seconds(loop[0][1])
    floor = floors.pop()
    if count > UNTIL_MAX_ROUNDS:
        found.append(f"Do until count {count} over {UNTIL_MAX_ROUNDS}")
    if loop_timeout != timeout:
        found.append("the loop's timeout is not the action's")
    if loop_timeout is None or count * floor < loop_timeout:
        found.append(f"{count} rounds of {floor} s run out before {loop[0][1]}")
    return found


def doc_violations(doc: str, spec: Document) -> list[str]:
    section = sections(doc).get("10", "")
    return (
        structure_violations(doc, spec)
        + expression_violations(section, spec)
        + report_violations(section, spec)
        + number_violations(section, spec)
        + timeout_violations(section)
    )


def test_the_guide_matches_the_code_and_the_definition() -> None:
    assert doc_violations(guide(), definition()) == []


def test_the_checks_look_at_something() -> None:
    section = sections(guide())["10"]
    assert len(CHAIN.findall(section)) >= 20
    assert len(table(section, "| field | what it holds |")) == 9


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ("## 10. Bulk jobs", "## 11. Bulk jobs", "section numbering"),
        (
            "For every other operation the setting changes nothing.",
            "The function never answers 202.",
            "stale claim",
        ),
        ("up to 30 days (section 10)", "up to 30 days", "Time limits does not point"),
        ("| Cancel a bulk job | `CancelBulkUnassignJob` |", "", "CancelBulkUnassignJob is not"),
        ("| Cancel a bulk job |", "| Cancel a job |", "not named by its summary"),
        ("with `StartBulkUnassignJob`", "with `StartBulkUnassignJobs`", "StartBulkUnassignJobs"),
        ("?['summary']?['retryable']", "?['summary']?['retriable']", "no such field"),
        ("body('Start')?['statusUrl']", "body('Start')?['statusURL']", "no such field"),
        ("item()?['detail']", "item()?['details']", "no such field in a report's results"),
        ("body('Cancel_job')", "body('Cancel')", "unknown action Cancel"),
        ("['headers']?['Retry-After']", "['headers']?['Retry-After-Seconds']", "no header"),
        ("| `dryRun` | whether it was a dry run |\n", "", "report fields"),
        (
            "`wouldUnassign`, `cancelled`, `expired` |",
            "`wouldUnassign`, `cancelled` |",
            "summary row",
        ),
        ("`detail`, and `candidates`", "`detail`, and `cause`", "results row"),
        (
            "`done`, `cancelled` or `expired` |\n| `ticketId`",
            "`completed` |\n| `ticketId`",
            "status row",
        ),
        (
            "`expired`, `graph-throttled` or `out-of-time`",
            "`expired` or `out-of-time`",
            "resend row",
        ),
        ("*Status Capability*", "*Capability*", "connector field Status Capability"),
        ("`@{workflow()?['run']?['name']}`:", "`@{guid()}`:", "Idempotency-Key"),
        ("it is anonymous to the Functions host", "it is public", "does not say the status URL"),
        ("a `Retry-After` of 5 to 60 s while", "a `Retry-After` of 5 to 30 s while", "bounds"),
        ("`Retry-After: 2`", "`Retry-After: 5`", "fixed Retry-After values"),
        ("(60 s) after the deadline", "(30 s) after the deadline", "last read"),
        (
            "(86,400 s, 24 hours, by default)",
            "(86,400 s, 12 hours, by default)",
            "default deadline",
        ),
        (
            "at most 2,592,000 (30 days)",
            "at most 3,000,000 (30 days)",
            "largest deadline 3,000,000",
        ),
        ("default, 0 to 365)", "default, 1 to 365)", "retention range"),
        ("`JOB_RETENTION_DAYS` (7 by", "`JOB_RETENTION_DAYS` (14 by", "default retention"),
        ("same body, within 24 hours,", "same body, within 48 hours,", "idempotency window"),
        ("409 `idempotency-conflict`", "409 `idempotency-conflicts`", "problem 409"),
        ("404 `job-not-found`, and", "410 `job-not-found`, and", "problem 410"),
        ("set *Timeout* to `PT26H`", "set *Timeout* to `PT24H`", "before the default deadline"),
        ("set *Timeout* to `PT26H`", "set *Timeout* to `PT25H`", "plus two hours"),
        ("`P7DT2H` for 604,800", "`P7D` for 604,800", "example timeout"),
        ("*Count* 5000, *Timeout* `PT26H`", "*Count* 6000, *Timeout* `PT26H`", "over 5000"),
        ("*Count* 5000, *Timeout* `PT26H`", "*Count* 5000, *Timeout* `PT27H`", "loop's timeout"),
        ("max(30, int(", "max(10, int(", "floors"),
    ],
)
def test_an_altered_guide_is_refused(old: str, new: str, named: str) -> None:
    doc = guide()
    assert old in doc
    found = doc_violations(doc.replace(old, new, 1), definition())
    assert any(named in violation for violation in found), found


def test_a_polling_floor_too_short_for_the_loop_is_refused() -> None:
    """Every place that states the floor says 10 s: consistent, but 5,000 rounds of 10 s end
    long before PT26H."""
    doc = guide()
    for old, new in (("max(30, int(", "max(10, int("), ("'30')))`", "'10')))`")):
        assert doc.count(old) == 1
        doc = doc.replace(old, new)
    doc = doc.replace("The floor of 30 s", "The floor of 10 s")
    assert doc_violations(doc, definition()) == ["5000 rounds of 10 s run out before PT26H"]


def _drop_summary_field(spec: Document) -> None:
    del spec["definitions"]["BulkJobSummary"]["properties"]["cancelled"]


def _rename_capability(spec: Document) -> None:
    for parameter in operations(spec)["GetBulkUnassignJob"]["parameters"]:
        if parameter["name"] == "capability":
            parameter["x-ms-summary"] = "Capability"


def _secure_status(spec: Document) -> None:
    del operations(spec)["GetBulkUnassignJob"]["security"]


def _drop_retry_after(spec: Document) -> None:
    del operations(spec)["GetBulkUnassignJob"]["responses"]["202"]["headers"]["Retry-After"]


def _other_cancel_report(spec: Document) -> None:
    operations(spec)["CancelBulkUnassignJob"]["responses"]["200"]["schema"] = {
        "$ref": "#/definitions/BulkResult"
    }


def _drop_progress_field(spec: Document) -> None:
    del spec["definitions"]["BulkJobProgress"]["properties"]["open"]


def _new_operation(spec: Document) -> None:
    spec["paths"]["/Extra"] = {"get": {"operationId": "GetExtra", "summary": "Get extra"}}


def _no_idempotency_key(spec: Document) -> None:
    operation = operations(spec)["StartBulkUnassignJob"]
    operation["parameters"] = [p for p in operation["parameters"] if p["name"] != "Idempotency-Key"]


def _retry_after_described(spec: Document) -> None:
    response = operations(spec)["StartBulkUnassignJob"]["responses"]["202"]
    response["headers"]["Retry-After"]["description"] = "Seconds to wait (5 to 30)."


@pytest.mark.parametrize(
    ("alter", "named"),
    [
        (_drop_summary_field, "summary row"),
        (_drop_summary_field, "['summary']?['cancelled']: no such field"),
        (_rename_capability, "connector field Status Capability"),
        (_secure_status, "anonymous in neither"),
        (_drop_retry_after, "declares no header Retry-After"),
        (_other_cancel_report, "not the same report"),
        (_drop_progress_field, "body('Poll')?['open']: no such field"),
        (_new_operation, "GetExtra is not in section 1"),
        (_no_idempotency_key, "Idempotency-Key header"),
        (_retry_after_described, "StartBulkUnassignJob 202 Retry-After description"),
    ],
)
def test_an_altered_definition_is_refused(alter: Callable[[Document], None], named: str) -> None:
    spec = copy.deepcopy(definition())
    alter(spec)
    found = doc_violations(guide(), spec)
    assert any(named in violation for violation in found), found


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        ("PT26H", 26 * HOUR),
        ("P7DT2H", 7 * DAY + 2 * HOUR),
        ("PT90S", 90),
        ("P", None),
        ("PT", None),
    ],
)
def test_durations_are_read_as_power_automate_writes_them(
    duration: str, expected: int | None
) -> None:
    assert seconds(duration) == expected
