"""The ttrpc server and client: round trips, multiplexing, protocol errors, status mapping,
disconnects, and event forwarding. Raw-socket tests pin the wire format independently of our
client."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.empty_pb2 import Empty

from wasm_oci.errors import NotFound, RpcError
from wasm_oci.proto import events_pb2, task_pb2, task_types_pb2, task_v2_pb2
from wasm_oci.proto.events_ttrpc_pb2 import ForwardRequest
from wasm_oci.proto.ttrpc_pb2 import KeyValue, Request, Response
from wasm_oci.shim.transport.events import EventPublisher
from wasm_oci.shim.transport.rpc import CODES, Context, Registry
from wasm_oci.shim.transport.ttrpc import (
    MAX_MESSAGE,
    TYPE_DATA,
    TYPE_REQUEST,
    TYPE_RESPONSE,
    TtrpcClient,
    TtrpcServer,
    frame,
)

V3 = "containerd.task.v3.Task"
V2 = "containerd.task.v2.Task"
T = TypeVar("T")


class FakeTask:
    """A task service whose handlers exercise each path: async, blocking-sync, errors."""

    def __init__(self) -> None:
        self.release_wait = asyncio.Event()
        self.cancelled: list[str] = []
        self.threads: set[str] = set()

    async def State(self, request: task_pb2.StateRequest, context: Context) -> task_pb2.StateResponse:
        if request.exec_id:  # lets tests shuffle completion order
            await asyncio.sleep(int(request.exec_id) / 10000)
        bundle = f"{context.namespace}|{','.join(context.metadata.get('x-multi', ()))}|{context.service}"
        return task_pb2.StateResponse(id=request.id, exec_id=request.exec_id, bundle=bundle, status=task_types_pb2.RUNNING)

    async def Wait(self, request: task_pb2.WaitRequest, context: Context) -> task_pb2.WaitResponse:
        try:
            await self.release_wait.wait()
        except asyncio.CancelledError:
            self.cancelled.append(f"Wait {request.id}")
            raise
        return task_pb2.WaitResponse(exit_status=7)

    async def Shutdown(self, request: task_pb2.ShutdownRequest, context: Context) -> Empty:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled.append(f"Shutdown {request.id}")
            raise
        return Empty()

    def Pids(self, request: task_pb2.PidsRequest, context: Context) -> task_pb2.PidsResponse:
        import threading

        self.threads.add(threading.current_thread().name)
        time.sleep(0.02)  # blocking is fine in a sync handler
        return task_pb2.PidsResponse(processes=[task_types_pb2.ProcessInfo(pid=42)])

    async def Kill(self, request: task_pb2.KillRequest, context: Context) -> Empty:
        raise NotFound(f"process {request.id} not found")

    async def Delete(self, request: task_pb2.DeleteRequest, context: Context) -> task_pb2.DeleteResponse:
        raise ValueError("a bug")

    async def Connect(self, request: task_pb2.ConnectRequest, context: Context) -> task_pb2.ConnectResponse:
        raise RpcError("ALREADY_EXISTS", "task exists")

    def Start(self, request: task_pb2.StartRequest, context: Context) -> task_pb2.StartResponse:
        raise FileNotFoundError(2, "No such file", request.id)

    async def Update(self, request: task_pb2.UpdateTaskRequest, context: Context) -> Any:
        return None

    async def Stats(self, request: task_pb2.StatsRequest, context: Context) -> task_pb2.StatsResponse:
        return task_pb2.StatsResponse(stats=AnyMessage(type_url="x", value=b"\0" * (MAX_MESSAGE + 1)))


def make_registry(impl: FakeTask) -> Registry:
    registry = Registry()
    registry.register_service(task_pb2.DESCRIPTOR.services_by_name["Task"], impl)
    registry.register_service(task_v2_pb2.DESCRIPTOR.services_by_name["Task"], impl)
    return registry


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """Short path: unix socket paths are limited to 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="ttrpc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(scenario: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


@asynccontextmanager
async def serving(path: Path, impl: FakeTask | None = None) -> AsyncIterator[tuple[TtrpcServer, FakeTask]]:
    impl = impl or FakeTask()
    server = TtrpcServer(make_registry(impl))
    await server.start(str(path))
    try:
        yield server, impl
    finally:
        await server.close()


async def expect_error(code: str, call: Awaitable[object]) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await call
    assert caught.value.grpc_code == code, caught.value
    return caught.value


