"""App settings, read once from the environment and validated with a message naming the setting.

| setting                   | default                      | meaning |
|---------------------------|------------------------------|---------|
| GRAPH_ENDPOINT            | https://graph.microsoft.com  | Graph base URL; sovereign clouds allowed; http only on loopback |
| UNASSIGN_DEADLINE_SECONDS | 20                           | time budget for all Graph work of one request (1 to 200) |
| BULK_DEADLINE_SECONDS     | 60                           | time budget of one bulk request (1 to 200; above 100 used as 100) |
| GRAPH_WRITES_PER_WINDOW   | 100                          | client-side pace: writes per window (Intune's limit) |
| GRAPH_WRITE_WINDOW_SECONDS| 20                           | the pace's window |
| AZURE_CLIENT_ID           | (system-assigned identity)   | client id of a user-assigned managed identity |
| GRAPH_CREDENTIAL          | managed_identity             | `azure_cli` only to try the function from a workstation |

The README's configuration table repeats this one for admins.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import re
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from shared.problems import Failure, Problem

DEFAULT_GRAPH_ENDPOINT = "https://graph.microsoft.com"
DEFAULT_DEADLINE_SECONDS = 20.0
# Bulk callers are flows (Power Automate waits 120 s), so they get more time than a ticket.
DEFAULT_BULK_DEADLINE_SECONDS = 60.0
# Power Automate gives up on a synchronous call after 120 s, so a bulk answer must come well
# before; values up to 200 stay valid (refusing them would stop running apps) but are used as this.
MAX_USED_BULK_DEADLINE_SECONDS = 100.0
_log = logging.getLogger("autopilot.settings")
_warned: set[str] = set()
# Intune allows 100 writes per 20 s per app per tenant (enrollment group).
DEFAULT_WRITES_PER_WINDOW = 100
DEFAULT_WRITE_WINDOW_SECONDS = 20.0
# An HTTP-triggered function must answer within 230 s; leave room for the cold start and the reply.
DEADLINE_RANGE = (1.0, 200.0)
CREDENTIALS = ("managed_identity", "azure_cli")
GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Settings(NamedTuple):
    """The function's app settings, validated once."""

    graph_endpoint: str
    deadline_seconds: float
    azure_client_id: str | None
    credential: str
    bulk_deadline_seconds: float = DEFAULT_BULK_DEADLINE_SECONDS
    writes_per_window: int = DEFAULT_WRITES_PER_WINDOW
    write_window_seconds: float = DEFAULT_WRITE_WINDOW_SECONDS

    @property
    def graph_scope(self) -> str:
        """The token scope follows the endpoint, so sovereign clouds get their own audience."""
        return f"{self.graph_endpoint}/.default"


def invalid_setting(name: str, why: str) -> Problem:
    """A 500 naming the setting and what is wrong, never its value (it may be an internal URL)."""
    return Problem(Failure.CONFIGURATION, f"App setting {name} is invalid: {why}.")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _graph_endpoint(env: Mapping[str, str]) -> str:
    raw = env.get("GRAPH_ENDPOINT", "").strip() or DEFAULT_GRAPH_ENDPOINT
    value = raw.rstrip("/")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise invalid_setting("GRAPH_ENDPOINT", "not a URL") from None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        raise invalid_setting(
            "GRAPH_ENDPOINT", "give only scheme and host, e.g. https://graph.microsoft.com"
        )
    if parts.scheme == "https" and host:
        return value
    if parts.scheme == "http" and is_loopback(host):
        return value
    raise invalid_setting("GRAPH_ENDPOINT", "must be an https URL (plain http only for loopback)")


def number_setting(
    env: Mapping[str, str], name: str, default: float, low: float, high: float
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise invalid_setting(name, "not a number") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise invalid_setting(name, f"must be between {low:g} and {high:g}")
    return value


def _writes_per_window(env: Mapping[str, str]) -> int:
    value = number_setting(env, "GRAPH_WRITES_PER_WINDOW", DEFAULT_WRITES_PER_WINDOW, 1, 10_000)
    if value != int(value):
        raise invalid_setting("GRAPH_WRITES_PER_WINDOW", "not a whole number")
    return int(value)


def _client_id(env: Mapping[str, str]) -> str | None:
    raw = env.get("AZURE_CLIENT_ID", "").strip()
    if not raw:
        return None
    if not GUID.fullmatch(raw):
        raise invalid_setting(
            "AZURE_CLIENT_ID", "must be the client id (a GUID) of the managed identity"
        )
    return raw.lower()


def _credential(env: Mapping[str, str]) -> str:
    raw = env.get("GRAPH_CREDENTIAL", "").strip()
    if not raw:
        return "managed_identity"
    if raw not in CREDENTIALS:
        raise invalid_setting("GRAPH_CREDENTIAL", f"must be one of {', '.join(CREDENTIALS)}")
    return raw


def _bulk_deadline(env: Mapping[str, str]) -> float:
    value = number_setting(
        env, "BULK_DEADLINE_SECONDS", DEFAULT_BULK_DEADLINE_SECONDS, *DEADLINE_RANGE
    )
    if value <= MAX_USED_BULK_DEADLINE_SECONDS:
        return value
    if "BULK_DEADLINE_SECONDS" not in _warned:  # once per process, not on every request
        _warned.add("BULK_DEADLINE_SECONDS")
        _log.warning(
            "App setting BULK_DEADLINE_SECONDS is above %g and is used as %g: Power Automate "
            "gives up on a synchronous call after 120 s.",
            MAX_USED_BULK_DEADLINE_SECONDS,
            MAX_USED_BULK_DEADLINE_SECONDS,
        )
    return MAX_USED_BULK_DEADLINE_SECONDS


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    source = os.environ if env is None else env
    return Settings(
        graph_endpoint=_graph_endpoint(source),
        deadline_seconds=number_setting(
            source, "UNASSIGN_DEADLINE_SECONDS", DEFAULT_DEADLINE_SECONDS, *DEADLINE_RANGE
        ),
        azure_client_id=_client_id(source),
        credential=_credential(source),
        bulk_deadline_seconds=_bulk_deadline(source),
        writes_per_window=_writes_per_window(source),
        write_window_seconds=number_setting(
            source, "GRAPH_WRITE_WINDOW_SECONDS", DEFAULT_WRITE_WINDOW_SECONDS, 0.1, 3600
        ),
    )
