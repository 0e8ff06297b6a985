"""The jobs' settings: storage by connection string (Azurite) or by service URI and identity."""

from __future__ import annotations

import base64

import pytest
from azure.storage.queue import QueueClient

from devtools.azurite import Azurite
from shared.jobs.settings import QUEUE, TABLE, load_job_settings
from shared.problems import Failure, Problem

IDENTITY = {
    "AzureWebJobsStorage__queueServiceUri": "https://st1.queue.core.windows.net",
    "AzureWebJobsStorage__tableServiceUri": "https://st1.table.core.windows.net/",
    "AzureWebJobsStorage__clientId": "fac6f0b1-f0b1-fac6-b1f0-c6fab1f0c6fa",
    "WEBSITE_HOSTNAME": "func-abc.azurewebsites.net",
}


def test_the_defaults_in_azure() -> None:
    settings = load_job_settings(IDENTITY)
    assert (settings.writes_per_window, settings.window_seconds) == (80, 20.0)
    assert (settings.deadline_seconds, settings.retention_days) == (86_400.0, 7.0)
    assert settings.public_base_url == "https://func-abc.azurewebsites.net"
    assert settings.connection_string is None
    assert settings.table_service_uri == "https://st1.table.core.windows.net"
    table = settings.table()
    assert table.table_name == TABLE and table.account_name == "st1"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"AzureWebJobsStorage__queueServiceUri": ""}, "AzureWebJobsStorage__queueServiceUri"),
        ({"AzureWebJobsStorage__tableServiceUri": "http://st1.table"}, "__tableServiceUri"),
        ({"AzureWebJobsStorage__clientId": "not-a-guid"}, "AzureWebJobsStorage__clientId"),
        ({"JOB_WRITES_PER_WINDOW": "0"}, "JOB_WRITES_PER_WINDOW"),
        ({"JOB_WRITES_PER_WINDOW": "2.5"}, "JOB_WRITES_PER_WINDOW"),
        ({"JOB_DEADLINE_SECONDS": "forever"}, "JOB_DEADLINE_SECONDS"),
        ({"JOB_RETENTION_DAYS": "400"}, "JOB_RETENTION_DAYS"),
        ({"WEBSITE_HOSTNAME": ""}, "WEBSITE_HOSTNAME"),
        ({"JOB_PUBLIC_BASE_URL": "http://app.example"}, "JOB_PUBLIC_BASE_URL"),
        ({"JOB_PUBLIC_BASE_URL": "https://app.example/?x=1"}, "JOB_PUBLIC_BASE_URL"),
    ],
)
def test_a_bad_setting_is_a_500_naming_it(change: dict[str, str], named: str) -> None:
    with pytest.raises(Problem) as caught:
        load_job_settings({**IDENTITY, **change})
    assert caught.value.failure is Failure.CONFIGURATION and named in caught.value.detail


def test_the_public_base_url_setting_wins_and_loopback_may_be_http() -> None:
    assert load_job_settings({**IDENTITY, "JOB_PUBLIC_BASE_URL": "https://ops.example/x/"}) \
        .public_base_url == "https://ops.example/x"  # fmt: skip
    local = load_job_settings({**IDENTITY, "JOB_PUBLIC_BASE_URL": "http://127.0.0.1:7071"})
    assert local.public_base_url == "http://127.0.0.1:7071"


def test_locally_a_connection_string_reaches_azurite() -> None:
    # An Azurite of its own: the table and queue names are the app's fixed ones.
    with Azurite() as azurite:
        check_the_clients(azurite)


def check_the_clients(azurite: Azurite) -> None:
    settings = load_job_settings(
        {"AzureWebJobsStorage": azurite.connection_string, "WEBSITE_HOSTNAME": "localhost:7071"}
    )
    table = settings.table()
    table.create_table()
    try:
        table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 1})
        assert table.get_entity("p", "r")["n"] == 1
    finally:
        table.delete_table()
    queue = settings.queue()
    assert queue.queue_name == QUEUE
    queue.create_queue()
    try:
        queue.send_message('{"kind": "fanout"}')
        raw = QueueClient.from_connection_string(azurite.connection_string, QUEUE)
        [message] = raw.receive_messages()
        # base64 on the wire, as the queue trigger decodes by default
        assert base64.b64decode(message.content) == b'{"kind": "fanout"}'
        raw.close()
    finally:
        queue.delete_queue()
