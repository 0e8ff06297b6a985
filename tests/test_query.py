"""Query strings: a parameter we do not read is refused, named only when it is a plain name."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.problems import Failure, Problem
from shared.request import check_query, parse_lookup, plain_name

GUID = "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa"
CANARY = "CANARY-VALUE-7f3a9c"


def refused(params: dict[str, str], allowed: tuple[str, ...] = ()) -> str:
    with pytest.raises(Problem) as caught:
        check_query(params, allowed)
    assert caught.value.failure is Failure.INVALID_REQUEST
    assert caught.value.status == 400
    return caught.value.detail


@pytest.mark.parametrize("name", ["dryRun", "x", "a.b_c-d", "0", "x" * 64])
def test_plain_names_are_returned_as_they_are(name: str) -> None:
    assert plain_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 65, "a b", "dry\nRun", "dryRun\n", "<b>", "a'b", "ünï", "a/b", "a=b", "\ud800"],
)
def test_anything_else_is_not_a_plain_name(name: str) -> None:
    assert plain_name(name) is None


def test_post_refuses_a_query_parameter_and_says_where_options_go() -> None:
    detail = refused({"dryRun": CANARY})
    assert "'dryRun'" in detail
    assert "JSON body" in detail
    assert CANARY not in detail


def test_no_query_parameters_at_all_pass() -> None:
    check_query({})
    check_query({}, ("serialNumber",))


@pytest.mark.parametrize("spelling", ["code", "CODE", "Code", "cOdE"])
def test_the_hosts_function_key_is_ignored_and_never_named(spelling: str) -> None:
    check_query({spelling: CANARY})
    check_query({spelling: CANARY}, ("serialNumber",))
    detail = refused({spelling: CANARY, "x": "1"})
    assert "code" not in detail.lower() and CANARY not in detail
    # Positive control: the same probe finds a parameter that is named.
    assert "'x'" in detail


def test_only_the_ascii_spelling_of_code_is_the_hosts() -> None:
    lookalike = "c\u043ede"  # a Cyrillic o
    detail = refused({lookalike: CANARY})
    assert "unexpected query parameter" in detail
    assert lookalike not in detail and CANARY not in detail


def test_our_parameter_names_are_case_sensitive() -> None:
    check_query({"serialNumber": "5CG1234XYZ"}, ("serialNumber",))
    detail = refused({"serialnumber": "5CG1234XYZ"}, ("serialNumber",))
    assert "'serialnumber'" in detail
    assert "accepts only serialNumber" in detail


@pytest.mark.parametrize(
    "name", ["a b", "x" * 65, "<script>", "ünï", "id\r\nforged: 1", "\x00", "a'b", "\ud800"]
)
def test_a_name_that_is_not_plain_is_described_not_echoed(name: str) -> None:
    detail = refused({name: CANARY})
    assert name not in detail and CANARY not in detail
    assert "an unexpected query parameter" in detail.lower()
    # Positive control: a plain name of the largest size is echoed, so the probe would see it.
    assert "x" * 64 in refused({"x" * 64: CANARY})


def test_an_empty_name_is_described() -> None:
    assert "unexpected query parameter" in refused({"": CANARY})


def test_many_names_are_capped_at_five_and_the_rest_counted() -> None:
    params = {f"p{i}": CANARY for i in range(8)} | {"a b": CANARY, "\x01": CANARY}
    detail = refused(params)
    assert "'p0', 'p1', 'p2', 'p3', 'p4' and 5 more" in detail
    assert "'p5'" not in detail and CANARY not in detail


def test_several_unplain_names_are_counted() -> None:
    detail = refused({"a b": "1", "c d": "2", "code": "3"})
    assert detail.startswith("2 unexpected query parameters;")


def test_status_check_refuses_other_parameters_and_names_the_one_it_takes() -> None:
    with pytest.raises(Problem) as caught:
        parse_lookup(GUID, {"serialNumber": "5CG1234XYZ", "dryRun": CANARY})
    assert caught.value.status == 400
    assert "'dryRun'" in caught.value.detail and "serialNumber" in caught.value.detail
    assert CANARY not in caught.value.detail


def test_status_check_with_the_function_key_in_the_query_still_works() -> None:
    request = parse_lookup(None, {"serialNumber": "5CG1234XYZ", "code": CANARY})
    assert request.serial_number == "5CG1234XYZ"
    assert parse_lookup(GUID, {"Code": CANARY}).device_id == GUID


def test_an_empty_serial_number_is_still_refused_as_a_serial_number() -> None:
    with pytest.raises(Problem) as caught:
        parse_lookup(None, {"serialNumber": ""})
    assert caught.value.status == 400
    assert caught.value.detail.startswith("serialNumber must be")


@given(st.dictionaries(st.text(max_size=70), st.text(max_size=20), max_size=12))
def test_only_plain_names_that_were_sent_are_ever_quoted(params: dict[str, str]) -> None:
    try:
        check_query(params)
    except Problem as problem:
        quoted = re.findall(r"'([^']*)'", problem.detail)
        assert all(plain_name(name) == name for name in quoted)
        assert set(quoted) <= set(params)
        assert len(quoted) <= 5
        return
    assert all(name.isascii() and name.lower() == "code" for name in params)
