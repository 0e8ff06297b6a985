"""The dev host's queue trigger, run the way the Azure Functions host runs a `queueTrigger`.

For each function whose function.json declares a `queueTrigger`, a listener polls its queue on the
storage account named by the binding's `connection` app setting (a connection string locally,
`AzureWebJobsStorage` by default); `queueName` may be `%AppSetting%`. From host.json
`extensions.queues`, with the host's defaults:

| setting | default | what the listener does with it |
|---|---|---|
| batchSize | 16 (at most 32) | messages fetched at once |
| newBatchThreshold | batchSize / 2 | fetch again once no more than this many still run |
| maxDequeueCount | 5 | a failure at this dequeue count moves the message to `<queue>-poison` |
| visibilityTimeout | 00:00:00 | a failed message is visible again after this long |
| maxPollingInterval | 00:00:02 (locally) | the longest wait between polls of an empty queue |
| messageEncoding | base64 | `base64`: the text is base64 of the body; `none`: the text is the body |

So up to batchSize + newBatchThreshold messages run at once per function. A received message is
invisible for the receive visibility (10 minutes, as in Azure; `receive_visibility` shortens it
for tests), renewed at half-life while the function runs: a message whose host died reappears
after it. On success the message is deleted; on failure it is released after
`visibilityTimeout`, or at `maxDequeueCount` copied to `<queue>-poison` (created if missing) and
deleted. Polling follows the host: soon again after a message, then a randomised exponential
backoff up to `maxPollingInterval` while the queue stays empty.

Not emulated: the host's queue scaling, `%AppSetting%` in `connection`, identity-based
connections (use a connection string locally), and its blob receipts for poison messages.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import logging
import os
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from azure.functions.queue import QueueMessage as WorkerQueueMessage

log = logging.getLogger("devtools.queues")

RECEIVE_VISIBILITY_SECONDS = 600.0  # what the host asks for on receive, in Azure
MAX_BATCH_SIZE = 32
AFTER_MESSAGE_SECONDS = 0.1  # the host polls again this soon after finding messages
FIRST_EMPTY_WAIT_SECONDS = 0.2  # and first waits this long after an empty poll
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?")
_SETTING = re.compile(r"%([^%]+)%")


def timespan_seconds(text: str) -> float:
    """A .NET TimeSpan as host.json writes it ("00:00:30", "1.00:00:00", "00:00:00.5")."""
    match = _TIMESPAN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a TimeSpan such as 00:00:30")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    """host.json `extensions.queues`, and the one dev-host option, the receive visibility."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 2.0
    message_encoding: str = "base64"
    receive_visibility: float = RECEIVE_VISIBILITY_SECONDS

    @classmethod
    def from_host_json(
        cls, host: Mapping[str, Any], receive_visibility: float = RECEIVE_VISIBILITY_SECONDS
    ) -> QueueOptions:
        queues = host.get("extensions", {}).get("queues", {})
        batch_size = int(queues.get("batchSize", 16))
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"extensions.queues.batchSize must be 1 to {MAX_BATCH_SIZE}")
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError("extensions.queues.messageEncoding must be base64 or none")
        options = cls(
            batch_size=batch_size,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch_size // 2)),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=timespan_seconds(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=timespan_seconds(queues.get("maxPollingInterval", "00:00:02")),
            message_encoding=encoding,
            receive_visibility=receive_visibility,
        )
        if options.new_batch_threshold < 0 or options.max_dequeue_count < 1:
            raise ValueError("extensions.queues: newBatchThreshold >= 0, maxDequeueCount >= 1")
        return options


def resolve_setting(text: str, settings: Mapping[str, str] | None = None) -> str:
    """`%Name%` replaced by the app setting Name, as the host binds names; unset is an error."""
    values = os.environ if settings is None else settings

    def value(match: re.Match[str]) -> str:
        if match[1] not in values:
            raise ValueError(f"app setting {match[1]} (in {text!r}) is not set")
        return values[match[1]]

    return _SETTING.sub(value, text)


