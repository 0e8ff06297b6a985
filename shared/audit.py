"""One structured audit record per request, on one line.

The Functions host forwards `logging` to Application Insights, where the JSON message can be
queried with `parse_json(message)`. The record never holds a token, a key, a query string or a
raw body: only values that passed validation, and what Graph told us. `previousUserPrincipalName`
is set only when this request removed that user. `json.dumps` escapes every
control character, so no caller input can split or forge a line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

LOGGER_NAME = "autopilot.audit"
_log = logging.getLogger(LOGGER_NAME)


@dataclass
class AuditRecord:
    """What one request did, written as one JSON line by `emit`."""

    correlationId: str
    # What Graph was sent as client-request-id: the correlation id when it is a GUID, else a
    # GUID made for the request.
    graphClientRequestId: str = ""
    event: str = "unassignUser"
    # Who called: {"kind": "functionKey"}, or the Entra ID token's app, object, user and tenant.
    caller: dict[str, str] = field(default_factory=lambda: {"kind": "unknown"})
    itemIndex: int | None = None
    jobId: str | None = None  # bulk jobs' records: the job
    ticketId: str | None = None
    deviceId: str | None = None
    serialNumber: str | None = None
    dryRun: bool = False
    previousUserPrincipalName: str | None = None
    outcome: str = "unknown"
    httpStatus: int = 0
    graphRequestIds: list[str] = field(default_factory=list)
    attempts: int = 0
    durationMs: int = 0
    detail: str | None = None
    trace: str | None = None


def emit(record: AuditRecord) -> None:
    # vars(), not asdict(): the record is written once, a deep copy would only cost time.
    line = json.dumps(vars(record), ensure_ascii=True, separators=(",", ":"))
    if record.httpStatus >= 500:
        _log.error(line)
    elif record.httpStatus >= 400:
        _log.warning(line)
    else:
        _log.info(line)
