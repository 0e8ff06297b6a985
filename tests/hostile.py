"""What an attacker sends: strategies for property tests and a seeded generator for socket tests."""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import strategies as st

GUID = "3f6d9a2e-1c4b-4e8f-9a7d-5b2c8e1f0a31"
FRAGMENTS = [
    "../",
    "..\\",
    "..%2f",
    "%2e%2e%2f",
    "%252e%252e%252f",
    "/unassignUserFromDevice",
    "?$filter=true",
    "#frag",
    "$batch",
    "\r\n",
    '\r\nINFO autopilot.audit {"forged": true}',
    "\x00",
    "\x1b[31m",
    "\u2028",
    "\u202e",
    "' or 1 eq 1 or '",
    "') or contains(serialNumber,'",
    "%0d%0aSet-Cookie: a=b",
    "${jndi:ldap://x}",
    "<script>alert(1)</script>",
    "{" + GUID + "}}",
    GUID + "\x0b",
    "{" + GUID.upper(),
    "00000000-0000-0000-0000-000000000000",
    "",
    " ",
]
# Lone UTF-16 surrogates: valid JSON escapes, but not text; they cannot be encoded as UTF-8.
SURROGATES = ["\ud800", "\udfff", "a\ud83d", "\ude00" + GUID, "INC\udc80"]
# User principal names are ASCII: each of these differs from an ASCII name only by Unicode rules.
NON_ASCII_UPNS = [
    "straße@contoso.example",
    "\u017ftrasse@contoso.example",
    "alex@contoso.example\u200b",
    "\u0430lex@contoso.example",  # a Cyrillic a
    "ALEX@CONTOSO.EXAMPLE\u0130",
]
FIELDS = ["deviceId", "serialNumber", "ticketId", "expectedUserPrincipalName", "dryRun"]
CONTENT_TYPES = [
    None,
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/json; charset=utf-16",
    "\r\n",
]

hostile_text = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.lists(st.sampled_from(FRAGMENTS), min_size=2, max_size=4).map("".join),
    st.text(alphabet=st.characters(max_codepoint=0x40, exclude_characters="-"), max_size=20),
    st.text(min_size=129, max_size=300),
)
wrong_types: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.just(GUID), max_size=2),
    st.dictionaries(st.sampled_from(["id", "$ref"]), st.just(GUID), max_size=2),
)


def _invalid_for(field: str) -> st.SearchStrategy[Any]:
    """Values that must never pass validation for `field` (strings and wrong types)."""
    if field == "dryRun":
        return st.one_of(st.sampled_from(["true", "false", "1", "yes"]), st.integers(), st.none())
    if field == "expectedUserPrincipalName":
        return st.one_of(
            hostile_text.filter(lambda v: "@" not in v),
            wrong_types,
            st.sampled_from(NON_ASCII_UPNS + [s + "@contoso.example" for s in SURROGATES]),
        )
    if field == "serialNumber":  # a printable serial is legitimate; these are not
        return st.one_of(
            st.sampled_from(["", "ab", "x\r\ny", "tab\there", "nul\x00byte", "\u2028abcd"]),
            st.text(min_size=129, max_size=200),
            wrong_types.filter(lambda v: not isinstance(v, str)),
        )
    return st.one_of(hostile_text, wrong_types, st.sampled_from(SURROGATES))


def _with_one_invalid(bad: str) -> st.SearchStrategy[dict[str, Any]]:
    valid = {"deviceId": st.just(GUID), "ticketId": st.just("INC1")}
    optional = {name: value for name, value in valid.items() if name != bad}
    return st.fixed_dictionaries({bad: _invalid_for(bad)}, optional=optional)


hostile_bodies: st.SearchStrategy[dict[str, Any]] = st.sampled_from(FIELDS).flatmap(
    _with_one_invalid
)


