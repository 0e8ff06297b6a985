"""The media types of our answers, and which one a problem is sent as.

Successes are `application/json`. Problems are `application/problem+json` (RFC 9457), unless the
request's `Accept` prefers `application/json`: Microsoft documents that Power Automate and Logic
Apps parse `application/json` bodies and is silent on `+json` types, so the connector asks for
`application/json` (a `setheader` policy) and gets the same problem document under that type.

`Accept` is read as RFC 9110 section 12.5.1 defines it: each media range may carry a weight `q`
from 0 to 1 (default 1); a type takes the weight of the most specific range that names it
(`type/subtype` over `type/*` over `*/*`), and weight 0 means "not acceptable". A problem is sent
as `application/json` when that type weighs more than `application/problem+json`, or as much and
it is named outright while `application/problem+json` is only covered by a wildcard. A range
whose weight is malformed is ignored; a header over 1 KiB or with a quoted parameter value is not
read (no client asking for JSON sends either), so its problems are `application/problem+json`.
"""

from __future__ import annotations

import re

JSON = "application/json; charset=utf-8"
PROBLEM_JSON = "application/problem+json; charset=utf-8"

# Beyond this many characters the header is not read at all: no client needs more.
MAX_ACCEPT_LENGTH = 1024
_WEIGHT = re.compile(r"(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)", re.ASCII)
_PLAIN, _PROBLEM = "application/json", "application/problem+json"


def _weight_of(params: list[str]) -> float | None:
    """The first `q` parameter's weight (1 without one); None when it is malformed."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            match = _WEIGHT.fullmatch(value.strip())
            return float(match[1]) if match else None
    return 1.0


def _ranges(accept: str) -> list[tuple[str, float]]:
    """(media range, weight) for each well-formed range of the header, lower-cased."""
    found = []
    for item in accept.split(","):
        media_range, *params = (part.strip() for part in item.split(";"))
        weight = _weight_of(params)
        if media_range.count("/") == 1 and weight is not None:
            found.append((media_range.lower(), weight))
    return found


def _weight(media_type: str, ranges: list[tuple[str, float]]) -> tuple[float, bool]:
    """The weight `ranges` give `media_type`, and whether a range names it outright."""
    family = media_type.split("/")[0] + "/*"
    for candidate, named in ((media_type, True), (family, False), ("*/*", False)):
        weights = [weight for media_range, weight in ranges if media_range == candidate]
        if weights:
            return max(weights), named
    return 0.0, False


def problem_media_type(accept: str | None) -> str:
    """The Content-Type for a problem answering a request with this `Accept` header."""
    if not accept or len(accept) > MAX_ACCEPT_LENGTH or '"' in accept:
        return PROBLEM_JSON  # unset, overlong, or with a quoted string (which may hold a comma)
    ranges = _ranges(accept)
    plain, plain_named = _weight(_PLAIN, ranges)
    problem, problem_named = _weight(_PROBLEM, ranges)
    if plain > problem or (plain == problem > 0 and plain_named and not problem_named):
        return JSON
    return PROBLEM_JSON
