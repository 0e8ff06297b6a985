"""Tokens for Graph from the Function App's managed identity.

azure-identity's async credential needs aiohttp, a second async HTTP stack we do not want, so the
sync `ManagedIdentityCredential` runs on a worker thread. Concurrent requests share one in-flight
fetch (single-flight) and the token is reused until five minutes before it expires, so a burst
of requests costs one call to the identity endpoint. azure-identity is imported on first use: it
is the heaviest import we have and would otherwise count against every cold start.
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from shared.problems import Failure, Problem
from shared.retry import Deadline
from shared.settings import Settings
from shared.startup import loading

# azure-identity itself refreshes this early; doing the same here keeps fetches off the hot path.
REFRESH_MARGIN_SECONDS = 300.0
# Inside the margin the old token keeps serving while a refresh runs in the background, at most
# one attempt per interval, so a struggling identity endpoint is neither hammered nor fatal.
REFRESH_INTERVAL_SECONDS = 30.0
MIN_TOKEN_LIFE_SECONDS = 60.0
CONNECT_TIMEOUT_CAP_SECONDS = 5.0
READ_TIMEOUT_CAP_SECONDS = 10.0


class TokenCredential(Protocol):
    def get_token(self, *scopes: str) -> Any: ...


class Token(NamedTuple):
    """An access token for Graph and when it expires (epoch seconds)."""

    value: str
    expires_on: float


CredentialFactory = Callable[[Settings, Callable[[int], None]], TokenCredential]


def _misconfigured(detail: str) -> Problem:
    return Problem(Failure.IDENTITY_MISCONFIGURED, detail)


def make_credential(settings: Settings, on_status: Callable[[int], None]) -> TokenCredential:
    """The credential the settings ask for; never a silent fallback to another kind."""
    connect = min(CONNECT_TIMEOUT_CAP_SECONDS, settings.deadline_seconds / 2)
    read = min(READ_TIMEOUT_CAP_SECONDS, settings.deadline_seconds / 2)
    if settings.credential == "azure_cli":
        with loading():
            from azure.identity import AzureCliCredential

        return AzureCliCredential(process_timeout=int(max(1.0, read)))
    if not (os.environ.get("IDENTITY_ENDPOINT") and os.environ.get("IDENTITY_HEADER")):
        # Without these azure-identity would probe the VM metadata endpoint, which is never right
        # inside a Function App: the platform sets both as soon as an identity is enabled.
        raise _misconfigured(
            "IDENTITY_ENDPOINT and IDENTITY_HEADER are not set: enable a managed identity on the "
            "Function App (and set AZURE_CLIENT_ID for a user-assigned one)."
        )
    with loading():  # azure-identity, msal, requests: the largest import there is
        from azure.identity import ManagedIdentityCredential

    def hook(response: Any) -> None:
        on_status(int(response.http_response.status_code))

    return ManagedIdentityCredential(
        client_id=settings.azure_client_id,
        connection_timeout=connect,
        read_timeout=read,
        retry_total=0,  # our own deadline decides; a retry here could outlive the caller
        raw_response_hook=hook,
    )


class TokenProvider:
    def __init__(
        self,
        settings: Settings,
        *,
        credential_factory: CredentialFactory = make_credential,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._factory = credential_factory
        self._clock = clock
        self._lock = threading.Lock()
        self._credential: TokenCredential | None = None
        self._token: Token | None = None
        self._inflight: asyncio.Future[Token] | None = None
        # A fetch `prefetch` started that no `token` call has waited for yet (kept if it fails).
        self._prefetched: asyncio.Future[Token] | None = None
        self._last_status: int | None = None
        self._last_attempt = -math.inf
        self.waited = False  # whether the last `token` call waited for a fetch

    async def token(self, deadline: Deadline) -> str:
        """The token, and `waited` says whether this call had to wait for a fetch.

        `waited` is read right after the await, before anything else can run on the loop.
        """
        cached, now = self._token, self._clock()
        life = cached.expires_on - now if cached is not None else 0.0
        self.waited = False
        if cached is not None and life > REFRESH_MARGIN_SECONDS:
            return cached.value
        if cached is not None and life > MIN_TOKEN_LIFE_SECONDS:
            if self._inflight is None and now - self._last_attempt >= REFRESH_INTERVAL_SECONDS:
                self._start_fetch()
            return cached.value
        inflight = self._inflight or self._prefetched or self._start_fetch()
        self._prefetched = None
        try:
            token = await asyncio.wait_for(asyncio.shield(inflight), deadline.remaining())
        except TimeoutError:
            raise Problem(
                Failure.IDENTITY_UNAVAILABLE,
                "The managed identity endpoint did not hand out a token in time.",
                retry_after=5,
            ) from None
        self.waited = True
        return token.value

    def prefetch(self) -> None:
        """Start fetching the first token now, on the worker thread, if none is held or coming.

        A cold start calls this before building the Graph client: loading the TLS trust store
        (tens of ms) releases the GIL, so it overlaps the thread's import of azure-identity.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop to fetch on: the first `token` call will start it
        if self._token is None and self._inflight is None and self._prefetched is None:
            self._prefetched = self._start_fetch()

    def _start_fetch(self) -> asyncio.Future[Token]:
        self._last_attempt = self._clock()
        inflight = asyncio.get_running_loop().run_in_executor(None, self._fetch)
        inflight.add_done_callback(self._fetched)
        self._inflight = inflight
        return inflight

    def invalidate(self, token: str) -> None:
        """Graph called this token invalid: forget it and the credential's cache with it."""
        with self._lock:
            if self._token is not None and self._token.value == token:
                self._token = None
                self._credential = None

    def _fetched(self, future: asyncio.Future[Token]) -> None:
        self._inflight = None
        if not future.cancelled() and future.exception() is None:
            self._token = future.result()
            if self._prefetched is future:
                self._prefetched = None
        # A failed prefetch stays in `_prefetched`: the first `token` call reports its failure
        # rather than asking the identity endpoint a second time.

    def _record_status(self, status: int) -> None:
        self._last_status = status

    def _fetch(self) -> Token:
        with self._lock:
            if self._credential is None:
                self._credential = self._factory(self._settings, self._record_status)
            credential = self._credential
        self._last_status = None
        try:
            access = credential.get_token(self._settings.graph_scope)
        except Problem:
            raise
        except Exception as exc:  # azure-identity's errors are classified, never leaked raw
            raise self._classify(exc) from exc
        return Token(value=str(access.token), expires_on=float(access.expires_on))

    def _classify(self, exc: Exception) -> Problem:
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

        status = self._last_status
        if isinstance(exc, ServiceRequestError) or (status is not None and status in (429, 503)):
            return Problem(
                Failure.IDENTITY_UNAVAILABLE,
                "The managed identity endpoint is unreachable or busy; try again shortly.",
                retry_after=5,
            )
        if status is not None and status >= 500:
            return Problem(
                Failure.IDENTITY_UNAVAILABLE,
                f"The managed identity endpoint answered {status}; try again shortly.",
                retry_after=5,
            )
        if isinstance(exc, ClientAuthenticationError) or status is not None:
            who = (
                "the user-assigned identity named by AZURE_CLIENT_ID"
                if self._settings.azure_client_id
                else "the system-assigned identity (set AZURE_CLIENT_ID for a user-assigned one)"
            )
            return _misconfigured(
                f"The managed identity endpoint refused to issue a Graph token for {who}"
                + (f" (HTTP {status})" if status is not None else "")
                + ": check that this identity is assigned to the Function App."
            )
        return Problem(
            Failure.IDENTITY_UNAVAILABLE,
            f"Getting a token from the managed identity failed ({type(exc).__name__}).",
            retry_after=5,
        )
