"""host.json `extensions.queues` as the dev host reads it, with the Functions host's defaults.

Defaults from Microsoft Learn, "Azure Queue storage trigger and bindings for Azure Functions",
host.json settings: batchSize 16 (at most 32), newBatchThreshold batchSize/2, maxDequeueCount 5,
visibilityTimeout 00:00:00, maxPollingInterval one minute (two seconds when running locally, which
the dev host always is), messageEncoding base64.
"""

from __future__ import annotations

import base64

import pytest

from devtools.queues import (
    RECEIVE_VISIBILITY_SECONDS,
    QueueBinding,
    QueueOptions,
    decode_body,
    resolve_setting,
    timespan_seconds,
)


def test_the_hosts_defaults() -> None:
    options = QueueOptions.from_host_json({"version": "2.0"})
    assert options == QueueOptions(
        batch_size=16,
        new_batch_threshold=8,
        max_dequeue_count=5,
        visibility_timeout=0.0,
        max_polling_interval=2.0,
        message_encoding="base64",
        receive_visibility=600.0,
    )
    assert RECEIVE_VISIBILITY_SECONDS == 600.0  # 10 minutes, as the host receives in Azure


def test_settings_are_read_and_the_threshold_follows_the_batch() -> None:
    host = {"extensions": {"queues": {"batchSize": 32, "maxDequeueCount": 2,
            "visibilityTimeout": "00:01:30", "maxPollingInterval": "00:00:00.5",
            "messageEncoding": "None"}}}  # fmt: skip
    options = QueueOptions.from_host_json(host, receive_visibility=3)
    assert (options.batch_size, options.new_batch_threshold) == (32, 16)
    assert (options.max_dequeue_count, options.visibility_timeout) == (2, 90.0)
    assert (options.max_polling_interval, options.message_encoding) == (0.5, "none")
    assert options.receive_visibility == 3


@pytest.mark.parametrize(
    ("queues", "named"),
    [
        ({"batchSize": 33}, "batchSize"),
        ({"batchSize": 0}, "batchSize"),
        ({"messageEncoding": "utf8"}, "messageEncoding"),
        ({"maxDequeueCount": 0}, "maxDequeueCount"),
        ({"visibilityTimeout": "90"}, "TimeSpan"),
    ],
)
def test_a_setting_the_host_would_refuse_is_refused(queues: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        QueueOptions.from_host_json({"extensions": {"queues": queues}})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:00:00", 0.0), ("00:00:30", 30.0), ("01:02:03", 3723.0), ("1.00:00:00", 86400.0),
     ("00:00:00.25", 0.25), ("00:00:01.5000000", 1.5)],
)  # fmt: skip
def test_timespans(text: str, seconds: float) -> None:
    assert timespan_seconds(text) == seconds


def test_app_settings_name_the_queue_and_an_unset_one_is_an_error() -> None:
    assert resolve_setting("%JOBS%-work", {"JOBS": "Jobs"}) == "Jobs-work"
    binding = QueueBinding.from_function_json(
        "Worker", {"queueName": "%JOBS%", "connection": "Storage"}, print,
        {"JOBS": "Bulk-Jobs", "Storage": "UseDevelopmentStorage=true"},
    )  # fmt: skip
    assert (binding.queue_name, binding.connection_string) == (
        "bulk-jobs",
        "UseDevelopmentStorage=true",
    )
    with pytest.raises(ValueError, match="JOBS"):
        resolve_setting("%JOBS%", {})
    with pytest.raises(ValueError, match="connection setting Storage"):
        QueueBinding.from_function_json(
            "Worker", {"queueName": "q", "connection": "Storage"}, print, {}
        )


def test_the_default_connection_is_azure_web_jobs_storage() -> None:
    binding = QueueBinding.from_function_json(
        "Worker", {"queueName": "q"}, print, {"AzureWebJobsStorage": "conn"}
    )
    assert binding.connection_string == "conn"


def test_bodies_are_decoded_as_configured() -> None:
    assert decode_body(base64.b64encode(b"\x00\xffbody").decode(), "base64") == b"\x00\xffbody"
    assert decode_body("plain text", "none") == b"plain text"
    with pytest.raises(ValueError, match="not base64"):
        decode_body("plain text!", "base64")
