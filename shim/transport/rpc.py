"""What both transports share: the handler registry, the per-call context and status codes.

A service implementation is registered once and served unchanged over ttrpc (what containerd
speaks to shims) and over gRPC. Handlers are `handler(request, context) -> response message`,
either `async def` (run on the event loop: the choice for anything that waits, such as Wait) or
plain functions (run in a worker thread, so a blocking one cannot stall other calls). A failure
is reported with the gRPC code named by the exception's `grpc_code` (the `wasm_oci.errors`
classes, or `RpcError` for any other code); this module never imports grpc.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from wasm_oci.errors import GRPC_CODES, RpcError
from wasm_oci.shim.threadname import RPC_HANDLER, name_this_thread

log = logging.getLogger(__name__)

CODES = GRPC_CODES
CODE_NAMES: dict[int, str] = {number: name for name, number in CODES.items()}

# containerd 2.x sends the namespace under the first key, 1.6/1.7 over ttrpc under the second.
NAMESPACE_KEYS = ("containerd-namespace", "containerd-namespace-ttrpc")

# Python errors that have an obvious status, as ttrpc's Go server maps os/context errors.
_BUILTIN_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (asyncio.CancelledError, "CANCELLED"),
    (TimeoutError, "DEADLINE_EXCEEDED"),
    (FileNotFoundError, "NOT_FOUND"),
    (FileExistsError, "ALREADY_EXISTS"),
    (PermissionError, "PERMISSION_DENIED"),
    (NotImplementedError, "UNIMPLEMENTED"),
)


def status_of(exc: BaseException) -> tuple[str, str]:
    """The (code name, message) that reports `exc` to a remote caller."""
    code = getattr(exc, "grpc_code", None)
    if not (isinstance(code, str) and code in CODES and code != "OK"):
        code = next((name for kind, name in _BUILTIN_CODES if isinstance(exc, kind)), "UNKNOWN")
    return code, str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler knows about its call besides the request."""

    service: str
    method: str
    # Lower-cased keys; a key may carry several values.
    metadata: Mapping[str, tuple[str, ...]]
    # time.monotonic() by which the caller gives up, or None.
    deadline: float | None = None

    @property
    def namespace(self) -> str:
        """The containerd namespace the call is made in ("" when absent)."""
        for key in NAMESPACE_KEYS:
            values = self.metadata.get(key)
            if values:
                return values[0]
        return ""

    def time_remaining(self) -> float | None:
        """Seconds left before the deadline, or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()


def metadata_of(pairs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    """Group (key, value) pairs by lower-cased key, keeping their order."""
    grouped: dict[str, tuple[str, ...]] = {}
    for name, value in pairs:
        key = name.lower()
        grouped[key] = (*grouped.get(key, ()), value)
    return grouped


Handler: TypeAlias = Callable[[Any, Context], Message | Awaitable[Message]]


class Method(NamedTuple):
    request_type: type[Message]
    handler: Handler
    is_async: bool


class Registry:
    """Services by full name, each a map of method name to request type and handler."""

    def __init__(self, max_sync_workers: int = 32) -> None:
        self._services: dict[str, dict[str, Method]] = {}
        # Threads start on first use only.
        self._executor = ThreadPoolExecutor(
            max_sync_workers, thread_name_prefix="rpc-handler", initializer=name_this_thread, initargs=(RPC_HANDLER,)
        )

    def register(self, service: str, methods: Mapping[str, tuple[type[Message], Handler]]) -> None:
        """Serve `methods` under `service` (e.g. "containerd.task.v3.Task")."""
        if service in self._services:
            raise ValueError(f"service {service} is already registered")
        self._services[service] = {
            name: Method(request_type, handler, inspect.iscoroutinefunction(handler)) for name, (request_type, handler) in methods.items()
        }

    def register_service(self, descriptor: ServiceDescriptor, impl: object) -> None:
        """Serve `impl`'s methods named like the RPCs of a generated service descriptor;
        RPCs `impl` lacks answer UNIMPLEMENTED."""
        methods: dict[str, tuple[type[Message], Handler]] = {}
        for rpc in descriptor.methods:
            handler = getattr(impl, rpc.name, None)
            if handler is None:
                continue
            if rpc.client_streaming or rpc.server_streaming:
                raise ValueError(f"{descriptor.full_name}/{rpc.name}: streaming RPCs are not served")
            methods[rpc.name] = (GetMessageClass(rpc.input_type), handler)
        self.register(descriptor.full_name, methods)

    @property
    def services(self) -> Mapping[str, Mapping[str, Method]]:
        return self._services

    def lookup(self, service: str, method: str) -> Method:
        """The method, or RpcError UNIMPLEMENTED worded as ttrpc's Go server words it."""
        methods = self._services.get(service)
        if methods is None:
            raise RpcError("UNIMPLEMENTED", f"service {service}")
        found = methods.get(method)
        if found is None:
            raise RpcError("UNIMPLEMENTED", f"method {method}")
        return found

    async def call(self, method: Method, request: Message, context: Context) -> Message:
        """Run a handler within the call's deadline. Failures propagate; one that carries no
        status (a bug) is logged with its traceback first."""
        remaining = context.time_remaining()
        try:
            async with asyncio.timeout(None if remaining is None else max(remaining, 0.0)):
                if method.is_async:
                    response = await method.handler(request, context)  # type: ignore[misc]
                else:
                    loop = asyncio.get_running_loop()
                    response = await loop.run_in_executor(self._executor, method.handler, request, context)
        except Exception as exc:
            if status_of(exc)[0] == "UNKNOWN":
                log.exception("%s/%s failed", context.service, context.method)
            raise
        if not isinstance(response, Message):
            raise RpcError("INTERNAL", f"{context.method} returned {type(response).__name__}, not a message")
        return response
