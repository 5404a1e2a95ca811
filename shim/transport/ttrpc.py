"""ttrpc, containerd's RPC protocol for shims, over unix sockets: the shim's server and a client.

Wire behaviour follows github.com/containerd/ttrpc: a frame is a 10-byte header (uint32 BE
payload length, uint32 BE stream id, uint8 type, uint8 flags) and a payload of at most 4 MiB;
clients open streams with odd, increasing ids and keep many requests in flight on one
connection, each answered by one response frame whose google.rpc.Status is always present.
Oversized frames are skipped and answered RESOURCE_EXHAUSTED without dropping the connection;
unknown services and methods answer UNIMPLEMENTED; unknown frame types are ignored. Only unary
RPCs are served (the task service has no streams).

asyncio protocols rather than stream readers keep per-frame overhead low, and every request
runs as its own task, so a Wait that blocks for minutes never delays a State behind it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import time
from collections.abc import Mapping, Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError, Message

from wasm_oci.errors import RpcError
from wasm_oci.proto.ttrpc_pb2 import KeyValue, Request, Response
from wasm_oci.shim.transport.rpc import (
    CODE_NAMES,
    CODES,
    Context,
    Method,
    Registry,
    metadata_of,
    status_of,
)

log = logging.getLogger(__name__)

HEADER = struct.Struct(">IIBB")
MAX_MESSAGE = 4 << 20
TYPE_REQUEST, TYPE_RESPONSE, TYPE_DATA = 1, 2, 3
_MAX_STREAM_ID = 0xFFFFFFFF

M = TypeVar("M", bound=Message)


def socket_path(address: str) -> str:
    """A filesystem path from a containerd address ("unix:///p" or "/p")."""
    return address.removeprefix("unix://")


def frame(stream_id: int, kind: int, payload: bytes) -> bytes:
    """One encoded frame (flags are only used by streams, which are not served)."""
    return HEADER.pack(len(payload), stream_id, kind, 0) + payload


class _FrameProtocol(asyncio.Protocol):
    """Splits the byte stream into frames; skips the body of any frame over MAX_MESSAGE."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skip = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        pos, end = 0, len(buffer)
        while True:
            if self._skip:
                dropped = min(self._skip, end - pos)
                pos += dropped
                self._skip -= dropped
                if self._skip:
                    break
            if end - pos < HEADER.size:
                break
            length, stream_id, kind, _flags = HEADER.unpack_from(buffer, pos)
            if length > MAX_MESSAGE:
                pos += HEADER.size
                self._skip = length
                self.frame_too_large(stream_id, length)
                continue
            stop = pos + HEADER.size + length
            if stop > end:
                break
            payload = bytes(buffer[pos + HEADER.size : stop])
            pos = stop
            self.frame_received(stream_id, kind, payload)
        del buffer[:pos]

    def frame_received(self, stream_id: int, kind: int, payload: bytes) -> None:
        raise NotImplementedError

    def frame_too_large(self, stream_id: int, length: int) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


def _too_large(length: int) -> str:
    return f"message length {length} exceed maximum message size of {MAX_MESSAGE}"


def _peer_is_same_user(sock: socket.socket) -> bool:
    """The check Go shims make (ttrpc.UnixSocketRequireSameUser): peer uid and gid are ours."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, gid = struct.unpack("3i", creds)
    return bool(uid == os.geteuid() and gid == os.getegid())


class _ServerConnection(_FrameProtocol):
    def __init__(self, server: TtrpcServer) -> None:
        super().__init__()
        self._server = server
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._last_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if self._server.same_user_only and not _peer_is_same_user(sock):
            log.warning("ttrpc: refusing a connection from another user")
            self.transport.abort()
            return
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        for task in self._calls.values():
            task.cancel()

    @property
    def busy(self) -> bool:
        return bool(self._calls)

    def _status(self, stream_id: int, code: str, message: str) -> None:
        response = Response()
        response.status.code = CODES[code]
        response.status.message = message
        self.send(frame(stream_id, TYPE_RESPONSE, response.SerializeToString()))

    def frame_too_large(self, stream_id: int, length: int) -> None:
        self._status(stream_id, "RESOURCE_EXHAUSTED", _too_large(length))

    def frame_received(self, stream_id: int, kind: int, payload: bytes) -> None:
        if stream_id % 2 == 0:
            self._status(stream_id, "INVALID_ARGUMENT", "StreamID must be odd for client initiated streams")
        elif kind == TYPE_DATA:
            # No served method streams: data is only an error when the stream is not open.
            if stream_id not in self._calls:
                self._status(stream_id, "INVALID_ARGUMENT", "StreamID is no longer active")
        elif kind != TYPE_REQUEST:
            return  # unknown frame types are left for future protocol versions
        elif stream_id <= self._last_id:
            self._status(stream_id, "INVALID_ARGUMENT", "StreamID cannot be re-used and must increment")
        else:
            self._last_id = stream_id
            self._start(stream_id, payload)

    def _start(self, stream_id: int, payload: bytes) -> None:
        try:
            request = Request.FromString(payload)
        except DecodeError as exc:
            self._status(stream_id, "INVALID_ARGUMENT", f"unmarshal request error: {exc}")
            return
        try:
            method = self._server.registry.lookup(request.service, request.method)
            message = method.request_type.FromString(request.payload)
        except RpcError as exc:
            self._status(stream_id, *status_of(exc))
            return
        except DecodeError as exc:
            self._status(stream_id, "INTERNAL", f"ttrpc: error unmarshalling payload: {exc}")
            return
        deadline = time.monotonic() + request.timeout_nano / 1e9 if request.timeout_nano else None
        metadata = metadata_of((kv.key, kv.value) for kv in request.metadata)
        context = Context(request.service, request.method, metadata, deadline)
        self._calls[stream_id] = asyncio.get_running_loop().create_task(self._serve(stream_id, method, message, context))

    async def _serve(self, stream_id: int, method: Method, request: Message, context: Context) -> None:
        response = Response()
        try:
            response.payload = (await self._server.registry.call(method, request, context)).SerializeToString()
        except Exception as exc:
            code, message = status_of(exc)
            response.status.code = CODES[code]
            response.status.message = message
        finally:
            self._calls.pop(stream_id, None)
        response.status.SetInParent()
        data = response.SerializeToString()
        if len(data) > MAX_MESSAGE:
            self._status(stream_id, "RESOURCE_EXHAUSTED", _too_large(len(data)))
        else:
            self.send(frame(stream_id, TYPE_RESPONSE, data))


class TtrpcServer:
    """Serves a Registry over ttrpc on unix sockets."""

    def __init__(self, registry: Registry, *, same_user_only: bool = True) -> None:
        self.registry = registry
        self.same_user_only = same_user_only
        self.connections: set[_ServerConnection] = set()
        self._listeners: list[asyncio.Server] = []

    async def start(self, listener: str | socket.socket) -> None:
        """Accept connections on a unix socket path (created; "unix://" accepted) or on an
        already listening socket (e.g. one `shim start` bound and handed down)."""
        loop = asyncio.get_running_loop()
        factory = lambda: _ServerConnection(self)  # noqa: E731
        if isinstance(listener, socket.socket):
            server = await loop.create_unix_server(factory, sock=listener)
        else:
            server = await loop.create_unix_server(factory, path=socket_path(listener))
        self._listeners.append(server)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, let in-flight calls finish (at most `timeout` s), then close.
        Call it after a Shutdown RPC has answered, not from inside that handler."""
        for server in self._listeners:
            server.close()
        give_up = time.monotonic() + timeout
        while any(c.busy for c in self.connections) and time.monotonic() < give_up:
            await asyncio.sleep(0.01)
        await self.close()

    async def close(self) -> None:
        """Stop accepting and close every connection now (in-flight handlers are cancelled;
        responses already written are still flushed)."""
        for server in self._listeners:
            server.close()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.close()
        for server in self._listeners:
            await server.wait_closed()
        self._listeners.clear()


