"""The same handler registry served over gRPC, called with stock grpc clients."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc import aio
from test_ttrpc import V2, V3, FakeTask, make_registry, run
from test_ttrpc import sock_dir as sock_dir  # noqa: PLC0414 - the fixture, re-exported for pytest

from wasm_oci.proto import task_pb2, task_pb2_grpc
from wasm_oci.shim.transport.grpc_server import start_grpc_server
from wasm_oci.shim.transport.ttrpc import TtrpcClient, TtrpcServer

NAMESPACE = (("containerd-namespace", "k8s.io"),)


async def expect_status(code: grpc.StatusCode, call: object) -> aio.AioRpcError:
    with pytest.raises(aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value
    return caught.value


def test_one_registry_serves_grpc_and_ttrpc(sock_dir: Path) -> None:
    async def scenario() -> None:
        impl = FakeTask()
        registry = make_registry(impl)
        grpc_server = await start_grpc_server(registry, f"unix://{sock_dir}/grpc")
        ttrpc_server = TtrpcServer(registry)
        await ttrpc_server.start(str(sock_dir / "ttrpc"))
        try:
            async with aio.insecure_channel(f"unix:{sock_dir}/grpc") as channel:
                stub = task_pb2_grpc.TaskStub(channel)
                response = await stub.State(task_pb2.StateRequest(id="t1"), metadata=NAMESPACE)
                assert (response.id, response.bundle) == ("t1", f"k8s.io||{V3}")
                v2_state = channel.unary_unary(
                    f"/{V2}/State",
                    request_serializer=task_pb2.StateRequest.SerializeToString,
                    response_deserializer=task_pb2.StateResponse.FromString,
                )
                assert (await v2_state(task_pb2.StateRequest(id="t2"), metadata=NAMESPACE)).bundle == f"k8s.io||{V2}"
                assert (await stub.Pids(task_pb2.PidsRequest())).processes[0].pid == 42

                error = await expect_status(grpc.StatusCode.NOT_FOUND, stub.Kill(task_pb2.KillRequest(id="t9")))
                assert error.details() == "process t9 not found"
                await expect_status(grpc.StatusCode.ALREADY_EXISTS, stub.Connect(task_pb2.ConnectRequest()))
                await expect_status(grpc.StatusCode.UNKNOWN, stub.Delete(task_pb2.DeleteRequest()))
                await expect_status(grpc.StatusCode.UNIMPLEMENTED, stub.Checkpoint(task_pb2.CheckpointTaskRequest()))
                await expect_status(grpc.StatusCode.DEADLINE_EXCEEDED, stub.Shutdown(task_pb2.ShutdownRequest(id="g"), timeout=0.1))

            async with await TtrpcClient.connect(str(sock_dir / "ttrpc")) as client:
                response = await client.call(V3, "State", task_pb2.StateRequest(id="t1"), task_pb2.StateResponse, metadata=dict(NAMESPACE))
                assert (response.id, response.bundle) == ("t1", f"k8s.io||{V3}")
        finally:
            await grpc_server.stop(None)
            await ttrpc_server.close()
        assert "Shutdown g" in impl.cancelled

    run(scenario)
