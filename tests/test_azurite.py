"""Azurite (devtools.azurite): real Azure Storage queues, tables and blobs on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import uuid
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)
from azure.storage.queue.aio import QueueClient as AsyncQueueClient

from devtools.azurite import ACCOUNT_KEY, ACCOUNT_NAME, ROOT, Azurite, ensure_installed

TEXT = "unassign 0f9c… for INC0012345"


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def base64_queue(azurite: Azurite, name: str) -> QueueClient:
    return QueueClient.from_connection_string(
        azurite.connection_string,
        name,
        message_encode_policy=TextBase64EncodePolicy(),
        message_decode_policy=TextBase64DecodePolicy(),
    )


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_the_connection_string_names_the_well_known_account_and_every_endpoint(
    azurite: Azurite,
) -> None:
    parts = dict(p.split("=", 1) for p in azurite.connection_string.rstrip(";").split(";"))
    assert parts == {
        "DefaultEndpointsProtocol": "http",
        "AccountName": ACCOUNT_NAME,
        "AccountKey": ACCOUNT_KEY,
        "BlobEndpoint": f"http://127.0.0.1:{azurite.blob_port}/devstoreaccount1",
        "QueueEndpoint": f"http://127.0.0.1:{azurite.queue_port}/devstoreaccount1",
        "TableEndpoint": f"http://127.0.0.1:{azurite.table_port}/devstoreaccount1",
    }
    assert len({azurite.blob_port, azurite.queue_port, azurite.table_port}) == 3
    # The Azurite package.json pins answers; an unsigned request is refused as Azure refuses it.
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["azurite"]
    response = httpx.get(f"{azurite.blob_endpoint}?comp=list", timeout=10)
    assert response.status_code == 403
    assert response.headers["server"] == f"Azurite-Blob/{pinned}"
    assert "<Code>AuthorizationFailure</Code>" in response.text


def test_a_base64_message_is_received_hidden_released_and_deleted(azurite: Azurite) -> None:
    queue = base64_queue(azurite, unique("jobs-"))
    queue.create_queue()
    queue.send_message(TEXT)
    # On the wire it is base64 of the UTF-8 text, as the Functions host expects by default.
    raw = QueueClient.from_connection_string(azurite.connection_string, queue.queue_name)
    [peeked] = raw.peek_messages()
    assert base64.b64decode(peeked.content).decode() == TEXT

    first = queue.receive_message(visibility_timeout=30)
    assert first is not None
    assert first.content == TEXT
    assert first.dequeue_count == 1
    assert first.pop_receipt
    assert queue.receive_message(visibility_timeout=30) is None  # hidden while it is held

    released = queue.update_message(first, visibility_timeout=0)
    assert released.pop_receipt and released.pop_receipt != first.pop_receipt
    with pytest.raises(HttpResponseError) as stale:
        queue.delete_message(first.id, first.pop_receipt)  # the old receipt no longer holds it
    assert stale.value.status_code == 400
    assert "ErrorCode:PopReceiptMismatch" in str(stale.value)

    second = queue.receive_message(visibility_timeout=30)
    assert second is not None
    assert (second.id, second.content, second.dequeue_count) == (first.id, TEXT, 2)
    queue.delete_message(second)
    assert queue.receive_message() is None
    assert list(queue.peek_messages()) == []
    queue.delete_queue()


def test_the_async_queue_client_works_too(azurite: Azurite) -> None:
    async def round_trip() -> tuple[object, int | None]:
        async with AsyncQueueClient.from_connection_string(
            azurite.connection_string,
            unique("async-"),
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        ) as queue:
            await queue.create_queue()
            await queue.send_message(TEXT)
            message = await queue.receive_message(visibility_timeout=30)
            assert message is not None
            await queue.delete_message(message)
            await queue.delete_queue()
            return message.content, message.dequeue_count

    assert asyncio.run(round_trip()) == (TEXT, 1)


def test_a_table_entity_is_upserted_and_queried(azurite: Azurite) -> None:
    service = TableServiceClient.from_connection_string(azurite.connection_string)
    table = service.create_table(unique("audit"))
    try:
        table.upsert_entity({"PartitionKey": "dev1", "RowKey": "INC1", "attempts": 1})
        table.upsert_entity({"PartitionKey": "dev1", "RowKey": "INC2", "attempts": 1})
        table.upsert_entity(
            {"PartitionKey": "dev1", "RowKey": "INC1", "attempts": 2, "result": "unassigned"},
            mode=UpdateMode.MERGE,
        )
        found = list(
            table.query_entities(
                "PartitionKey eq @pk and attempts gt @n", parameters={"pk": "dev1", "n": 1}
            )
        )
        assert [(e["RowKey"], e["attempts"], e["result"]) for e in found] == [
            ("INC1", 2, "unassigned")
        ]
        assert table.get_entity("dev1", "INC2")["attempts"] == 1
    finally:
        service.delete_table(table.table_name)


def test_stop_ends_its_process_frees_its_ports_and_removes_its_data() -> None:
    storage = Azurite().start()
    pid = storage.pid
    data = storage.data_folder
    ports = (storage.blob_port, storage.queue_port, storage.table_port)
    assert pid is not None and data is not None and data.is_dir()
    assert not any(map(port_is_free, ports))
    assert not data.resolve().is_relative_to(ROOT)  # never inside the project

    storage.stop()
    assert storage.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended and reaped
    assert all(map(port_is_free, ports))
    assert not data.exists()
    storage.stop()  # again: nothing left to do
    with pytest.raises(RuntimeError, match="not running"):
        _ = storage.connection_string


def test_two_instances_run_at_once_on_their_own_ports_and_data(azurite: Azurite) -> None:
    with Azurite() as other:
        assert other.pid != azurite.pid
        ports = {azurite.blob_port, azurite.queue_port, azurite.table_port}
        assert ports.isdisjoint({other.blob_port, other.queue_port, other.table_port})
        name = unique("only-here-")
        base64_queue(other, name).create_queue()
        assert queue_names(other, name) == [name]
        assert queue_names(azurite, name) == []


def queue_names(azurite: Azurite, prefix: str) -> list[str]:
    service = QueueServiceClient.from_connection_string(azurite.connection_string)
    return [q.name for q in service.list_queues(name_starts_with=prefix)]


def test_an_azurite_that_cannot_start_is_reported_with_its_output(tmp_path: Path) -> None:
    executable = tmp_path / "node_modules" / ".bin" / "azurite"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\necho 'listen EADDRINUSE: address already in use'\nexit 3\n")
    executable.chmod(0o755)
    storage = Azurite(tmp_path)
    with pytest.raises(RuntimeError, match=r"(?s)exited \(code 3\).*EADDRINUSE"):
        storage.start()
    assert storage.pid is None and storage.data_folder is None


def test_an_installed_azurite_is_not_installed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "package-lock.json").write_text("{}")
    executable = tmp_path / "node_modules" / ".bin" / "azurite"
    executable.parent.mkdir(parents=True)
    executable.touch()
    (tmp_path / "node_modules" / ".installed").touch()
    monkeypatch.setattr("shutil.which", lambda _: None)  # npm would be needed to install
    assert ensure_installed(tmp_path) == executable
    os.utime(tmp_path / "node_modules" / ".installed", (0, 0))  # older than the lockfile
    with pytest.raises(RuntimeError, match="npm is needed"):
        ensure_installed(tmp_path)
