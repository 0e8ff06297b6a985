"""Which media type a problem is sent as, from the request's Accept header (RFC 9110 12.5.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.media import JSON, MAX_ACCEPT_LENGTH, PROBLEM_JSON, problem_media_type

CASES = [
    (None, PROBLEM_JSON),
    ("", PROBLEM_JSON),
    ("application/json", JSON),  # what the connector's setheader policy sends
    ("APPLICATION/JSON", JSON),  # media ranges are case-insensitive
    ("application/json; charset=utf-8", JSON),
    ("*/*", PROBLEM_JSON),
    ("application/*", PROBLEM_JSON),
    ("application/json, */*", JSON),  # named outright beats a wildcard of the same weight
    ("application/json, */*;q=0.8", JSON),
    ("text/plain, application/json;q=0.9", JSON),
    ("application/json, application/problem+json", PROBLEM_JSON),  # the ServiceNow include's
    ("application/problem+json, application/json", PROBLEM_JSON),
    ("application/json;q=0.5, application/problem+json", PROBLEM_JSON),
    ("application/problem+json;q=0.5, application/json", JSON),
    ("application/json, application/problem+json;q=0", JSON),
    ("application/json;q=0", PROBLEM_JSON),
    ("application/json;q=0, */*", PROBLEM_JSON),
    ("application/json;q=1.0, application/problem+json;q=0.999", JSON),
    ("application/json;Q=0.7, application/problem+json;q=0.6", JSON),
    ("application/json; q = 0, */*", PROBLEM_JSON),  # spaces around "=" (RFC 9110: a weight)
    ("application/json ; Q=0.5 , application/problem+json ; q = 0.4", JSON),
    ("application/json;q=0;q=1", PROBLEM_JSON),  # the first q is the weight
    ("application/json;level=1;q=0.5, application/problem+json;q=0.6", PROBLEM_JSON),
    ('application/json;x="a,b";q=0.1, application/problem+json;q=0.5', PROBLEM_JSON),
    ('application/json;x="a"', PROBLEM_JSON),  # a quoted string: the header is not read
    ("application/json;q=2", PROBLEM_JSON),  # a weight out of range: that range is ignored
    ("application/json;q=abc", PROBLEM_JSON),
    ("application/json;q=0.1234", PROBLEM_JSON),  # at most three decimals
    ("json", PROBLEM_JSON),
    ("text/html", PROBLEM_JSON),
]


@pytest.mark.parametrize(("accept", "expected"), CASES)
def test_the_problem_media_type(accept: str | None, expected: str) -> None:
    assert problem_media_type(accept) == expected


def test_an_overlong_header_is_not_read() -> None:
    padding = ", text/plain" * (MAX_ACCEPT_LENGTH // 12)
    assert problem_media_type("application/json" + padding[: MAX_ACCEPT_LENGTH - 16]) == JSON
    assert problem_media_type("application/json" + padding) == PROBLEM_JSON


@given(st.text(max_size=200))
def test_no_header_makes_it_fail(accept: str) -> None:
    assert problem_media_type(accept) in (JSON, PROBLEM_JSON)
