"""Our clients against a real containerd 2.1: the ttrpc event Forward is served by containerd's
Go ttrpc server (and decoded by it: `ctr events` prints the event), and the generated gRPC
stubs reach its events, content, containers and images services."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.any_pb2 import Any

from services.containerd import ContainerdServer
from services.events import EventWatcher
from services.tools import find_tool
from wasm_oci.proto import (
    containers_pb2,
    containers_pb2_grpc,
    content_pb2,
    content_pb2_grpc,
    events_pb2,
    events_service_pb2,
    events_service_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
)
from wasm_oci.shim.transport.events import EventPublisher

pytestmark = pytest.mark.containerd


@pytest.fixture
def watcher(containerd: ContainerdServer) -> Iterator[EventWatcher]:
    w = EventWatcher(containerd)
    yield w
    w.stop()


def test_events_forwarded_over_ttrpc_reach_subscribers(containerd: ContainerdServer, watcher: EventWatcher) -> None:
    async def publish() -> None:
        publisher = EventPublisher(f"unix://{containerd.ttrpc_address}")
        publisher.publish("interop-ns", events_pb2.TaskStart(container_id="ttrpc-c1", pid=4242))
        publisher.publish("interop-ns", events_pb2.TaskExit(container_id="ttrpc-c1", id="ttrpc-c1", pid=4242, exit_status=3))
        await publisher.close()

    asyncio.run(publish())
    start = watcher.next_with("ttrpc-c1")
    exit_line = watcher.next_with("ttrpc-c1")
    assert "/tasks/start" in start and "interop-ns" in start
    assert "/tasks/exit" in exit_line
    decoded = json.loads(exit_line[exit_line.index("{") :])  # containerd decoded our Any
    assert decoded["container_id"] == "ttrpc-c1"
    assert decoded["exit_status"] == 3


def test_grpc_stubs_reach_containerd_services(containerd: ContainerdServer, watcher: EventWatcher) -> None:
    namespace = (("containerd-namespace", containerd.namespace),)
    blob = b"wasm-oci content read " * 10000
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    subprocess.run(
        [
            find_tool("ctr"),
            "--address",
            str(containerd.address),
            "--namespace",
            containerd.namespace,
            "content",
            "ingest",
            "--expected-digest",
            digest,
            "interop-blob",
        ],
        input=blob,
        check=True,
        capture_output=True,
        timeout=30,
    )
    with grpc.insecure_channel(f"unix:{containerd.address}") as channel:
        event = events_pb2.TaskOOM(container_id="grpc-c1")
        events_service_pb2_grpc.EventsStub(channel).Publish(
            events_service_pb2.PublishRequest(
                topic="/tasks/oom", event=Any(type_url=event.DESCRIPTOR.full_name, value=event.SerializeToString())
            ),
            metadata=namespace,
            timeout=10,
        )
        chunks = content_pb2_grpc.ContentStub(channel).Read(content_pb2.ReadContentRequest(digest=digest), metadata=namespace, timeout=10)
        assert b"".join(c.data for c in chunks) == blob
        for call, request in (
            (containers_pb2_grpc.ContainersStub(channel).Get, containers_pb2.GetContainerRequest(id="absent")),
            (images_pb2_grpc.ImagesStub(channel).Get, images_pb2.GetImageRequest(name="absent:latest")),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                call(request, metadata=namespace, timeout=10)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "/tasks/oom" in watcher.next_with("grpc-c1")
