"""Who may call: an Entra ID access token with our app role, on top of the function key.

Off unless CALLER_TENANT_ID is set. Once set, it fails closed: incomplete or invalid settings make
every request a 500 naming the setting, and unreachable signing keys make it a 503, never a pass.

    token ─▶ header: RS256 with a kid ─▶ key from the tenant's JWKS (cached; an unknown kid
    refreshes at most once per REFRESH_INTERVAL, one fetch at a time) ─▶ signature, exp/nbf
    (small leeway), aud, iss (v1 or v2 form for the tenant), tid ─▶ roles holds CALLER_ROLE

PyJWT (with cryptography, some 100 ms to import) is loaded only when tokens are checked, so
deployments on function keys alone do not pay for it at cold start.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx

from shared.problems import Failure, Problem
from shared.settings import GUID, is_loopback

if TYPE_CHECKING:
    import jwt

DEFAULT_ROLE = "Autopilot.UnassignUser"
DEFAULT_AUTHORITY = "login.microsoftonline.com"
# v1 tokens name the tenant on the cloud's STS host, not on the authority host.
V1_ISSUER_HOSTS = {
    "login.microsoftonline.com": "sts.windows.net",
    "login.microsoftonline.us": "login.microsoftonline.us",
    "login.chinacloudapi.cn": "sts.chinacloudapi.cn",
}
LEEWAY_SECONDS = 120
REFRESH_INTERVAL_SECONDS = 300.0
RETRY_WITHOUT_KEYS_SECONDS = 10.0
KEYS_MAX_AGE_SECONDS = 24 * 3600.0
FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1024 * 1024
MAX_TOKEN_CHARS = 16 * 1024


class CallerSettings(NamedTuple):
    """The CALLER_* settings, validated: which Entra ID tokens callers must present."""

    tenant_id: str
    audiences: tuple[str, ...]
    role: str
    jwks_url: str
    issuers: tuple[str, ...]


class Caller(NamedTuple):
    """Who called, for the audit record: never the token itself."""

    kind: str
    app_id: str | None = None
    object_id: str | None = None
    user: str | None = None
    tenant_id: str | None = None
    missing_role: str | None = None  # set when the token is valid but lacks the app role

    def require_role(self) -> None:
        if self.missing_role is not None:
            raise Problem(
                Failure.CALLER_FORBIDDEN,
                f"The access token is valid but does not carry the app role {self.missing_role}.",
            )

    def audit(self) -> dict[str, str]:
        fields = {
            "kind": self.kind,
            "appId": self.app_id,
            "objectId": self.object_id,
            "user": self.user,
            "tenantId": self.tenant_id,
        }
        return {key: value for key, value in fields.items() if value}


FUNCTION_KEY = Caller(kind="functionKey")


def _bad(name: str, why: str) -> Problem:
    """A 500 naming the setting and what is wrong, never its value (it may be an internal URL)."""
    return Problem(Failure.CONFIGURATION, f"App setting {name} is invalid: {why}.")


def _authority(env: Mapping[str, str]) -> str:
    raw = env.get("AZURE_AUTHORITY_HOST", "").strip() or DEFAULT_AUTHORITY
    host = raw.removeprefix("https://").rstrip("/")
    if not host or "/" in host or ":" in host or raw.startswith("http://"):
        raise _bad(
            "AZURE_AUTHORITY_HOST", "must be an authority host such as login.microsoftonline.com"
        )
    return host


def _jwks_url(env: Mapping[str, str], default: str) -> str:
    raw = env.get("CALLER_JWKS_URL", "").strip()
    if not raw:
        return default
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL:
        raise _bad("CALLER_JWKS_URL", "not a URL") from None
    if (url.scheme == "https" and url.host) or (url.scheme == "http" and is_loopback(url.host)):
        return raw
    raise _bad("CALLER_JWKS_URL", "must be an https URL (plain http only for loopback)")


def load_caller_settings(env: Mapping[str, str]) -> CallerSettings | None:
    """None when CALLER_TENANT_ID is unset (keys only); else complete settings or a 500."""
    raw_tenant = env.get("CALLER_TENANT_ID", "")
    tenant = raw_tenant.strip()
    if not raw_tenant:
        for name in ("CALLER_AUDIENCE", "CALLER_JWKS_URL"):
            if env.get(name, "").strip():
                # Half a configuration must not quietly mean "keys only": fail closed.
                raise _bad("CALLER_TENANT_ID", f"is required because {name} is set")
        return None
    if not GUID.fullmatch(tenant):
        raise _bad("CALLER_TENANT_ID", "must be the tenant id (a GUID)")
    tenant = tenant.lower()
    raw_audience = env.get("CALLER_AUDIENCE", "")
    audiences = tuple(a.strip() for a in raw_audience.split(",") if a.strip())
    if not audiences or any(" " in a for a in audiences):
        raise _bad(
            "CALLER_AUDIENCE",
            "must list the API's client id and/or App ID URI, comma-separated, when CALLER_TENANT_ID is set",
        )
    role = env.get("CALLER_ROLE", "").strip() or DEFAULT_ROLE
    if any(ch.isspace() for ch in role):
        raise _bad("CALLER_ROLE", "must be an app role value without spaces")
    authority = _authority(env)
    v1_host = V1_ISSUER_HOSTS.get(authority, authority)
    return CallerSettings(
        tenant_id=tenant,
        audiences=audiences,
        role=role,
        jwks_url=_jwks_url(env, f"https://{authority}/{tenant}/discovery/v2.0/keys"),
        issuers=(f"https://{authority}/{tenant}/v2.0", f"https://{v1_host}/{tenant}/"),
    )


def unauthenticated(detail: str = "Send an Entra ID access token for this API.") -> Problem:
    return Problem(Failure.CALLER_UNAUTHENTICATED, detail)


_FAILED = "could not be fetched"
_LATE = "did not arrive in the time this request has left"


def _keys_unavailable(why: str) -> Problem:
    return Problem(
        Failure.SIGNING_KEYS_UNAVAILABLE,
        f"Entra ID's signing keys {why}, so the token cannot be checked; try again shortly.",
        retry_after=RETRY_WITHOUT_KEYS_SECONDS,
    )


class SigningKeys:
    """The tenant's signing keys by kid, fetched on demand and never more often than allowed."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._inflight: asyncio.Future[None] | None = None
        self._failed = False
        self.fetches = 0

    async def key(self, kid: str, *, budget: float | None = None) -> jwt.PyJWK:
        """The key for `kid`, waiting for a fetch at most `budget` seconds (None: no own limit).

        The fetch is shared by all callers and bounded by FETCH_TIMEOUT_SECONDS on its own; a
        caller whose request has less time left than that stops waiting when its time is up (a
        503 to retry) and leaves the fetch running for the others. Keys already held for `kid`
        are used whenever a fresh copy cannot be waited for.
        """
        now = self._clock()
        if kid in self._keys and now - self._fetched_at <= KEYS_MAX_AGE_SECONDS:
            return self._keys[kid]
        start = self._inflight is None and self._due(now)
        if budget is not None and budget <= 0 and (start or self._inflight is not None):
            return self._held(kid, _keys_unavailable(_LATE))  # and nothing new is started
        if start:
            self._attempted_at = now
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._settled)
        inflight = self._inflight
        if inflight is not None:
            try:
                await asyncio.wait_for(asyncio.shield(inflight), budget)
            except TimeoutError:
                return self._held(kid, _keys_unavailable(_LATE))
            except Problem:
                pass  # judged below: known keys still verify, unknown ones cannot be trusted
        if self._failed:
            return self._held(kid, _keys_unavailable(_FAILED))
        return self._held(
            kid, unauthenticated("The access token was not signed by a current key of the tenant.")
        )

    def _held(self, kid: str, otherwise: Problem) -> jwt.PyJWK:
        if kid in self._keys:
            return self._keys[kid]
        raise otherwise

    def _settled(self, inflight: asyncio.Future[None]) -> None:
        if self._inflight is inflight:
            self._inflight = None
        if not inflight.cancelled():
            inflight.exception()  # marked as seen: every waiter may have stopped waiting already

    def _due(self, now: float) -> bool:
        """Callers sending unknown kids must not make us hammer the key endpoint."""
        wait = REFRESH_INTERVAL_SECONDS if self._keys else RETRY_WITHOUT_KEYS_SECONDS
        return now - self._attempted_at >= wait

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            # A whole-fetch bound: httpx's timeout is per read, and a trickling endpoint must
            # not hold every caller with an unknown kid.
            async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client:
                    response = await client.get(self._url)
            response.raise_for_status()
            if len(response.content) > MAX_JWKS_BYTES:
                raise ValueError("the signing-key document is too large")
            keys = _signing_keys(response.json())
        except (httpx.HTTPError, ValueError, TimeoutError) as exc:
            self._failed = True  # the keys we have (if any) stay: they are still the tenant's
            raise Problem(
                Failure.SIGNING_KEYS_UNAVAILABLE, "fetching the signing keys failed"
            ) from exc
        self._keys = keys
        self._fetched_at = self._clock()
        self._failed = False