def raw_bodies() -> st.SearchStrategy[bytes]:
    return st.one_of(
        hostile_bodies.map(lambda d: json.dumps(d).encode()),
        st.just(b'{"deviceId": "' + GUID.encode() + b'", "deviceId": "' + GUID.encode() + b'"}'),
        st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(min_value=1, max_value=5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
        st.binary(min_size=1, max_size=64).map(lambda b: b"\xff\xfe" + b),
        st.just(b"\xef\xbb\xbf" + json.dumps({"deviceId": GUID}).encode()),  # a byte-order mark
        st.just(b"x" * 70_000),
        st.sampled_from([b"null", b"[]", b'"' + GUID.encode() + b'"', b"1e999", b"{", b"{}"]),
        st.dictionaries(
            st.sampled_from(["deviceID", "DeviceId", "device_id", "id"]), st.just(GUID), min_size=1
        ).map(lambda d: json.dumps(d).encode()),
    )


def socket_cases(count: int, seed: int = 20261129) -> list[dict[str, Any]]:
    """`count` hostile HTTP requests, the same ones on every run."""
    rng = random.Random(seed)
    cases: list[dict[str, Any]] = []
    while len(cases) < count:
        kind = rng.choice(["route", "body", "bulk", "status", "header", "query", "surrogate"])
        fragment = rng.choice(FRAGMENTS[:-2]) + rng.choice(FRAGMENTS)
        field = rng.choice(FIELDS)
        if kind == "route":
            # Everything but letters and digits percent-encoded, so no client normalises it away.
            encoded = "".join(
                chr(b) if chr(b).isalnum() else f"%{b:02X}" for b in fragment.encode()
            )
            cases.append({"method": "POST", "path": f"/api/UnassignUser/{encoded}x"})
        elif kind == "body":
            value: Any = fragment if field != "dryRun" else rng.choice(["true", 1, None])
            if field == "serialNumber":
                value = rng.choice(["ab", "x\r\nyz", "nul\x00byte", "a" * 200])
            cases.append({"method": "POST", "path": "/api/UnassignUser", "json": {field: value}})
        elif kind == "bulk":
            item = {field: fragment} if field != "dryRun" else {"deviceId": GUID, "dryRun": True}
            cases.append(
                {
                    "method": "POST",
                    "path": "/api/BulkUnassignUser",
                    "json": {"devices": [item] * rng.randint(1, 3), "dryRun": "true"},
                }
            )
        elif kind == "query":
            # Options in the URL of a POST would be silently ignored: a dry run that writes.
            name = rng.choice(["dryRun", "expectedUserPrincipalName", "deviceId", "x y", "é"])
            path = rng.choice(["/api/UnassignUser", "/api/BulkUnassignUser"])
            body = (
                {"deviceId": GUID} if path.endswith("User") else {"devices": [{"deviceId": GUID}]}
            )
            cases.append({"method": "POST", "path": path, "json": body, "params": {name: "true"}})
        elif kind == "surrogate":
            field = rng.choice(["ticketId", "expectedUserPrincipalName", "serialNumber"])
            odd = rng.choice(SURROGATES)
            if field == "expectedUserPrincipalName":
                odd = rng.choice([odd, "alex\udc00@contoso.example", "\ud800@contoso.example"])
            doc = {field: odd} | ({} if field == "serialNumber" else {"deviceId": GUID})
            # json.dumps writes a lone surrogate as its \uXXXX escape: valid JSON, not text.
            cases.append(
                {
                    "method": "POST",
                    "path": "/api/UnassignUser",
                    "content": json.dumps(doc).encode(),
                    "headers": {"Content-Type": "application/json"},
                }
            )
        elif kind == "status":
            cases.append(
                {
                    "method": "GET",
                    "path": "/api/UnassignUser",
                    "params": {"serialNumber": rng.choice(["ab", "x\r\ny", "a" * 300])},
                }
            )
        else:
            cases.append(
                {
                    "method": "POST",
                    "path": "/api/UnassignUser",
                    "content": json.dumps({"deviceId": fragment}).encode(),
                    "headers": {
                        "Content-Type": rng.choice(
                            [c for c in CONTENT_TYPES if c and "\r" not in c]
                        )
                    },
                }
            )
    return cases
