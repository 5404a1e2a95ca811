"""Serves the same Registry over gRPC (grpc.aio), for containerd's gRPC shim protocol.

The only module of the shim that imports grpc (~60 ms): import it only when gRPC is chosen.
containerd 2.1.9's client drops gRPC shims right after connecting (see shared FACTS), so ttrpc
stays the default; this adapter keeps one implementation ready for both, and lets tests call it
with stock gRPC clients.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc import aio

from wasm_oci.shim.transport.rpc import Context, Method, Registry, metadata_of, status_of
from wasm_oci.shim.transport.ttrpc import socket_path

_Behavior = Callable[[Message, aio.ServicerContext[Message, Message]], Coroutine[Any, Any, Message]]


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


def _behavior(registry: Registry, service: str, name: str, method: Method) -> _Behavior:
    async def behavior(request: Message, grpc_context: aio.ServicerContext[Message, Message]) -> Message:
        remaining = grpc_context.time_remaining()
        pairs = ((key, value) for key, value in grpc_context.invocation_metadata() or () if isinstance(value, str))
        context = Context(
            service,
            name,
            metadata_of(pairs),
            None if remaining is None else time.monotonic() + remaining,
        )
        try:
            return await registry.call(method, request, context)
        except Exception as exc:
            code, message = status_of(exc)
            await grpc_context.abort(grpc.StatusCode[code], message)
            raise  # abort always raises; this keeps type checkers informed

    return behavior


def generic_handlers(registry: Registry) -> list[grpc.GenericRpcHandler[Any, Any]]:
    """One generic handler per registered service, (de)serializing with the request types."""
    return [
        grpc.method_handlers_generic_handler(
            service,
            {
                name: grpc.unary_unary_rpc_method_handler(
                    _behavior(registry, service, name, method),
                    request_deserializer=method.request_type.FromString,
                    response_serializer=_serialize,
                )
                for name, method in methods.items()
            },
        )
        for service, methods in registry.services.items()
    ]


async def start_grpc_server(registry: Registry, address: str) -> aio.Server:
    """A started grpc.aio server on a unix socket path ("unix://" accepted); stop it with
    `await server.stop(grace)`."""
    server = aio.server()
    server.add_generic_rpc_handlers(generic_handlers(registry))
    server.add_insecure_port(f"unix:{socket_path(address)}")
    await server.start()
    return server
