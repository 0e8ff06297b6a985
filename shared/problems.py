"""Every failure a caller can see, and the one table that maps it to an HTTP status.

    Failure                  status  when
    INVALID_REQUEST          400     bad JSON, bad body, bad device id, bad ticket id, bad header value
    CALLER_UNAUTHENTICATED   401     Entra ID is required and the access token is missing or invalid
    CALLER_FORBIDDEN         403     the caller's valid token does not carry the required app role
    BODY_TOO_LARGE           413     the body is over the limit
    UNSUPPORTED_MEDIA_TYPE   415     a Content-Type other than JSON
    DEVICE_NOT_FOUND         404     Graph has no Autopilot device with this id
    USER_MISMATCH            409     the device's user is not `expectedUserPrincipalName`
    AMBIGUOUS_SERIAL         409     several devices have the serial number (candidates listed)
    JOB_NOT_FOUND            404     no bulk job with this id, or not this status URL's capability
    IDEMPOTENCY_CONFLICT     409     an Idempotency-Key already used, within 24 h, for another body
    JOB_STARTING             503     the same Idempotency-Key's job is still being stored (Retry-After)
    GRAPH_PERMISSION         502     Graph refuses our identity (403, or 401 other than an expired token)
    GRAPH_THROTTLED          503     Graph answered 429 or 503 until the deadline (with Retry-After)
    OUT_OF_TIME              503     too little time left to start a write safely (with Retry-After)
    GRAPH_ERROR              502     Graph answered 500/502/504 until the deadline, or anything unexpected
    GRAPH_UNREACHABLE        504     Graph never answered (timeouts, connection errors)
    IDENTITY_MISCONFIGURED   500     the managed identity is missing or misconfigured (names the setting)
    IDENTITY_UNAVAILABLE     503     the identity endpoint is unreachable or busy
    SIGNING_KEYS_UNAVAILABLE 503     Entra ID's signing keys cannot be fetched (never an open door)
    CONFIGURATION            500     an app setting is invalid (names the setting)
    INTERNAL                 500     anything unexpected; the trace goes to the log, never to the caller

No upstream problem is ever answered with 401 or 403: to a caller those mean its own credentials
are wrong, and they are used for exactly that.
When retries run out, the last failure decides.
"""

from __future__ import annotations

import enum
import math
from typing import Any

# No answer of ours asks a caller to wait longer than this, whatever Graph said.
MAX_RETRY_AFTER_SECONDS = 300


class Failure(enum.Enum):
    INVALID_REQUEST = ("invalid-request", 400, "The request is not valid")
    CALLER_UNAUTHENTICATED = ("unauthenticated", 401, "A valid Entra ID access token is required")
    CALLER_FORBIDDEN = ("forbidden", 403, "The caller lacks the required app role")
    BODY_TOO_LARGE = ("body-too-large", 413, "The request body is too large")
    UNSUPPORTED_MEDIA_TYPE = ("unsupported-media-type", 415, "The request body must be JSON")
    DEVICE_NOT_FOUND = ("device-not-found", 404, "No such Autopilot device")
    USER_MISMATCH = ("user-mismatch", 409, "The device is assigned to someone else")
    AMBIGUOUS_SERIAL = ("ambiguous-serial", 409, "The serial number names several devices")
    JOB_NOT_FOUND = ("job-not-found", 404, "No such job")
    JOB_STARTING = ("job-starting", 503, "The job of this Idempotency-Key is being started")
    IDEMPOTENCY_CONFLICT = (
        "idempotency-conflict",
        409,
        "The Idempotency-Key was used with another request",
    )
    GRAPH_PERMISSION = ("graph-permission", 502, "Microsoft Graph refused this app's identity")
    GRAPH_THROTTLED = ("graph-throttled", 503, "Microsoft Graph is throttling or unavailable")
    OUT_OF_TIME = ("out-of-time", 503, "Not enough time left to change the device safely")
    GRAPH_ERROR = ("graph-error", 502, "Microsoft Graph answered with an error")
    GRAPH_UNREACHABLE = ("graph-unreachable", 504, "Microsoft Graph did not answer")
    IDENTITY_MISCONFIGURED = ("identity-misconfigured", 500, "The managed identity is not set up")
    IDENTITY_UNAVAILABLE = (
        "identity-unavailable",
        503,
        "The managed identity endpoint is unavailable",
    )
    SIGNING_KEYS_UNAVAILABLE = (
        "signing-keys-unavailable",
        503,
        "Entra ID's signing keys are unavailable",
    )
    CONFIGURATION = ("configuration", 500, "The function app is misconfigured")
    INTERNAL = ("internal", 500, "Unexpected error")

    def __init__(self, slug: str, status: int, title: str) -> None:
        self.slug = slug
        self.status = status
        self.title = title

    @property
    def type_uri(self) -> str:
        return f"tag:autopilot-unassign,2026:problem:{self.slug}"


class Problem(Exception):
    """A failure on its way to the caller as an RFC 9457 problem document."""

    def __init__(
        self,
        failure: Failure,
        detail: str,
        *,
        graph_code: str | None = None,
        graph_request_id: str | None = None,
        retry_after: float | None = None,
        extra: dict[str, Any] | None = None,
        trace: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail
        self.graph_code = graph_code
        self.graph_request_id = graph_request_id
        self.retry_after = retry_after
        self.extra = extra or {}
        self.trace = trace  # for the log when the failure is ours, never for the caller

    @property
    def status(self) -> int:
        return self.failure.status

    def retry_after_header(self) -> str | None:
        if self.retry_after is None:
            return None
        seconds = self.retry_after
        if not math.isfinite(seconds) or seconds > MAX_RETRY_AFTER_SECONDS:
            return str(MAX_RETRY_AFTER_SECONDS)
        return str(max(1, math.ceil(seconds)))

    def body(self, correlation_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": self.failure.type_uri,
            "title": self.failure.title,
            "status": self.status,
            "detail": self.detail,
            "correlationId": correlation_id,
        }
        if self.graph_code is not None:
            doc["code"] = self.graph_code
        if self.graph_request_id is not None:
            doc["request-id"] = self.graph_request_id
        retry_after = self.retry_after_header()
        if retry_after is not None:
            doc["retryAfterSeconds"] = int(retry_after)
        doc.update(self.extra)
        return doc