def _signing_keys(document: Any) -> dict[str, jwt.PyJWK]:
    """The RSA signing keys of a JWKS document; ValueError when it holds none."""
    import jwt

    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a signing-key document")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in entries:
        if (
            not isinstance(entry, dict)
            or entry.get("kty") != "RSA"
            or entry.get("use", "sig") != "sig"
        ):
            continue
        try:
            keys[str(entry["kid"])] = jwt.PyJWK(entry, algorithm="RS256")
        except (KeyError, jwt.PyJWTError):
            continue
    if not keys:
        raise ValueError("the signing-key document holds no RSA signing key")
    return keys


class CallerAuth:
    def __init__(self, settings: CallerSettings, keys: SigningKeys | None = None) -> None:
        self.settings = settings
        self.keys = keys or SigningKeys(settings.jwks_url)

    async def authorize(self, headers: Mapping[str, str], *, budget: float | None = None) -> Caller:
        """The caller of a valid token; `missing_role` says when it may not call (403).

        `budget` is the seconds the request has left: a signing-key fetch is waited for no
        longer (see SigningKeys.key). None leaves only the fetch's own bound.
        """
        claims = await self._claims(self._bearer(headers), budget)
        roles = claims.get("roles")
        allowed = isinstance(roles, list) and self.settings.role in roles
        return self._caller(claims, None if allowed else self.settings.role)

    @staticmethod
    def _bearer(headers: Mapping[str, str]) -> str:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_CHARS:
            raise unauthenticated()
        if not token.isascii():  # a JWT is base64url and dots; anything else is not one
            raise unauthenticated("The access token is not a valid JWT.")
        return token

    async def _claims(self, token: str, budget: float | None) -> dict[str, Any]:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthenticated("The access token is not a valid JWT.") from None
        kid = header.get("kid")
        if header.get("alg") != "RS256" or not isinstance(kid, str):
            raise unauthenticated("The access token must be signed with RS256 by Entra ID.")
        key = await self.keys.key(kid, budget=budget)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=["RS256"],
                audience=list(self.settings.audiences),
                issuer=self.settings.issuers,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "tid"]},
            )
        except jwt.PyJWTError as exc:
            raise unauthenticated(f"The access token was refused: {_reason(exc)}.") from None
        if str(claims.get("tid", "")).lower() != self.settings.tenant_id:
            raise unauthenticated("The access token was refused: it is for another tenant.")
        return claims

    @staticmethod
    def _caller(claims: dict[str, Any], missing_role: str | None) -> Caller:
        def text(*names: str) -> str | None:
            for name in names:
                value = claims.get(name)
                if isinstance(value, str) and value:
                    return value[:256]
            return None

        user_token = claims.get("idtyp") == "user" or "scp" in claims
        return Caller(
            kind="entraToken",
            app_id=text("azp", "appid"),
            object_id=text("oid"),
            user=text("upn", "preferred_username") if user_token else None,
            tenant_id=text("tid"),
            missing_role=missing_role,
        )


def _reason(exc: jwt.PyJWTError) -> str:
    """A reason a client can act on, without echoing anything from the token."""
    import jwt

    reasons: list[tuple[type[jwt.PyJWTError], str]] = [
        (jwt.ExpiredSignatureError, "it has expired"),
        (jwt.ImmatureSignatureError, "it is not valid yet"),
        (jwt.InvalidAudienceError, "it is for another audience"),
        (jwt.InvalidIssuerError, "it is from another issuer"),
        (jwt.MissingRequiredClaimError, "a required claim is missing"),
        (jwt.InvalidSignatureError, "its signature does not verify"),
    ]
    for kind, reason in reasons:
        if isinstance(exc, kind):
            return reason
    return "it could not be verified"
