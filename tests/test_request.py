"""The edge: which device ids, tickets and bodies get through, and that nothing else does."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.problems import Failure, Problem
from shared.request import (
    MAX_BODY_BYTES,
    check_content_type,
    correlation_id,
    known_fields,
    normalise_device_id,
    parse_body,
    parse_unassign,
    printable_echo,
    same_user,
    user_key,
)

GUID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
CANARY = "canary-7f3a9c"
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


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ({"deviceId": GUID}, "POST /UnassignUser/ takes serialNumber only"),
        ({"deviceId": GUID, "serialNumber": "5CG1234XYZ"}, "takes serialNumber only"),
        ({}, "Give serialNumber."),
        ({"ticketId": "INC1"}, "Give serialNumber."),
    ],
)
def test_serial_only_takes_the_serial_number_alone(data: dict[str, str], detail: str) -> None:
    body = json.dumps(data).encode()
    with pytest.raises(Problem) as caught:
        parse_unassign(body, None, None, serial_only=True)
    assert caught.value.status == 400 and detail in caught.value.detail
    if "serialNumber" not in data and "deviceId" in data:
        assert parse_unassign(body, None, None).device_id == GUID  # taken without serial_only


def test_serial_only_reads_the_serial_number_and_the_options() -> None:
    body = b'{"serialNumber": " 5cg1234xyz ", "ticketId": "INC1", "dryRun": true}'
    request = parse_unassign(body, None, "application/json", serial_only=True)
    assert (request.serial_number, request.device_id) == ("5cg1234xyz", None)
    assert request.ticket_id == "INC1" and request.dry_run is True


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


def answer(problem: Problem) -> str:
    """Everything the caller would read: the whole problem document."""
    return json.dumps(problem.body("corr-1"), ensure_ascii=False)


def test_a_refused_media_type_is_not_echoed() -> None:
    with pytest.raises(Problem) as caught:
        check_content_type(f"application/vnd.{CANARY}; charset=utf-8")
    assert caught.value.status == 415
    assert CANARY not in answer(caught.value)
    assert "application/json" in caught.value.detail
    # Positive control: the same canary sent as a (plain) unknown field name is named back.
    assert CANARY in answer(rejected(json.dumps({"deviceId": GUID, CANARY: 1}).encode()))


def test_unknown_fields_that_are_not_plain_names_are_counted_not_echoed() -> None:
    body = {"deviceId": GUID, "a b": 1, f"<{CANARY}>": 2, "x" * 65: 3, "foo": 4}
    problem = rejected(json.dumps(body).encode())
    assert "Unknown fields 'foo' and 3 more;" in problem.detail
    assert CANARY not in answer(problem) and "a b" not in problem.detail
    assert "x" * 65 not in problem.detail
    # Positive control: a plain name of the same canary is echoed.
    assert CANARY in rejected(json.dumps({"deviceId": GUID, CANARY: 1}).encode()).detail


def test_a_single_unknown_field_that_is_not_plain_is_described() -> None:
    problem = rejected(json.dumps({"deviceId": GUID, f"{CANARY} x": 1}).encode())
    assert problem.detail.startswith("An unexpected field;")
    assert CANARY not in problem.detail


def test_unknown_fields_in_a_devices_entry_are_capped_and_say_where() -> None:
    entry = {f"f{i}": 1 for i in range(7)} | {"\x00": 1}
    with pytest.raises(Problem) as caught:
        known_fields(entry, ("deviceId", "serialNumber"), " in a devices entry")
    detail = caught.value.detail
    assert "Unknown fields 'f0', 'f1', 'f2', 'f3', 'f4' and 3 more in a devices entry;" in detail
    assert "the allowed fields are deviceId, serialNumber." in detail


def test_a_duplicated_field_is_named_only_when_plain() -> None:
    plain = rejected(b'{"deviceId": "a", "deviceId": "b"}')
    assert "'deviceId' more than once" in plain.detail
    odd = f'{{"{CANARY} x": 1, "{CANARY} x": 2}}'.encode()
    problem = rejected(odd)
    assert "a field more than once" in problem.detail
    assert CANARY not in answer(problem)
    # Positive control: the plain form of the same name is echoed.
    assert CANARY in rejected(f'{{"{CANARY}": 1, "{CANARY}": 2}}'.encode()).detail


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b'{"deviceId": "' + GUID.encode() + b'", "ticketId": "\\ud800"}', "ticketId"),
        (b'{"ticketId": "INC\\udfff1"}', "ticketId"),
        (b'{"expectedUserPrincipalName": "a\\udc00@contoso.com"}', "expectedUserPrincipalName"),
        (b'{"deviceID": {"deep": ["ok", {"k": "\\ud83d"}]}}', "deviceID"),
        (b'{"\\ud800": 1}', "A field"),
        (b'{"x\\ud800 y": "v"}', "A field"),
    ],
)
def test_a_lone_surrogate_anywhere_is_refused_naming_only_the_top_field(
    body: bytes, named: str
) -> None:
    problem = rejected(body)
    assert problem.status == 400
    assert problem.detail.startswith(f"{named} holds a lone UTF-16 surrogate")
    assert "nothing was changed" in problem.detail
    answer(problem).encode("utf-8")  # the answer itself is text


def test_a_lone_surrogate_in_a_bulk_entry_or_its_key_is_refused() -> None:
    fields = ("devices", "ticketId", "dryRun")
    for body in (b'{"devices": [{"deviceId": "x\\udbff"}]}', b'{"devices": [{"\\udc00": 1}]}'):
        with pytest.raises(Problem) as caught:
            parse_body(body, fields)
        assert caught.value.detail.startswith("devices holds a lone UTF-16 surrogate")
    # Positive control: a proper surrogate pair is one character (an emoji), and passes.
    data = parse_body(b'{"devices": [{"deviceId": "x\\ud83d\\ude00"}]}', fields)
    assert data["devices"][0]["deviceId"] == "x\U0001f600"


def test_a_lone_surrogate_deep_down_is_found_without_recursion() -> None:
    depth = 500
    body = b'{"devices": ' + b"[" * depth + b'"\\ud800"' + b"]" * depth + b"}"
    with pytest.raises(Problem) as caught:
        parse_body(body, ("devices",))
    assert "surrogate" in caught.value.detail
    clean = body.replace(b"\\ud800", b"ok")
    assert isinstance(parse_body(clean, ("devices",))["devices"], list)


surrogate_text = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), min_size=1
)


@given(
    st.recursive(
        st.none() | st.integers() | st.booleans() | surrogate_text,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(surrogate_text, inner, max_size=3)
        ),
        max_leaves=8,
    )
)
def test_printable_echo_always_gives_utf8_text(value: Any) -> None:
    echoed = printable_echo(value)
    json.dumps(echoed, ensure_ascii=False).encode("utf-8")
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return
    assert echoed == value  # text already is left as it is


def test_printable_echo_replaces_lone_surrogates_in_keys_and_values() -> None:
    value: dict[str, Any] = {
        "a\ud800": ["x\udfff", {"k": "\ud83d", "ok": "\U0001f600"}],
        "n": 1.5,
        "b": None,
    }
    echoed = printable_echo(value)
    assert echoed == {
        "a\ufffd": ["x\ufffd", {"k": "\ufffd", "ok": "\U0001f600"}],
        "n": 1.5,
        "b": None,
    }
    json.dumps(echoed, ensure_ascii=False).encode("utf-8")
    # Positive control: the same encoding fails on the value as sent.
    with pytest.raises(UnicodeEncodeError):
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    assert value["a\ud800"][0] == "x\udfff"  # a copy: the input is untouched


def test_printable_echo_never_raises_on_odd_values() -> None:
    deep: list[Any] = []
    bottom = deep
    for _ in range(100_000):
        bottom.append([])
        bottom = bottom[0]
    bottom.append("\ud800")
    echoed = printable_echo(deep)
    for _ in range(100_000):
        echoed = echoed[0]
    assert echoed == ["\ufffd"]
    loop: list[Any] = ["\ud800"]
    loop.append(loop)
    copied = printable_echo(loop)
    assert copied[0] == "\ufffd" and copied[1] is copied
    marker = object()
    assert printable_echo({(1, 2): marker, 3: ("\udc00",)}) == {(1, 2): marker, 3: ["\ufffd"]}


@pytest.mark.parametrize(
    "upn",
    ["straße@contoso.com", "\uff41lex@contoso.com", "alex@contoso.com\u00a0", "\u017ftrasse@x.com"],
)
def test_a_non_ascii_expected_user_is_refused_without_echo(upn: str) -> None:
    problem = rejected(json.dumps({"deviceId": GUID, "expectedUserPrincipalName": upn}).encode())
    assert problem.status == 400
    assert "ASCII" in problem.detail and "expectedUserPrincipalName" in problem.detail
    assert upn.strip() not in answer(problem)


def test_an_ascii_expected_user_is_kept_as_sent() -> None:
    body = json.dumps({"deviceId": GUID, "expectedUserPrincipalName": " Alex@Contoso.com\t"})
    assert parse_unassign(body.encode(), None, None).expected_upn == "Alex@Contoso.com"


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Alex@Contoso.com", "alex@contoso.com", True),
        ("ALEX@CONTOSO.COM", "alex@contoso.com", True),
        ("straße@x", "STRASSE@x", False),
        ("straße@x", "strasse@x", False),
        ("\u017ftrasse@x", "strasse@x", False),  # a long s
        ("\u212aim@x", "kim@x", False),  # the Kelvin sign
        ("İ@x", "i@x", False),
        ("alex@contoso.com", "alex@contoso.co", False),
    ],
)
def test_same_user_ignores_ascii_case_only(a: str, b: str, same: bool) -> None:
    assert same_user(a, b) is same
    assert same_user(b, a) is same


def test_user_key_lowers_ascii_letters_and_nothing_else() -> None:
    assert user_key("Alex.O-Neil_2@Contoso.COM") == "alex.o-neil_2@contoso.com"
    assert user_key("STRAßE@X") == "straße@x"
    assert user_key("ÄİK\u212a") == "Äİk\u212a"  # the Kelvin sign is not an ASCII K


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1" + "0" * 400 + ".5"])
def test_a_number_too_large_for_a_float_is_refused_not_read_as_infinity(number: str) -> None:
    body = ('{"devices": [{"deviceId": ' + number + "}]}").encode()
    with pytest.raises(Problem) as caught:
        parse_body(body, ("devices",))
    assert caught.value.status == 400 and "too large" in caught.value.detail
    # Positive control: an ordinary number reaches the field checks, which judge it.
    assert parse_body(b'{"devices": [{"deviceId": 1.5}]}', ("devices",)) == {
        "devices": [{"deviceId": 1.5}]
    }