class RawConnection:
    """Frames written and read by hand over a plain socket."""

    def __init__(self, path: Path) -> None:
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter
        self.path = path

    async def __aenter__(self) -> RawConnection:
        self.reader, self.writer = await asyncio.open_unix_connection(str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.writer.close()

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def read_frame(self) -> tuple[int, int, int, bytes]:
        length, stream_id, kind, flags = struct.unpack(">IIBB", await self.reader.readexactly(10))
        return stream_id, kind, flags, await self.reader.readexactly(length)

    async def read_status(self) -> tuple[int, str, str]:
        stream_id, kind, _, payload = await self.read_frame()
        assert kind == TYPE_RESPONSE
        response = Response.FromString(payload)
        return stream_id, next(n for n, c in CODES.items() if c == response.status.code), response.status.message


def request_frame(stream_id: int, method: str, payload: bytes, service: str = V3, **fields: Any) -> bytes:
    return frame(stream_id, TYPE_REQUEST, Request(service=service, method=method, payload=payload, **fields).SerializeToString())


def test_round_trip_carries_metadata_on_v3_and_v2(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(sock_dir / "s") as _, await TtrpcClient.connect(f"unix://{sock_dir}/s") as client:
            for service in (V3, V2):
                response = await client.call(
                    service,
                    "State",
                    task_pb2.StateRequest(id="t1"),
                    task_pb2.StateResponse,
                    metadata={"containerd-namespace": "k8s.io", "X-Multi": ["a", "b"]},
                )
                assert response.id == "t1"
                assert response.bundle == f"k8s.io|a,b|{service}"
                assert response.status == task_types_pb2.RUNNING
            # containerd 1.6/1.7 send the namespace under another key
            response = await client.call(
                V2, "State", task_pb2.StateRequest(id="t1"), task_pb2.StateResponse, metadata={"containerd-namespace-ttrpc": "default"}
            )
            assert response.bundle.startswith("default|")

    run(scenario)


def test_many_concurrent_calls_on_one_connection(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(sock_dir / "s") as (_, impl), await TtrpcClient.connect(str(sock_dir / "s")) as client:
            blocked = asyncio.ensure_future(client.call(V3, "Wait", task_pb2.WaitRequest(id="w"), task_pb2.WaitResponse))
            calls = [
                client.call(V3, "State", task_pb2.StateRequest(id=f"t{i}", exec_id=str(i * 37 % 50)), task_pb2.StateResponse)
                for i in range(500)
            ]
            pids = [client.call(V3, "Pids", task_pb2.PidsRequest(id="p"), task_pb2.PidsResponse) for _ in range(8)]
            started = time.monotonic()
            responses = await asyncio.gather(*calls)
            pid_responses = await asyncio.gather(*pids)
            assert [r.id for r in responses] == [f"t{i}" for i in range(500)]
            assert [r.exec_id for r in responses] == [str(i * 37 % 50) for i in range(500)]
            assert all(r.processes[0].pid == 42 for r in pid_responses)
            # 8 blocking 20 ms handlers ran in parallel threads, not one after another
            assert time.monotonic() - started < 0.16 + 1.0
            assert len(impl.threads) > 1
            assert not blocked.done()  # Wait still blocks, and held nothing up
            impl.release_wait.set()
            assert (await blocked).exit_status == 7

    run(scenario)


def test_unknown_service_and_method_are_unimplemented(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(sock_dir / "s"), await TtrpcClient.connect(str(sock_dir / "s")) as client:
            error = await expect_error("UNIMPLEMENTED", client.call("containerd.task.v9.Task", "State", Empty(), Empty))
            assert str(error) == "service containerd.task.v9.Task"
            error = await expect_error("UNIMPLEMENTED", client.call(V3, "Teleport", Empty(), Empty))
            assert str(error) == "method Teleport"
            # RPCs the implementation lacks are unimplemented too
            await expect_error("UNIMPLEMENTED", client.call(V3, "Checkpoint", Empty(), Empty))

    run(scenario)


def test_errors_map_to_grpc_codes(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(sock_dir / "s"), await TtrpcClient.connect(str(sock_dir / "s")) as client:
            error = await expect_error("NOT_FOUND", client.call(V3, "Kill", task_pb2.KillRequest(id="t9"), Empty))
            assert str(error) == "process t9 not found"
            assert isinstance(error, RpcError)
            await expect_error("ALREADY_EXISTS", client.call(V3, "Connect", task_pb2.ConnectRequest(), task_pb2.ConnectResponse))
            error = await expect_error("UNKNOWN", client.call(V3, "Delete", task_pb2.DeleteRequest(), task_pb2.DeleteResponse))
            assert str(error) == "a bug"
            await expect_error("NOT_FOUND", client.call(V3, "Start", task_pb2.StartRequest(id="x"), task_pb2.StartResponse))
            error = await expect_error("INTERNAL", client.call(V3, "Update", task_pb2.UpdateTaskRequest(), Empty))
            assert "not a message" in str(error)

    run(scenario)


def test_deadline_cancels_the_handler(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(sock_dir / "s") as (_, impl), RawConnection(sock_dir / "s") as raw:
            payload = task_pb2.ShutdownRequest(id="slow").SerializeToString()
            raw.send(request_frame(1, "Shutdown", payload, timeout_nano=50_000_000))
            assert (await raw.read_status())[:2] == (1, "DEADLINE_EXCEEDED")
            assert impl.cancelled == ["Shutdown slow"]
        async with serving(sock_dir / "s"), await TtrpcClient.connect(str(sock_dir / "s")) as client:
            await expect_error("DEADLINE_EXCEEDED", client.call(V3, "Shutdown", task_pb2.ShutdownRequest(), Empty, timeout=0.05))

    run(scenario)


def test_oversized_frames_are_refused_and_the_connection_survives(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(sock_dir / "s"), RawConnection(sock_dir / "s") as raw:
            raw.send(struct.pack(">IIBB", MAX_MESSAGE + 1, 1, TYPE_REQUEST, 0) + b"\xff" * (MAX_MESSAGE + 1))
            raw.send(request_frame(3, "State", task_pb2.StateRequest(id="after").SerializeToString()))
            stream_id, code, message = await raw.read_status()
            assert (stream_id, code) == (1, "RESOURCE_EXHAUSTED")
            assert str(MAX_MESSAGE) in message
            stream_id, _, _, payload = await raw.read_frame()
            assert stream_id == 3
            assert task_pb2.StateResponse.FromString(Response.FromString(payload).payload).id == "after"
        async with serving(sock_dir / "s"), await TtrpcClient.connect(str(sock_dir / "s")) as client:
            # a response too large to send becomes a status instead
            await expect_error("RESOURCE_EXHAUSTED", client.call(V3, "Stats", task_pb2.StatsRequest(), task_pb2.StatsResponse))
            # the client refuses to send one
            huge = task_pb2.CreateTaskRequest(id="x" * (MAX_MESSAGE + 1))
            await expect_error("RESOURCE_EXHAUSTED", client.call(V3, "Create", huge, task_pb2.CreateTaskResponse))
            assert (await client.call(V3, "State", task_pb2.StateRequest(id="ok"), task_pb2.StateResponse)).id == "ok"

    run(scenario)


def test_protocol_violations_answer_on_their_stream(sock_dir: Path) -> None:
    state = task_pb2.StateRequest(id="s").SerializeToString()

    async def scenario() -> None:
        async with serving(sock_dir / "s"), RawConnection(sock_dir / "s") as raw:
            raw.send(request_frame(2, "State", state))
            assert (await raw.read_status())[:2] == (2, "INVALID_ARGUMENT")
            raw.send(frame(5, TYPE_REQUEST, b"\xff\xff\xff"))
            assert (await raw.read_status())[:2] == (5, "INVALID_ARGUMENT")
            raw.send(request_frame(3, "State", state))  # lower than 5: re-used ids are refused
            assert (await raw.read_status())[:2] == (3, "INVALID_ARGUMENT")
            raw.send(request_frame(7, "State", b"\xff\xff\xff"))
            assert (await raw.read_status())[:2] == (7, "INTERNAL")
            raw.send(frame(9, TYPE_DATA, b""))
            assert (await raw.read_status())[:2] == (9, "INVALID_ARGUMENT")
            raw.send(frame(11, 0x7F, b"future"))  # unknown frame types are ignored
            raw.send(request_frame(13, "State", state))
            stream_id, kind, flags, _payload = await raw.read_frame()
            assert (stream_id, kind, flags) == (13, TYPE_RESPONSE, 0)

    run(scenario)


def test_wire_format_of_a_unary_call(sock_dir: Path) -> None:
    """Bytes as the Go implementation writes them: the status is always present (0a 00)."""

    def field(number: int, data: bytes) -> bytes:
        return bytes([number << 3 | 2, len(data)]) + data

    request = (
        field(1, V3.encode())
        + field(2, b"State")
        + field(3, field(1, b"t1"))
        + field(5, field(1, b"containerd-namespace") + field(2, b"default"))
    )
    expected = task_pb2.StateResponse(id="t1", bundle=f"default||{V3}", status=2).SerializeToString()

    async def scenario() -> None:
        async with serving(sock_dir / "s"), RawConnection(sock_dir / "s") as raw:
            raw.send(struct.pack(">IIBB", len(request), 1, 1, 0) + request)
            header = await raw.reader.readexactly(10)
            body = b"\x0a\x00" + field(2, expected)
            assert header == struct.pack(">IIBB", len(body), 1, 2, 0)
            assert await raw.reader.readexactly(len(body)) == body

    run(scenario)


def test_client_disconnect_cancels_in_flight_handlers(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(sock_dir / "s") as (server, impl):
            client = await TtrpcClient.connect(str(sock_dir / "s"))
            pending = asyncio.ensure_future(client.call(V3, "Wait", task_pb2.WaitRequest(id="w1"), task_pb2.WaitResponse))
            while not any(c.busy for c in server.connections):
                await asyncio.sleep(0.001)
            await client.close()
            await expect_error("UNAVAILABLE", pending)
            while impl.cancelled != ["Wait w1"] or server.connections:
                await asyncio.sleep(0.001)
            async with await TtrpcClient.connect(str(sock_dir / "s")) as again:
                assert (await again.call(V3, "State", task_pb2.StateRequest(id="x"), task_pb2.StateResponse)).id == "x"
            await expect_error("UNAVAILABLE", client.call(V3, "State", task_pb2.StateRequest(), task_pb2.StateResponse))

    run(scenario)


def test_server_close_fails_pending_calls_and_shutdown_waits_for_calls(sock_dir: Path) -> None:
    async def scenario() -> None:
        async with serving(sock_dir / "s") as (server, _):
            client = await TtrpcClient.connect(str(sock_dir / "s"))
            pending = asyncio.ensure_future(client.call(V3, "Wait", task_pb2.WaitRequest(), task_pb2.WaitResponse))
            await asyncio.sleep(0.05)
            await server.close()
            await expect_error("UNAVAILABLE", pending)
        async with serving(sock_dir / "s") as (server, impl):
            client = await TtrpcClient.connect(str(sock_dir / "s"))
            pending = asyncio.ensure_future(client.call(V3, "Wait", task_pb2.WaitRequest(), task_pb2.WaitResponse))
            await asyncio.sleep(0.05)
            asyncio.get_running_loop().call_later(0.1, impl.release_wait.set)
            await server.shutdown(timeout=5)
            assert (await pending).exit_status == 7  # answered before the connection closed
            with pytest.raises(OSError):
                await TtrpcClient.connect(str(sock_dir / "s"))

    run(scenario)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
def test_connections_from_another_user_are_refused(sock_dir: Path) -> None:
    # The venv's interpreter may sit under a directory other users cannot enter.
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 to run as another user")
    sock_dir.chmod(0o755)
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)\n"
        "try: s.sendall(bytes.fromhex(sys.argv[2])); print(len(s.recv(100)))\n"
        "except (BrokenPipeError, ConnectionResetError): print(0)\n"
    )

    async def scenario() -> None:
        async with serving(sock_dir / "s"):
            (sock_dir / "s").chmod(0o777)
            data = request_frame(1, "State", b"").hex()
            result = await asyncio.to_thread(
                subprocess.run,
                [python, "-c", probe, str(sock_dir / "s"), data],
                capture_output=True,
                text=True,
                user=65534,
                group=65534,
                timeout=20,
            )
            assert result.stdout.strip() == "0", result.stderr
            root_probe = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-c", probe, str(sock_dir / "s"), data],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert int(root_probe.stdout) > 0, root_probe.stderr

    run(scenario)


class FakeContainerdEvents:
    def __init__(self) -> None:
        self.received: list[tuple[ForwardRequest, Context]] = []

    async def Forward(self, request: ForwardRequest, context: Context) -> Empty:
        self.received.append((request, context))
        return Empty()


async def serve_events(path: Path, sink: FakeContainerdEvents) -> TtrpcServer:
    registry = Registry()
    registry.register("containerd.services.events.ttrpc.v1.Events", {"Forward": (ForwardRequest, sink.Forward)})
    server = TtrpcServer(registry)
    await server.start(str(path))
    return server


def test_events_are_forwarded_in_order_as_go_shims_send_them(sock_dir: Path) -> None:
    events = [
        events_pb2.TaskCreate(container_id="c1", bundle="/b", pid=10),
        events_pb2.TaskStart(container_id="c1", pid=10),
        events_pb2.TaskExit(container_id="c1", id="c1", pid=10, exit_status=3),
        events_pb2.TaskDelete(container_id="c1", pid=10, exit_status=3),
    ]

    async def scenario() -> None:
        sink = FakeContainerdEvents()
        server = await serve_events(sock_dir / "ttrpc", sink)
        publisher = EventPublisher(f"unix://{sock_dir}/ttrpc")
        for event in events:
            publisher.publish("k8s.io", event)
        publisher.publish("k8s.io", events_pb2.TaskOOM(container_id="c1"), topic="/custom")
        await publisher.close()
        await server.close()
        topics = [r.envelope.topic for r, _ in sink.received]
        assert topics == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/custom"]
        exit_envelope, context = sink.received[2]
        assert exit_envelope.envelope.namespace == "k8s.io"
        assert exit_envelope.envelope.event.type_url == "containerd.events.TaskExit"
        assert events_pb2.TaskExit.FromString(exit_envelope.envelope.event.value).exit_status == 3
        assert exit_envelope.envelope.timestamp.seconds > 0
        assert context.metadata["containerd-namespace"] == ("k8s.io",)
        assert context.metadata["containerd-namespace-ttrpc"] == ("k8s.io",)

    run(scenario)


def test_event_publisher_retries_until_containerd_listens(sock_dir: Path) -> None:
    async def scenario() -> None:
        sink = FakeContainerdEvents()
        publisher = EventPublisher(str(sock_dir / "ttrpc"), retry_delay=0.05)
        publisher.publish("default", events_pb2.TaskExit(container_id="c2"))
        await asyncio.sleep(0.1)
        server = await serve_events(sock_dir / "ttrpc", sink)
        await publisher.close()
        await server.close()
        assert [r.envelope.event.type_url for r, _ in sink.received] == ["containerd.events.TaskExit"]

    run(scenario)


def test_round_trip_latency_on_one_connection(sock_dir: Path) -> None:
    """A regression guard, not the benchmark: 1000 sequential State calls."""

    async def scenario() -> float:
        async with serving(sock_dir / "s"), await TtrpcClient.connect(str(sock_dir / "s")) as client:
            request = task_pb2.StateRequest(id="t1")
            times = []
            for _ in range(1000):
                started = time.perf_counter()
                await client.call(V3, "State", request, task_pb2.StateResponse, metadata={"containerd-namespace": "default"})
                times.append(time.perf_counter() - started)
            return statistics.median(times)

    assert run(scenario) < 0.005


def test_unix_address_forms() -> None:
    from wasm_oci.shim.transport.ttrpc import socket_path

    assert socket_path("unix:///run/containerd/containerd.sock.ttrpc") == "/run/containerd/containerd.sock.ttrpc"
    assert socket_path("/run/x.sock") == "/run/x.sock"


def test_server_accepts_an_inherited_listening_socket(sock_dir: Path) -> None:
    async def scenario() -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_dir / "inherited"))
        listener.listen()
        server = TtrpcServer(make_registry(FakeTask()))
        await server.start(listener)
        async with await TtrpcClient.connect(str(sock_dir / "inherited")) as client:
            assert (await client.call(V3, "State", task_pb2.StateRequest(id="i"), task_pb2.StateResponse)).id == "i"
        await server.close()

    run(scenario)


def test_registry_rejects_duplicates_and_streaming_methods() -> None:
    from wasm_oci.proto import content_pb2

    registry = make_registry(FakeTask())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(V3, {})
    with pytest.raises(ValueError, match="streaming"):
        registry.register_service(content_pb2.DESCRIPTOR.services_by_name["Content"], type("C", (), {"Read": 1})())
    with pytest.raises(ValueError):
        RpcError("NOPE", "x")


def test_keyvalue_metadata_type_is_what_the_client_sends() -> None:
    request = Request(metadata=[KeyValue(key="k", value="v")])
    assert Request.FromString(request.SerializeToString()).metadata[0].value == "v"
