"""The answers the ServiceNow script include's tests replay stay the function's real answers.

`integrations/servicenow/test/fixtures/*.json` hold answers of the function ({method, path,
status, headers, body}). Each must conform to the connector definition, and the running function
(dev host and emulators) must still answer the same request with the same shape: status, the
headers the script include reads, and the body's keys. A changed answer fails here first, so the
Node tests cannot go on replaying a stale one.

The bulk job answers (`job_*.json`) come from one run against a real Azurite: a job started, read
while it runs and once it has ended, a second start with the same Idempotency-Key and another
body, an unknown status URL, and a second job cancelled. Their job ids and capabilities are
example values: the shape compares the route's template, never the ids in it. `job_answers` gives
them again; to record them anew, store its answers with their headers cut to READ_HEADERS.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from devtools.azurite import Azurite, ensure_installed
from devtools.graph_emulator import DEMO_UNASSIGNED_ID, Fault, GraphEmulator
from tests.contract import check_response, spec
from tests.stack import ROOT, Stack

FIXTURES = ROOT / "integrations" / "servicenow" / "test" / "fixtures"
# The headers the script include reads.
READ_HEADERS = ("content-type", "x-correlation-id", "retry-after", "location")
TICKET = "INC0012345"
ASSIGNED = "alex.wilber@contoso.example"
# How the running function is brought to give each answer again: the body sent, and a Graph fault.
REQUESTS: dict[str, tuple[dict[str, str], Fault | None]] = {
    "unassigned": ({"expectedUserPrincipalName": ASSIGNED}, None),
    "user_mismatch": ({"expectedUserPrincipalName": "leaver@contoso.example"}, None),
    # Retry-After beyond the shared host's 4 s deadline: answered at once, without waiting.
    "throttled": (
        {"expectedUserPrincipalName": ASSIGNED},
        Fault("status", method="GET", status=503, retry_after="12", count=5),
    ),
}
HOST_401 = "host_unauthorized"

# Bulk jobs. The status URLs' base is the Node tests' Function App, so the recorded statusUrl is
# the one startJob hands to getJob there.
JOB_FIXTURES = (
    "job_started",
    "job_running",
    "job_report",
    "job_idempotency_conflict",
    "job_not_found",
    "job_cancelled",
)
JOB_KEY = "jobs-servicenow-key"
JOB_BASE = "https://func-autopilot.azurewebsites.net"
JOB_TICKET = "RITM0010001"
JOB_IDEMPOTENCY_KEY = "autopilot.RITM0010001.1"
START = "/api/BulkUnassignJobs"
WAIT_SECONDS = 90.0  # a loose liveness bound for a busy machine
# One write per 3 s for all jobs: a job of three writes still runs when it is first read, and a
# job of three is still running when it is cancelled.
JOB_SETTINGS = {"JOB_WRITES_PER_WINDOW": "1", "GRAPH_WRITE_WINDOW_SECONDS": "3"}
# (Autopilot device id, serial number, user) added to the Graph emulator for the jobs.
JOB_DEVICES = [
    (f"7c2e5a10-4b8d-4f3a-9e61-0d5b8c3a7f{n:02d}", f"5CG40{n:02d}JOB", f"leaver{n}@contoso.example")
    for n in range(1, 8)
]


def stored(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def body_bytes(answer: Mapping[str, Any]) -> bytes:
    return b"" if answer["body"] == "" else json.dumps(answer["body"]).encode()


def shape(answer: Mapping[str, Any]) -> dict[str, Any]:
    """What must not drift: status, headers read, body keys, and the kind of answer."""
    body = answer["body"]
    headers = {key.lower(): value for key, value in answer["headers"].items()}
    summary = body.get("summary") if isinstance(body, dict) else None
    return {
        # The template, not the path: a job's id and capability are example values.
        "request": (answer["method"], template(answer["path"])),
        "status": answer["status"],
        "headers": sorted(name for name in READ_HEADERS if name in headers),
        "content-type": headers.get("content-type"),
        "keys": sorted(body) if isinstance(body, dict) else body,
        "summary": sorted(summary) if isinstance(summary, dict) else None,
        "kind": body.get("type", body.get("status")) if isinstance(body, dict) else None,
    }


def recorded(method: str, path: str, response: httpx.Response) -> dict[str, Any]:
    return {
        "method": method,
        "path": path,
        "status": response.status_code,
        "headers": dict(response.headers),
        "body": response.json() if response.content else "",
    }


def template(path: str) -> str:
    """The definition's path template that `path` (as sent, under basePath) is an instance of:
    a `{name}` segment stands for any one non-empty segment, every other segment for itself.
    Exactly one template must match (the status URL's has two parameters)."""
    document = spec()
    assert path.startswith(document["basePath"] + "/"), path
    segments = path.removeprefix(document["basePath"]).split("/")
    found: list[str] = [
        candidate
        for candidate in document["paths"]
        if len(parts := candidate.split("/")) == len(segments)
        and all(
            (part.startswith("{") and part.endswith("}") and sent != "") or part == sent
            for part, sent in zip(parts, segments, strict=True)
        )
    ]
    assert len(found) == 1, f"{path} matches {found or 'no path'} of the definition"
    return found[0]


def operation(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The definition's operation for the answer's request (the path must be one of ours)."""
    paths = spec()["paths"][template(answer["path"])]
    assert answer["method"].lower() in paths, (answer["method"], answer["path"])
    found: dict[str, Any] = paths[answer["method"].lower()]
    return found


def test_every_fixture_is_checked_here() -> None:
    assert {path.stem for path in FIXTURES.glob("*.json")} == {*REQUESTS, HOST_401, *JOB_FIXTURES}


@pytest.mark.parametrize("name", [*sorted(REQUESTS), *JOB_FIXTURES])
def test_stored_answer_conforms_to_the_connector_definition(name: str) -> None:
    answer = stored(name)
    operation(answer)
    check_response(answer["method"], answer["path"], answer["status"], body_bytes(answer))


def test_the_check_refuses_an_answer_the_definition_does_not_allow() -> None:
    # Positive control: the same check fails once a required field is missing.
    answer = stored("unassigned")
    del answer["body"]["message"]
    with pytest.raises(AssertionError, match="message"):
        check_response(answer["method"], answer["path"], answer["status"], body_bytes(answer))


def test_the_host_401_is_declared_for_the_request() -> None:
    answer = stored(HOST_401)
    assert answer["status"] == 401 and answer["body"] == "" and answer["headers"] == {}
    assert "401" in operation(answer)["responses"]


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_the_running_function_still_gives_the_stored_answer(
    name: str, stack: Stack, graph: GraphEmulator
) -> None:
    fields, fault = REQUESTS[name]
    if fault is not None:
        graph.inject(fault)
    answer = stored(name)
    response = stack.post(
        answer["path"],
        json={"serialNumber": "5CG1234XYZ", "ticketId": TICKET, **fields},
        headers={"X-Correlation-Id": TICKET},
    )
    assert shape(recorded("POST", answer["path"], response)) == shape(answer)


def test_the_host_still_answers_a_missing_key_with_an_empty_401(
    fresh_stack: Callable[..., Stack], graph: GraphEmulator
) -> None:
    answer = stored(HOST_401)
    stack = fresh_stack("--function-key", "servicenow-key")
    response = stack.post(answer["path"], json={"serialNumber": "5CG1234XYZ", "ticketId": TICKET})
    assert shape(recorded("POST", answer["path"], response)) == shape(answer)
    assert graph.requests == []


# Bulk jobs


def test_a_templated_path_finds_its_one_operation() -> None:
    job, capability = "0" * 32, "A" * 32
    assert template(f"{START}/{job}/{capability}") == "/BulkUnassignJobs/{jobId}/{capability}"
    assert template(f"{START}/{job}") == "/BulkUnassignJobs/{jobId}"
    assert template(START) == "/BulkUnassignJobs"
    assert template("/api/UnassignUser/") == "/UnassignUser/"  # not {deviceId} with an empty id
    # Positive controls: a path of no operation, or one segment too many, is refused.
    for path in (f"{START}/{job}/{capability}/more", f"{START}/{job}//", "/api/Other"):
        with pytest.raises(AssertionError, match="matches no path"):
            template(path)


def test_the_job_shape_ignores_ids_and_sees_a_changed_key() -> None:
    report = stored("job_report")
    other = json.loads(json.dumps(report))
    other["path"] = f"{START}/{uuid.uuid4().hex}/{'B' * 32}"
    other["body"]["jobId"] = uuid.uuid4().hex
    assert shape(other) == shape(report)
    # Positive controls: a key gone from the body, or from its summary, is a different shape.
    del other["body"]["resend"]
    assert shape(other) != shape(report)
    other = json.loads(json.dumps(report))
    del other["body"]["summary"]["expired"]
    assert shape(other) != shape(report)


def test_the_job_answers_are_one_story() -> None:
    """What the Node tests rely on: the started job is the one read, at its status URL."""
    started, running, report = (stored(n) for n in ("job_started", "job_running", "job_report"))
    status_url = started["body"]["statusUrl"]
    assert started["headers"]["location"] == status_url
    assert status_url.startswith(f"{JOB_BASE}{START}/{started['body']['jobId']}/")
    assert running["path"] == report["path"] == urlsplit(status_url).path
    assert running["headers"]["location"] == status_url
    assert running["body"]["jobId"] == report["body"]["jobId"] == started["body"]["jobId"]
    assert (running["status"], report["status"]) == (202, 200)
    assert report["body"]["status"] == "done"
    cancelled = stored("job_cancelled")
    assert cancelled["path"] == f"{START}/{cancelled['body']['jobId']}"
    assert cancelled["body"]["status"] == "cancelled"
    assert stored("job_idempotency_conflict")["status"] == 409
    assert stored("job_not_found")["status"] == 404


@pytest.fixture
def storage() -> Iterator[Azurite]:
    """An Azurite of this test's own: no job of another test is worked meanwhile."""
    ensure_installed()
    with Azurite() as started:
        yield started


def keyed(**headers: str) -> dict[str, str]:
    return {"x-functions-key": JOB_KEY, **headers}


def follow(stack: Stack, path: str) -> httpx.Response:
    """Read the status URL, without a key, until it is no longer 202."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        answer = stack.client.get(path)
        if answer.status_code != 202:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"the job did not end within {WAIT_SECONDS} s: {answer.text}")


def job_answers(stack: Stack, graph: GraphEmulator) -> dict[str, dict[str, Any]]:
    """Each job fixture's answer, as the running function gives it now."""
    for device_id, serial, user in JOB_DEVICES:
        graph.add_device(device_id, serial, user)
    (d1, _, _), (d2, _, _), (_, s3, u3), (d4, _, _) = JOB_DEVICES[:4]
    body = {
        "devices": [
            {"deviceId": d1},
            {"serialNumber": "PF3ABC12"},  # no user: alreadyUnassigned
            {"deviceId": d2, "expectedUserPrincipalName": "someone.else@contoso.example"},
            {"serialNumber": s3, "expectedUserPrincipalName": u3},
            {"deviceId": "not-a-device-id"},  # its own 400 result; the others go ahead
            {"deviceId": d4},
        ],
        "ticketId": JOB_TICKET,
    }
    headers = keyed(**{"X-Correlation-Id": JOB_TICKET, "Idempotency-Key": JOB_IDEMPOTENCY_KEY})
    answers: dict[str, dict[str, Any]] = {}
    started = stack.post(START, json=body, headers=headers)
    answers["job_started"] = recorded("POST", START, started)
    status_path = urlsplit(started.headers["location"]).path
    answers["job_running"] = recorded("GET", status_path, stack.client.get(status_path))
    answers["job_report"] = recorded("GET", status_path, follow(stack, status_path))
    other = {"devices": [{"deviceId": DEMO_UNASSIGNED_ID}], "ticketId": JOB_TICKET}
    conflict = stack.post(START, json=other, headers=headers)
    answers["job_idempotency_conflict"] = recorded("POST", START, conflict)
    unknown = f"{START}/{uuid.uuid4().hex}/{'A' * 32}"
    answers["job_not_found"] = recorded("GET", unknown, stack.client.get(unknown))
    second = {"devices": [{"deviceId": device_id} for device_id, _, _ in JOB_DEVICES[4:]]}
    job_id = stack.post(START, json=second, headers=keyed()).json()["jobId"]
    cancel = f"{START}/{job_id}"
    answers["job_cancelled"] = recorded(
        "DELETE", cancel, stack.client.delete(cancel, headers=keyed())
    )
    return answers


def test_the_running_function_still_gives_the_stored_job_answers(
    storage: Azurite, fresh_stack: Callable[..., Stack], graph: GraphEmulator
) -> None:
    # Azurite first: it is set up before the dev host and stopped after it.
    stack = fresh_stack(
        "--function-key",
        JOB_KEY,
        AzureWebJobsStorage=storage.connection_string,
        JOB_PUBLIC_BASE_URL=JOB_BASE,
        **JOB_SETTINGS,
    )
    answers = job_answers(stack, graph)
    assert list(answers) == list(JOB_FIXTURES)
    assert {name: shape(answer) for name, answer in answers.items()} == {
        name: shape(stored(name)) for name in JOB_FIXTURES
    }
