"""A stand-in for Entra ID's token signing: RSA keys, a JWKS endpoint, and tokens to order.

Tests (and anyone trying CALLER_* locally) point CALLER_JWKS_URL at `jwks_url` and send tokens
minted here. Keys are generated per instance; nothing here is a real credential.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from devtools.emulator_http import DROP, HttpEmulator, Incoming, Reply

TENANT_ID = "72f988bf-0000-4000-8000-00000000a11c"
API_CLIENT_ID = "6f1a3b5c-2d4e-4f60-8a1b-3c5d7e9f1a2b"
API_URI = "api://autopilot-unassign"
ROLE = "Autopilot.UnassignUser"


def _b64(number: int) -> str:
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, str]:
        numbers = self.private.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
        }


class EntraEmulator(HttpEmulator):
    """Serves `/{tenant}/discovery/v2.0/keys`; `down` makes it drop every connection."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self.keys = [SigningKey()]
        self.jwks_requests = 0
        self.down = False
        self.document: object | None = None  # served instead of the keys when set
        super().__init__(host=host, port=port)

    @property
    def jwks_url(self) -> str:
        return f"{self.base_url}/{TENANT_ID}/discovery/v2.0/keys"

    def rotate(self) -> SigningKey:
        """Publish a new key (the old ones stay published, as Entra ID does for a while)."""
        key = SigningKey()
        with self._lock:
            self.keys.append(key)
        return key

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """An app token for our API with the role; v2 issuer. Overrides replace or (None) drop."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": API_CLIENT_ID,
            "iss": f"https://login.microsoftonline.com/{TENANT_ID}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "tid": TENANT_ID,
            "oid": "0b5f2c1e-9d3a-4e7b-8c6f-1a2b3c4d5e6f",
            "azp": "3c2b1a09-8f7e-4d6c-5b4a-39281706f5e4",
            "idtyp": "app",
            "roles": [ROLE],
            "ver": "2.0",
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def token(
        self, key: SigningKey | None = None, headers: dict[str, Any] | None = None, **overrides: Any
    ) -> str:
        signer = key or self.keys[0]
        return jwt.encode(
            self.claims(**overrides),
            signer.private,
            algorithm="RS256",
            headers={"kid": signer.kid, **(headers or {})},
        )

    def _respond(self, incoming: Incoming) -> Reply:
        if incoming.path != f"/{TENANT_ID}/discovery/v2.0/keys":
            return Reply(404, {"error": "not_found"})
        with self._lock:
            self.jwks_requests += 1
            if self.down:
                return DROP
            if self.document is not None:
                return Reply(200, self.document)
            return Reply(200, {"keys": [key.jwk() for key in self.keys]})
