"""The bulk jobs' app settings, and their clients for the storage account's tables and queues.

| setting                                  | default                      | meaning |
|------------------------------------------|------------------------------|---------|
| JOB_WRITES_PER_WINDOW                    | 80                           | writes all job workers together may send per GRAPH_WRITE_WINDOW_SECONDS |
| JOB_DEADLINE_SECONDS                     | 86400                        | a job's inputs not finished by then end as `expired` (1 to 2,592,000) |
| JOB_RETENTION_DAYS                       | 7                            | a job is deleted this long after it ends (0 to 365) |
| JOB_CLAIM_SECONDS                        | 300                          | how long a worker holds a chunk between saves; a dead worker's chunk is taken over after it (10 to 3,600) |
| JOB_PUBLIC_BASE_URL                      | https:// + WEBSITE_HOSTNAME  | the base of a job's status URL (never taken from a request) |
| AzureWebJobsStorage                      | (Azure: unset)               | a connection string: Azurite locally |
| AzureWebJobsStorage__queueServiceUri, __tableServiceUri, __clientId | (set by infra/) | the account's services and the managed identity that reaches them, in Azure |

The storage clients are the SDKs' synchronous ones: every call runs on a worker thread
(`asyncio.to_thread`), so the event loop never waits on storage and no second HTTP stack (the
async clients need aiohttp) loads into the function. A job call makes a handful of storage
requests per device, so a thread hop is no cost that matters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from shared.settings import (
    DEFAULT_WRITE_WINDOW_SECONDS,
    GUID,
    invalid_setting,
    is_loopback,
    number_setting,
)

if TYPE_CHECKING:
    from azure.data.tables import TableClient
    from azure.identity import ManagedIdentityCredential
    from azure.storage.queue import QueueClient

TABLE = "BulkUnassignJobs"
QUEUE = "bulk-unassign-jobs"
DEFAULT_JOB_WRITES_PER_WINDOW = 80  # of Intune's 100 per 20 s: the rest is the HTTP functions'
DEFAULT_JOB_DEADLINE_SECONDS = 86_400.0
DEFAULT_RETENTION_DAYS = 7.0
# Well under the 10 minutes a crashed worker's queue message stays hidden, so the message that
# comes back finds the claim expired.
DEFAULT_CLAIM_SECONDS = 300.0


class JobSettings(NamedTuple):
    """The jobs' settings, validated once; storage reached by connection string or identity."""

    writes_per_window: int
    window_seconds: float
    deadline_seconds: float
    retention_days: float
    claim_seconds: float
    public_base_url: str
    connection_string: str | None
    queue_service_uri: str | None
    table_service_uri: str | None
    client_id: str | None

    def table(self) -> TableClient:
        from azure.data.tables import TableClient

        if self.connection_string is not None:
            return TableClient.from_connection_string(self.connection_string, TABLE)
        assert self.table_service_uri is not None  # load_job_settings guarantees one of the two
        return TableClient(self.table_service_uri, TABLE, credential=self._credential())

    def queue(self) -> QueueClient:
        from azure.storage.queue import QueueClient, TextBase64EncodePolicy

        # The queue trigger decodes base64 by default; the SDK sends raw text unless told.
        encode = TextBase64EncodePolicy()
        if self.connection_string is not None:
            return QueueClient.from_connection_string(
                self.connection_string, QUEUE, message_encode_policy=encode
            )
        assert self.queue_service_uri is not None
        return QueueClient(
            self.queue_service_uri,
            QUEUE,
            credential=self._credential(),
            message_encode_policy=encode,
        )

    def _credential(self) -> ManagedIdentityCredential:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=self.client_id)


def _whole(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = number_setting(env, name, default, low, high)
    if value != int(value):
        raise invalid_setting(name, "not a whole number")
    return int(value)


def _base_url(env: Mapping[str, str]) -> str:
    raw = env.get("JOB_PUBLIC_BASE_URL", "").strip().rstrip("/")
    name = "JOB_PUBLIC_BASE_URL"
    if not raw:
        host = env.get("WEBSITE_HOSTNAME", "").strip()
        if not host:
            raise invalid_setting(
                name, "unset, and WEBSITE_HOSTNAME (which Azure sets) is unset too"
            )
        raw, name = f"https://{host}", "WEBSITE_HOSTNAME"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise invalid_setting(name, "not a URL") from None
    if parts.query or parts.fragment or parts.username or parts.password or not parts.hostname:
        raise invalid_setting(
            name, "give scheme, host and at most a path, e.g. https://app.example"
        )
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname)):
        return raw
    raise invalid_setting(name, "must be an https URL (plain http only for loopback)")


def _service_uri(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip().rstrip("/")
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme != "https" or not parts.hostname:
        raise invalid_setting(name, "must be the https URL of the storage account's service")
    return raw


def load_job_settings(env: Mapping[str, str] | None = None) -> JobSettings:
    source = os.environ if env is None else env
    connection = source.get("AzureWebJobsStorage", "").strip() or None
    queue_uri = _service_uri(source, "AzureWebJobsStorage__queueServiceUri")
    table_uri = _service_uri(source, "AzureWebJobsStorage__tableServiceUri")
    client_id = source.get("AzureWebJobsStorage__clientId", "").strip() or None
    if client_id is not None and not GUID.fullmatch(client_id):
        raise invalid_setting(
            "AzureWebJobsStorage__clientId", "must be the managed identity's client id"
        )
    if connection is None and (queue_uri is None or table_uri is None):
        raise invalid_setting(
            "AzureWebJobsStorage__queueServiceUri",
            "jobs need the storage account's queue and table service URIs (or, locally, "
            "AzureWebJobsStorage as a connection string)",
        )
    return JobSettings(
        writes_per_window=_whole(
            source, "JOB_WRITES_PER_WINDOW", DEFAULT_JOB_WRITES_PER_WINDOW, 1, 1_000
        ),
        window_seconds=number_setting(
            source, "GRAPH_WRITE_WINDOW_SECONDS", DEFAULT_WRITE_WINDOW_SECONDS, 0.1, 3600
        ),
        deadline_seconds=number_setting(
            source, "JOB_DEADLINE_SECONDS", DEFAULT_JOB_DEADLINE_SECONDS, 1, 2_592_000
        ),
        retention_days=number_setting(source, "JOB_RETENTION_DAYS", DEFAULT_RETENTION_DAYS, 0, 365),
        claim_seconds=number_setting(source, "JOB_CLAIM_SECONDS", DEFAULT_CLAIM_SECONDS, 10, 3_600),
        public_base_url=_base_url(source),
        connection_string=connection,
        queue_service_uri=queue_uri,
        table_service_uri=table_uri,
        client_id=client_id,
    )