@dataclass(frozen=True)
class QueueBinding:
    """One queue-triggered function, its queue and connection resolved."""

    function: str
    queue_name: str
    connection_string: str
    handler: Callable[[func.QueueMessage], Any]

    @classmethod
    def from_function_json(
        cls,
        function: str,
        binding: Mapping[str, Any],
        handler: Callable[[func.QueueMessage], Any],
        settings: Mapping[str, str] | None = None,
    ) -> QueueBinding:
        values = os.environ if settings is None else settings
        connection = str(binding.get("connection") or "AzureWebJobsStorage")
        if connection not in values:
            raise ValueError(f"{function}: the connection setting {connection} is not set")
        return cls(
            function=function,
            queue_name=resolve_setting(str(binding["queueName"]), values).lower(),
            connection_string=values[connection],
            handler=handler,
        )


def decode_body(text: str, encoding: str) -> bytes:
    if encoding == "none":
        return text.encode("utf-8")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the message is not base64 ({exc})") from None


class QueueListener:
    """Polls one queue and runs its function on each message, as the host does."""

    def __init__(
        self,
        binding: QueueBinding,
        options: QueueOptions,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.binding = binding
        self.options = options
        self._jitter = jitter
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Until cancelled; messages still running when it is cancelled are left to reappear."""
        from azure.storage.queue.aio import QueueClient

        client = QueueClient.from_connection_string(
            self.binding.connection_string, self.binding.queue_name
        )
        wait = FIRST_EMPTY_WAIT_SECONDS
        try:
            while True:
                if len(self._running) > self.options.new_batch_threshold:
                    await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                found = await self._fetch(client)
                if found:
                    wait = FIRST_EMPTY_WAIT_SECONDS
                    await asyncio.sleep(AFTER_MESSAGE_SECONDS)
                else:
                    await asyncio.sleep(wait)
                    grown = wait * 2 * (0.8 + 0.4 * self._jitter())
                    wait = min(grown, self.options.max_polling_interval)
        finally:
            for task in self._running:
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)
            await client.close()

    async def _fetch(self, client: Any) -> int:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            pages = client.receive_messages(
                messages_per_page=self.options.batch_size,
                max_messages=self.options.batch_size,
                visibility_timeout=max(1, round(self.options.receive_visibility)),
            )
            messages = [message async for message in pages]
        except ResourceNotFoundError:
            return 0  # no queue yet: the host waits for it too
        for message in messages:
            task = asyncio.create_task(self._process(client, message))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return len(messages)

    async def _process(self, client: Any, message: Any) -> None:
        receipt = [message.pop_receipt]
        renewal = asyncio.create_task(self._keep_invisible(client, message, receipt))
        try:
            succeeded = await self._invoke(message)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        if succeeded:
            await client.delete_message(message.id, receipt[0])
        elif message.dequeue_count >= self.options.max_dequeue_count:
            await self._poison(client, message, receipt[0])
        else:
            await client.update_message(
                message.id, receipt[0], visibility_timeout=round(self.options.visibility_timeout)
            )

    async def _invoke(self, message: Any) -> bool:
        name = self.binding.function
        try:
            body = decode_body(message.content, self.options.message_encoding)
            argument = WorkerQueueMessage(  # type: ignore[no-untyped-call]  # the worker's class
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            if inspect.iscoroutinefunction(self.binding.handler):
                await self.binding.handler(argument)
            else:  # the Python worker runs a synchronous function on a thread pool
                await asyncio.to_thread(self.binding.handler, argument)
        except Exception:
            log.exception(
                "function %s failed on message %s (dequeue count %s)",
                name,
                message.id,
                message.dequeue_count,
            )
            return False
        return True

    async def _keep_invisible(self, client: Any, message: Any, receipt: list[str]) -> None:
        """Renew the message's invisibility at half-life while the function runs."""
        visibility = max(1, round(self.options.receive_visibility))
        while True:
            await asyncio.sleep(visibility / 2)
            updated = await client.update_message(
                message.id, receipt[0], visibility_timeout=visibility
            )
            receipt[0] = updated.pop_receipt

    async def _poison(self, client: Any, message: Any, receipt: str) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue.aio import QueueClient

        name = f"{self.binding.queue_name}-poison"
        poison = QueueClient.from_connection_string(self.binding.connection_string, name)
        async with poison:
            with contextlib.suppress(ResourceExistsError):
                await poison.create_queue()
            await poison.send_message(message.content)  # the text as it was, still encoded
        await client.delete_message(message.id, receipt)
        log.warning(
            "function %s: message %s moved to %s after %s attempts",
            self.binding.function,
            message.id,
            name,
            message.dequeue_count,
        )
