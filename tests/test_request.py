"""The edge: which device ids, tickets and bodies get through, and that nothing else does."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.problems import Failure, Problem
from shared.request import (
    MAX_BODY_BYTES,
    correlation_id,
    normalise_device_id,
    parse_body,
    parse_unassign,
)

GUID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def rejected(body: bytes, route: str | None = None, content_type: str | None = None) -> Problem:
    with pytest.raises(Problem) as caught:
        parse_unassign(body, route, content_type)
    return caught.value


@pytest.mark.parametrize(
    "form",
    [GUID, GUID.upper(), "{" + GUID + "}", "  {" + GUID.upper() + "}\t", "\r\n" + GUID + " \n"],
)
def test_accepted_id_forms_normalise_to_lower_case(form: str) -> None:
    assert normalise_device_id(form, "deviceId") == GUID


@pytest.mark.parametrize(
    "form",
    [
        "",
        "   ",
        "00000000-0000-0000-0000-000000000000",
        "{00000000-0000-0000-0000-000000000000}",
        GUID.replace("-", ""),
        "{" + GUID,
        GUID + "}",
        "{{" + GUID + "}}",
        "(" + GUID + ")",
        "urn:uuid:" + GUID,
        "%7B" + GUID + "%7D",
        "%66ac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa",
        "../" + GUID,
        GUID + "/../x",
        GUID + "/unassignUserFromDevice",
        GUID + "?$select=id",
        GUID + "#",
        "$" + GUID,
        GUID + "\x00",
        GUID[:8] + "\t" + GUID[8:],
        GUID.replace("1", "\u0661"),  # an Arabic-Indic digit one
        GUID.replace("a", "\uff41"),  # a full-width a
        GUID + " " + GUID,
        "g" + GUID[1:],
    ],
)
def test_rejected_id_forms(form: str) -> None:
    with pytest.raises(Problem) as caught:
        normalise_device_id(form, "deviceId")
    assert caught.value.failure is Failure.INVALID_REQUEST
    assert "deviceId" in caught.value.detail


@pytest.mark.parametrize("value", [None, 42, 1.5, True, [GUID], {"id": GUID}])
def test_non_string_ids_are_rejected(value: object) -> None:
    problem = rejected(json.dumps({"deviceId": value}).encode())
    assert problem.status == 400
    assert "string" in problem.detail


@given(st.text())
@example("\u0660" * 8 + "-0000-0000-0000-000000000001")
def test_no_non_guid_ever_passes(text: str) -> None:
    try:
        value = normalise_device_id(text, "deviceId")
    except Problem as problem:
        assert problem.status == 400
        return
    assert CANONICAL.fullmatch(value)
    assert value != "00000000-0000-0000-0000-000000000000"
    bare = text.strip(" \t\r\n")
    assert bare.lower() in (value, "{" + value + "}")


@given(st.uuids())
def test_every_real_guid_passes_in_every_accepted_form(value: uuid.UUID) -> None:
    text = str(value)
    for form in (text, text.upper(), "{" + text + "}", " " + text + "\n"):
        assert normalise_device_id(form, "deviceId") == text


@given(st.binary(max_size=512), st.one_of(st.none(), st.text(max_size=80)))
def test_no_input_raises_anything_but_a_problem(body: bytes, route: str | None) -> None:
    try:
        request = parse_unassign(body, route, "application/json")
    except Problem as problem:
        assert 400 <= problem.status < 500
        return
    assert (request.device_id is None) != (request.serial_number is None)
    assert request.device_id is None or CANONICAL.fullmatch(request.device_id)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    st.dictionaries(
        st.sampled_from(["deviceId", "ticketId", "expectedUserPrincipalName", "deviceID", "x"]),
        json_values,
    )
)
def test_any_json_object_gives_a_request_or_a_400(data: dict[str, object]) -> None:
    try:
        request = parse_unassign(json.dumps(data).encode(), None, None)
    except Problem as problem:
        assert problem.status == 400
        return
    assert set(data) <= {"deviceId", "ticketId", "expectedUserPrincipalName"}
    assert request.device_id is not None and CANONICAL.fullmatch(request.device_id)


def test_body_and_path_id_may_both_be_given_when_they_agree() -> None:
    body = json.dumps({"deviceId": GUID.upper(), "ticketId": "INC0012345"}).encode()
    request = parse_unassign(body, "{" + GUID + "}", "application/json; charset=utf-8")
    assert request.device_id == GUID
    assert request.ticket_id == "INC0012345"


def test_path_and_body_ids_that_differ_are_rejected() -> None:
    other = str(uuid.UUID(int=1))
    problem = rejected(json.dumps({"deviceId": other}).encode(), GUID)
    assert "differ" in problem.detail


def test_path_id_alone_needs_no_body() -> None:
    assert parse_unassign(b"", GUID, None).device_id == GUID


def test_no_id_anywhere_is_rejected() -> None:
    assert "deviceId" in rejected(b"{}").detail
    assert "deviceId" in rejected(b"").detail


def test_unknown_fields_are_named() -> None:
    problem = rejected(json.dumps({"deviceID": GUID}).encode())
    assert "'deviceID'" in problem.detail


@pytest.mark.parametrize(
    "ticket", ["", "x" * 65, "INC 1", "INC\r\n1", "INC/1", "INC?1", 12345, None, True]
)
def test_bad_ticket_ids_are_rejected(ticket: object) -> None:
    problem = rejected(json.dumps({"deviceId": GUID, "ticketId": ticket}).encode())
    assert "ticketId" in problem.detail


def test_ticket_id_allows_letters_digits_and_punctuation() -> None:
    ticket = "RITM0010001.task:2_b-3" + "x" * 42
    assert len(ticket) == 64
    body = json.dumps({"deviceId": GUID, "ticketId": ticket}).encode()
    assert parse_unassign(body, None, None).ticket_id == ticket


@pytest.mark.parametrize("upn", ["", "  ", "alex", None, 7, True, "alex@contoso.com\n\x00x"])
def test_bad_expected_user_is_rejected_not_ignored(upn: object) -> None:
    problem = rejected(json.dumps({"deviceId": GUID, "expectedUserPrincipalName": upn}).encode())
    assert "expectedUserPrincipalName" in problem.detail


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "JSON object"),
        (b'"' + GUID.encode() + b'"', "JSON object"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"deviceId": NaN}', "NaN"),
        (b'{"deviceId": "a", "deviceId": "b"}', "more than once"),
        (b"[" * 100_00 + b"]" * 100_00, "nested too deeply"),
        (b'{"deviceId": ' + b"1" * 5000 + b"}", "too large"),
    ],
)
def test_bad_bodies_are_400_with_a_reason(body: bytes, words: str) -> None:
    assert words in rejected(body[:MAX_BODY_BYTES]).detail


def test_body_over_the_limit_is_413() -> None:
    body = json.dumps({"deviceId": GUID, "ticketId": "x" * MAX_BODY_BYTES}).encode()
    assert rejected(body).status == 413
    assert parse_body(b" " * MAX_BODY_BYTES) == {}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_415(content_type: str) -> None:
    body = json.dumps({"deviceId": GUID}).encode()
    assert rejected(body, None, content_type).status == 415


def test_correlation_id_is_kept_only_when_safe() -> None:
    assert correlation_id({"x-correlation-id": "flow-run:08585.1_a"}) == "flow-run:08585.1_a"
    for unsafe in ("", "a b", "x" * 65, "id\r\nforged: 1", "ünï"):
        made = correlation_id({"x-correlation-id": unsafe})
        assert made != unsafe
        assert uuid.UUID(made)
