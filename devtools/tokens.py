"""Access tokens shared by the local identity and Graph emulators.

The identity emulator hands these out and the Graph emulator checks them, so code under test
sees a realistic flow: a JWT-shaped bearer token with an audience and an expiry that can be
wrong or run out. They are unsigned on purpose; nothing local is protected by them, and no real
service accepts them.
"""

from __future__ import annotations

import base64
import json
import uuid

_HEADER: dict[str, object] = {"alg": "none", "typ": "JWT"}
_SIGNATURE = "emulator"


def _encode(claims: dict[str, object]) -> str:
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def mint(audience: str, *, client_id: str, lifetime_seconds: float, now: float) -> tuple[str, int]:
    """Return an emulator token for ``audience`` and its expiry as whole epoch seconds."""
    expires_on = int(now + lifetime_seconds)
    payload: dict[str, object] = {
        "aud": audience,
        "appid": client_id,
        "iat": int(now),
        "exp": expires_on,
        "jti": uuid.uuid4().hex,
    }
    return f"{_encode(_HEADER)}.{_encode(payload)}.{_SIGNATURE}", expires_on


def read(token: str) -> dict[str, object] | None:
    """Return the claims of an emulator token, or None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or parts[2] != _SIGNATURE:
        return None
    try:
        claims = _decode(parts[1])
    except ValueError:  # bad base64, bad UTF-8 and bad JSON all derive from ValueError
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("aud"), str):
        return None
    if not all(type(claims.get(name)) is int for name in ("iat", "exp")):
        return None
    return claims