class _ClientConnection(_FrameProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _resolve(self, stream_id: int, response: Response | RpcError) -> None:
        future = self.pending.pop(stream_id, None)
        if future is None or future.done():
            return
        if isinstance(response, RpcError):
            future.set_exception(response)
        else:
            future.set_result(response)

    def frame_too_large(self, stream_id: int, length: int) -> None:
        self._resolve(stream_id, RpcError("RESOURCE_EXHAUSTED", _too_large(length)))

    def frame_received(self, stream_id: int, kind: int, payload: bytes) -> None:
        if kind != TYPE_RESPONSE:
            return  # no client call streams
        try:
            self._resolve(stream_id, Response.FromString(payload))
        except DecodeError as exc:
            self._resolve(stream_id, RpcError("INTERNAL", f"ttrpc: malformed response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        for stream_id in list(self.pending):
            self._resolve(stream_id, RpcError("UNAVAILABLE", "ttrpc: connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)


class TtrpcClient:
    """A ttrpc client on one connection; concurrent calls are multiplexed on it."""

    def __init__(self, connection: _ClientConnection) -> None:
        self._connection = connection
        self._next_id = 1

    @classmethod
    async def connect(cls, address: str) -> TtrpcClient:
        """Connect to a unix socket path ("unix://" accepted)."""
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_unix_connection(_ClientConnection, socket_path(address))
        return cls(connection)

    @property
    def is_closed(self) -> bool:
        return self._connection.closed.done()

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        metadata: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> M:
        """One unary call; raises RpcError with the server's status when it is not OK (or
        UNAVAILABLE when the connection closes, DEADLINE_EXCEEDED after `timeout` s)."""
        if self.is_closed:
            raise RpcError("UNAVAILABLE", "ttrpc: connection closed")
        stream_id = self._next_id
        if stream_id > _MAX_STREAM_ID:
            raise RpcError("RESOURCE_EXHAUSTED", "ttrpc: stream ids exhausted; reconnect")
        self._next_id += 2
        envelope = Request(service=service, method=method, payload=request.SerializeToString())
        if timeout is not None:
            envelope.timeout_nano = max(int(timeout * 1e9), 1)
        for key, values in (metadata or {}).items():
            for value in [values] if isinstance(values, str) else values:
                envelope.metadata.append(KeyValue(key=key, value=value))
        data = envelope.SerializeToString()
        if len(data) > MAX_MESSAGE:
            raise RpcError("RESOURCE_EXHAUSTED", _too_large(len(data)))
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._connection.pending[stream_id] = future
        self._connection.send(frame(stream_id, TYPE_REQUEST, data))
        try:
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError:
            raise RpcError("DEADLINE_EXCEEDED", f"ttrpc: {service}/{method} timed out") from None
        finally:
            self._connection.pending.pop(stream_id, None)
        if response.status.code != CODES["OK"]:
            raise RpcError(CODE_NAMES.get(response.status.code, "UNKNOWN"), response.status.message)
        return response_type.FromString(response.payload)

    async def close(self) -> None:
        if self._connection.transport is not None:
            self._connection.transport.close()
        await self._connection.closed

    async def __aenter__(self) -> TtrpcClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
