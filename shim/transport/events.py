"""Task events sent to containerd the way Go shims send them: ttrpc
`containerd.services.events.ttrpc.v1.Events/Forward` on $TTRPC_ADDRESS.

containerd does not invent /tasks/* events for a shim, and CRI needs TaskExit. Events go out in
the order published (TaskExit before TaskDelete matters to consumers) from a queue, so a handler
never waits on containerd; a failed forward is retried on a fresh connection a few times.
The event's Any carries the bare type name ("containerd.events.TaskExit"), as Go's typeurl
writes it: some consumers compare the type URL exactly.
"""

from __future__ import annotations

import asyncio
import logging

from google.protobuf.any_pb2 import Any
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from wasm_oci.errors import RpcError
from wasm_oci.proto import events_pb2
from wasm_oci.proto.events_ttrpc_pb2 import ForwardRequest
from wasm_oci.proto.types_pb2 import Envelope
from wasm_oci.shim.transport.rpc import NAMESPACE_KEYS
from wasm_oci.shim.transport.ttrpc import TtrpcClient

log = logging.getLogger(__name__)

FORWARD_SERVICE = "containerd.services.events.ttrpc.v1.Events"

TOPICS: dict[type[Message], str] = {
    events_pb2.TaskCreate: "/tasks/create",
    events_pb2.TaskStart: "/tasks/start",
    events_pb2.TaskOOM: "/tasks/oom",
    events_pb2.TaskExit: "/tasks/exit",
    events_pb2.TaskDelete: "/tasks/delete",
    events_pb2.TaskExecAdded: "/tasks/exec-added",
    events_pb2.TaskExecStarted: "/tasks/exec-started",
    events_pb2.TaskPaused: "/tasks/paused",
    events_pb2.TaskResumed: "/tasks/resumed",
    events_pb2.TaskCheckpointed: "/tasks/checkpointed",
}


def envelope(namespace: str, event: Message, topic: str | None = None) -> Envelope:
    """An Envelope stamped now; the topic defaults to the task event's (TOPICS)."""
    timestamp = Timestamp()
    timestamp.GetCurrentTime()
    packed = Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())
    return Envelope(timestamp=timestamp, namespace=namespace, topic=topic or TOPICS[type(event)], event=packed)


class EventPublisher:
    """Forwards envelopes to containerd in order, from a queue drained by one task."""

    def __init__(self, address: str, *, attempts: int = 5, retry_delay: float = 0.1) -> None:
        self._address = address
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue()
        self._client: TtrpcClient | None = None
        self._worker: asyncio.Task[None] | None = None

    def publish(self, namespace: str, event: Message, topic: str | None = None) -> None:
        """Queue `event`; returns at once. Call from the event loop's thread."""
        self._queue.put_nowait(envelope(namespace, event, topic))
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._drain())

    async def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (at most `timeout` s), then disconnect."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("dropping %d unsent events", self._queue.qsize())
        if self._worker is not None:
            self._worker.cancel()
            self._worker = None
        if self._client is not None:
            await self._client.close()

    async def _drain(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._forward(item)
            finally:
                self._queue.task_done()

    async def _forward(self, item: Envelope) -> None:
        metadata = dict.fromkeys(NAMESPACE_KEYS, item.namespace)
        for attempt in range(1, self._attempts + 1):
            try:
                if self._client is None or self._client.is_closed:
                    self._client = await TtrpcClient.connect(self._address)
                await self._client.call(
                    FORWARD_SERVICE,
                    "Forward",
                    ForwardRequest(envelope=item),
                    Empty,
                    metadata=metadata,
                    timeout=5.0,
                )
                return
            except (OSError, RpcError) as exc:
                if attempt == self._attempts:
                    log.error("dropping event %s after %d attempts: %s", item.topic, attempt, exc)
                    return
                await asyncio.sleep(self._retry_delay * attempt)
