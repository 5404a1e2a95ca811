"""Serve wasi:http/proxy components (what Spin, wasmCloud and `wasmtime serve` run) from Python.

    host = ProxyHost(engine, wasm)                 # engine: wasm_oci.engine.Engine; wasm: bytes
    response = host.handle(Request("GET", "/?q=1", "http", "localhost", [("accept", b"*/*")], b""),
                           Limits(memory=64 << 20, timeout=5.0))
    response.status, response.headers, response.body

Wasmtime's C API (and so wasmtime-py 50) gives the host no way to make an incoming request or
a response-outparam, nor the streams of their bodies, so the guest's whole view of HTTP and
of wasi:io is hosted here, in Python (streams, http_types, outgoing),
on wasmtime-py's component API: host resources and host functions, whose values
values converts. Wasmtime still provides what holds no stream or pollable: the
wall clock, random, environment, exit and terminal interfaces. A component's imports of
wasi:filesystem and wasi:sockets (a toolchain's libc imports them even for a proxy) are
answered here too, as a host without files or network: no preopens, access denied.

Each request gets a fresh Store and instance, run as an engine Execution (runner.py): its
memory limit, store limits and epoch-based kill are the engine's own. The timeout is the
host's: at the deadline it stops the guest's waits and kills it (504). Like `wasmtime serve`,
a guest that traps, or returns without setting a response, gets a 500; so does one that sets
an error-code instead of a response. A response body over `Limits.max_response` is a 502.

`handle(..., stream=True)` returns as soon as the guest has set its response: the body is then
an iterator of chunks that the guest produces meanwhile, with back-pressure on its writes; a
body the guest does not finish raises BodyAborted at its end, so a server can cut the
connection rather than send a short body that looks whole.

Outgoing requests (wasi:http/outgoing-handler) are refused with HTTP-request-denied unless an
Outbound policy allows their host (outgoing).

Cost per request (2 cores, median): ~0.6 ms for a hand-written guest; ~11 ms for a
componentize-py one, of which ~8 ms is instantiation copying its ~20 MB memory image (the
engine keeps memory_init_cow off for its memory accounting, memory.py) and ~2.5 ms its Python.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import wasmtime
import wasmtime.component as wc

from wasm_oci.binary import sniff
from wasm_oci.engine import cache
from wasm_oci.engine.program import Program, unsatisfied_import
from wasm_oci.engine.proxy import http_types, streams, values
from wasm_oci.engine.proxy.fields import FORBIDDEN, HeaderError
from wasm_oci.engine.proxy.fields import Fields as FieldMap
from wasm_oci.engine.proxy.http_types import Exchange, OutgoingBody
from wasm_oci.engine.proxy.outgoing import Outbound, Sender, denied
from wasm_oci.engine.proxy.streams import Console, InputStream, Pipe
from wasm_oci.engine.result import RunResult, Stop
from wasm_oci.engine.runner import Engine, Execution
from wasm_oci.engine.spec import RunSpec
from wasm_oci.errors import InvalidWasm, NoEntryPoint

__all__ = ["HANDLER", "BodyAborted", "Limits", "Outbound", "ProxyHost", "Request", "Response"]

HANDLER = "wasi:http/incoming-handler@0.2."
_HOSTED = ("wasi:io/", "wasi:clocks/monotonic-clock", "wasi:cli/stdin", "wasi:cli/stdout", "wasi:cli/stderr", "wasi:http/")
"""Interfaces implemented here (each prefix names whole interfaces)."""
_ABSENT = ("wasi:filesystem/", "wasi:sockets/")
"""Interfaces answered as by a host with no files and no network."""
_FUNCTIONS = {**streams.FUNCTIONS, **http_types.FUNCTIONS}
_KIND = "wasi-http-proxy"
"""The compile cache's kind for these components: compiled unwrapped (no polls.wrap), unlike a command's."""
_CHUNK = 64 * 1024


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


Body = bytes | bytearray | memoryview | Readable | Iterable[bytes]


@dataclass(frozen=True)
class Request:
    """What the guest's incoming-request shows. `body`: the bytes, or a file-like object
    (read on demand while the guest reads, so it may block), or an iterable of chunks."""

    method: str
    path_with_query: str | None
    scheme: str | None = "http"
    authority: str | None = None
    headers: Sequence[tuple[str, bytes | str]] = ()
    body: Body = b""


@dataclass(frozen=True)
class Limits:
    """memory: bytes all the request's linear memories may hold (None: no limit); timeout:
    seconds from the start of the request until the guest is stopped; max_response: bytes of
    a response body collected (handle without stream); max_output: bytes of each of stdout and
    stderr kept; window: bytes of a streamed body held while the reader catches up."""

    memory: int | None = None
    timeout: float | None = None
    max_response: int = 64 * 1024 * 1024
    max_output: int = 64 * 1024
    window: int = 256 * 1024


class BodyAborted(Exception):
    """The guest did not finish the body it was sending (it dropped it, trapped, was stopped)."""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, bytes]]
    body: bytes | Iterator[bytes]
    trailers: list[tuple[str, bytes]] | None = None
    error: str | None = None
    """Why the host answered instead of the guest (a trap, no response, the timeout), else None."""
    _run: _Run | None = field(default=None, repr=False)

    @property
    def stdout(self) -> bytes:
        """What the guest wrote to its stdout so far (up to Limits.max_output): all of it once
        its run has ended (at once for a buffered response, after the body when streamed)."""
        return b"" if self._run is None else bytes(self._run.stdout)

    @property
    def stderr(self) -> bytes:
        """The same for its stderr."""
        return b"" if self._run is None else bytes(self._run.stderr)

    def result(self, timeout: float | None = None) -> RunResult | None:
        """How the guest's run ended (None while it still runs after `timeout`)."""
        return None if self._run is None else self._run.wait(timeout)

    def close(self) -> None:
        """Stop the guest if it still runs (a streamed body its reader gave up)."""
        if self._run is not None:
            self._run.stop()


class _ResourceIds:
    """Host type ids for the resource types a component imports (one per distinct type)."""

    def __init__(self) -> None:
        self.known: list[tuple[wc.ResourceType, int]] = []
        self._ids = itertools.count(1)

    def __call__(self, ty: wc.ResourceType) -> int:
        for known, host_id in self.known:
            if known == ty:
                return host_id
        host_id = next(self._ids)
        self.known.append((ty, host_id))
        return host_id


def _drop(_store: wasmtime.StoreContext, rep: int) -> None:
    context = streams.current_or_none()
    if context is not None:
        context.drop(rep)


def _absent(interface: str, name: str, ty: wc.FuncType) -> Callable[..., Any]:
    """A wasi:filesystem or wasi:sockets function of a host without files or network."""
    result = ty.result
    if name == "get-directories":
        return list
    if isinstance(result, wc.ResultType) and isinstance(result.err, wc.EnumType):
        names = result.err.names
        denial = next((case for case in ("access-denied", "access", "not-supported") if case in names), None)
        if denial is not None:
            return lambda *_args: wc.Variant("err", denial)

    def refuse(*_args: Any) -> None:
        raise values.HostError(f"{interface}#{name} is not available to a wasi:http proxy guest")

    return refuse


def _missing(interface: str, name: str) -> Callable[..., Any]:
    def refuse(*_args: Any) -> None:
        raise values.HostError(f"{interface}#{name} is not implemented by this host")

    return refuse


class ProxyHost:
    """Runs one wasi:http/proxy component, a fresh instance per request (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        component: bytes | wc.Component,
        name: str = "app.wasm",
        outbound: Outbound | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """outbound: the outgoing requests guests may make (None: none, each refused with
        HTTP-request-denied); env: the guest's environment variables."""
        self.engine, self.name = engine, name
        self.env = dict(env or {})
        self.send: Callable[..., Any] = denied if outbound is None or not outbound.allow else Sender(outbound)
        if isinstance(component, wc.Component):
            self.component, self.digest = component, f"component:{id(component)}"
        else:
            self.digest = "sha256:" + hashlib.sha256(component).hexdigest()
            self.component = self._compile(bytes(component))
        wasm_engine = engine.wasmtime
        exports = self.component.type.exports(wasm_engine)
        handler = next((export for export in exports if export.startswith(HANDLER)), None)
        if handler is None:
            raise NoEntryPoint(f"{name}: component exports no {HANDLER}x (exports: {', '.join(exports) or 'none'})")
        outer = self.component.get_export_index(handler)
        index = self.component.get_export_index("handle", outer) if outer else None
        handle_type = exports[handler].ty
        if index is None or not isinstance(handle_type, wc.ComponentInstanceType):
            raise NoEntryPoint(f"{name}: {handler} has no handle function")
        self.handle_index = index
        self.resource_ids = _ResourceIds()
        self.linker = self._linker()
        handle = handle_type.exports(wasm_engine)["handle"].ty
        assert isinstance(handle, wc.FuncType)
        request, outparam = (ty for _, ty in handle.params)
        assert isinstance(request, wc.OwnType) and isinstance(outparam, wc.OwnType)
        self.request_type, self.outparam_type = self.resource_ids(request.ty), self.resource_ids(outparam.ty)

    def _compile(self, wasm: bytes) -> wc.Component:
        try:
            kind = sniff(wasm)
        except InvalidWasm as exc:
            raise InvalidWasm(f"{self.name}: {exc}") from None
        if kind != "component":
            raise NoEntryPoint(f"{self.name}: a core module cannot be a wasi:http proxy (it must be a component)")
        loader = self.engine.loader
        key = cache.key(self.digest, _KIND, loader.build)
        try:
            artifact = loader.cache.get(key)
        except cache.CorruptEntry:
            artifact = None
        if artifact is not None:
            try:
                return wc.Component.deserialize(self.engine.wasmtime, artifact)
            except wasmtime.WasmtimeError:
                loader.cache.discard(key)
        try:
            compiled = wc.Component(self.engine.wasmtime, wasm)
        except wasmtime.WasmtimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise InvalidWasm(f"{self.name}: invalid WebAssembly component: {lines[-1] if lines else 'rejected by wasmtime'}") from None
        loader.cache.put(key, bytes(compiled.serialize()))
        return compiled

    def _linker(self) -> wc.Linker:
        """Wasmtime's WASI 0.2, with every interface the component imports that holds a stream,
        a pollable or an HTTP resource defined here instead, under the exact name it imports."""
        wasm_engine = self.engine.wasmtime
        linker = wc.Linker(wasm_engine)
        linker.add_wasip2()
        linker.allow_shadowing = True
        with linker.root() as root:
            for name, item in self.component.type.imports(wasm_engine).items():
                interface = name.partition("@")[0]
                hosted = name.startswith(_HOSTED)
                if not hosted and not name.startswith(_ABSENT):
                    continue
                instance_type = item.ty
                if not isinstance(instance_type, wc.ComponentInstanceType):
                    continue
                functions = _FUNCTIONS.get(interface, {})
                with root.add_instance(name) as instance:
                    for export, extern in instance_type.exports(wasm_engine).items():
                        ty = extern.ty
                        if isinstance(ty, wc.ResourceType):
                            instance.add_resource(export, wc.ResourceType.host(self.resource_ids(ty)), _drop)
                        elif isinstance(ty, wc.FuncType):
                            call = functions.get(export) if hosted else _absent(interface, export, ty)
                            values.define(instance, export, ty, call or _missing(interface, export), self.resource_ids, _record_failure)
        return linker

    def handle(self, request: Request, limits: Limits | None = None, stream: bool = False) -> Response:
        """Run the guest on `request` (see the module docstring); with `stream`, return as soon
        as it has set its response, the body then an iterator the guest fills meanwhile."""
        limits = limits or Limits()
        run = _Run(self, request, limits, stream)
        return run.respond()


def _record_failure(error: BaseException) -> None:
    context = streams.current_or_none()
    if context is not None:
        context.failed(error)


class _Entry:
    """The Program entry of one request: instantiate, then call `handle` with the request."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    def instantiate(self, store: wasmtime.Store) -> Callable[[], int]:
        host, exchange = self.run.host, self.run.exchange
        streams.use(exchange)
        try:
            instance = host.linker.instantiate(store, host.component)
        finally:
            streams.use(None)
        handle = instance.get_func(store, host.handle_index)
        assert handle is not None  # the index came from this component's own exports

        def call() -> int:
            streams.use(exchange)
            try:
                request, outparam = self.run.incoming()
                values.call_with_resources(handle, store, [(request, host.request_type), (outparam, host.outparam_type)])
            finally:
                streams.use(None)
            return 0

        return call


class _Run:
    """One request's run of the guest."""

    def __init__(self, host: ProxyHost, request: Request, limits: Limits, stream: bool) -> None:
        self.host, self.request, self.limits, self.streamed = host, request, limits, stream
        self.exchange = Exchange(limits.window if stream else None, None if stream else limits.max_response, host.send)
        self.stdout, self.stderr = bytearray(), bytearray()
        self.exchange.stdout = Console(self.stdout.extend, limits.max_output)
        self.exchange.stderr = Console(self.stderr.extend, limits.max_output)
        self.headers = _request_headers(request.headers)
        program = Program(host.name, host.digest, "component", "memory", 0.0, _Entry(self))
        spec = RunSpec(args=(host.name,), env=host.env, memory_limit=limits.memory)
        self.execution = Execution(host.engine, program, spec)
        self.timed_out = False
        self.ended = threading.Event()
        self.result: RunResult | None = None

    def incoming(self) -> tuple[int, int]:
        exchange, request = self.exchange, self.request
        pipe = Pipe(exchange)
        pull = _puller(request.body, pipe)
        body = InputStream(pipe, pull)
        return http_types.incoming_request(
            exchange, request.method, request.path_with_query, request.scheme, request.authority, self.headers, body
        )

    def stop(self) -> None:
        self.execution.kill()
        self.exchange.stop()

    def _time_out(self) -> None:
        self.timed_out = True
        self.stop()

    def respond(self) -> Response:
        try:
            self.execution.prepare()
        except Exception as exc:
            missing = unsatisfied_import(exc, self.host.name) if isinstance(exc, wasmtime.WasmtimeError) else None
            raise missing or exc from None
        deadline = None
        if self.limits.timeout is not None:
            deadline = self.host.engine.deadlines.at(time.monotonic() + self.limits.timeout, self._time_out)
        if not self.streamed:
            try:
                result = self._run()
            finally:
                if deadline is not None:
                    deadline.cancel()
            return self._buffered(result)
        threading.Thread(target=self._run_then_cancel, args=(deadline,), name=f"wasm-oci proxy {self.host.name}", daemon=True).start()
        self._wait_for_head()
        return self._streamed()

    def wait(self, timeout: float | None) -> RunResult | None:
        self.ended.wait(timeout)
        return self.result

    def _run(self) -> RunResult:
        result = None
        try:
            result = self.execution.run()
            if self.timed_out:
                result = Stop("timeout").result(result.elapsed)
        finally:
            self.result = result
            self.exchange.close()
            self.ended.set()
            self.exchange.responded.set()
        return result

    def _run_then_cancel(self, deadline: Any) -> None:
        try:
            self._run()
        finally:
            if deadline is not None:
                deadline.cancel()

    def _wait_for_head(self) -> None:
        self.exchange.responded.wait()

    def _failure(self, result: RunResult | None) -> Response | None:
        """The host's answer when the guest gave none that can be sent."""
        exchange = self.exchange
        if self.timed_out:
            return self._error(504, f"timed out after {self.limits.timeout}s")
        if result is not None and result.reason == "oom":
            return self._error(500, result.message or "out of memory")
        if exchange.failure is not None:
            return self._error(500, f"host error: {type(exchange.failure).__name__}: {exchange.failure}")
        if exchange.response is None and exchange.response_error is not None:
            return self._error(500, f"the guest answered with the error {_describe(exchange.response_error)}")
        if result is not None and result.reason not in ("exit",):
            return self._error(500, result.message or result.reason)
        if exchange.response is None:
            if result is not None and result.status != 0:
                return self._error(500, f"the guest exited with status {result.status} before it set a response")
            return self._error(500, "the guest returned without setting a response")
        return None

    def _buffered(self, result: RunResult) -> Response:
        response = self.exchange.response
        if response is not None and response.body is not None and response.body.pipe.over_limit:
            return self._error(502, f"the response body passed the {self.limits.max_response}-byte limit")  # whatever the guest did then
        failure = self._failure(result)
        if failure is not None:
            return failure
        assert response is not None
        body = response.body
        if body is not None and body.pipe.error is not None:
            return self._error(500, body.pipe.error.message)
        data = b"" if body is None else body.pipe.drain()
        trailers = None if body is None or body.trailers is None else list(body.trailers.entries)
        return self._response(response.status, list(response.headers.entries), data, trailers)

    def _streamed(self) -> Response:
        response = self.exchange.response
        if response is None:
            failure = self._failure(self.wait(None))
            assert failure is not None  # no response was set
            return failure
        if self.exchange.failure is not None:
            failure = self._failure(None)
            assert failure is not None
            self.stop()
            return failure
        answer = self._response(response.status, list(response.headers.entries), b"", None)
        answer.body = iter(()) if response.body is None else self._chunks(response.body, answer)
        return answer

    def _chunks(self, body: OutgoingBody, answer: Response) -> Iterator[bytes]:
        """The body as the guest writes it; at its end, the trailers are the answer's."""
        pipe = body.pipe
        finished = False
        try:
            while True:
                data = pipe.take_waiting(_CHUNK)
                if data:
                    yield data
                    continue
                if pipe.error is not None:
                    raise BodyAborted(pipe.error.message)
                if pipe.at_end():
                    finished = True
                    answer.trailers = None if body.trailers is None else list(body.trailers.entries)
                    return
        finally:
            if not finished:
                pipe.abandon()
                self.stop()

    def _response(self, status: int, headers: list[tuple[str, bytes]], body: bytes | Iterator[bytes], trailers: Any) -> Response:
        return Response(status, headers, body, trailers, None, self)

    def _error(self, status: int, message: str) -> Response:
        return Response(status, [("content-type", b"text/plain; charset=utf-8")], b"", None, message, self)


def _describe(error: Any) -> str:
    if isinstance(error, wc.Variant):
        return error.tag if error.payload is None else f"{error.tag}({error.payload!r})"
    return repr(error)


def _request_headers(headers: Sequence[tuple[str, bytes | str]]) -> FieldMap:
    """The headers the guest sees: those a guest may not set itself (hop-by-hop ones, `host`:
    the authority carries it) are left out, as `wasmtime serve` does."""
    try:
        return FieldMap(
            [
                (name, value.encode("latin-1") if isinstance(value, str) else bytes(value))
                for name, value in headers
                if name.lower() not in FORBIDDEN
            ],
            mutable=False,
            guest=False,
        )
    except HeaderError as exc:
        raise ValueError(f"invalid request header ({exc.case})") from None


def _puller(body: Body, pipe: Pipe) -> Callable[[int], bytes] | None:
    """Fill `pipe` with a body given whole; a pull function for one read on demand."""
    if isinstance(body, bytes | bytearray | memoryview):
        if body:
            pipe.put(bytes(body))
        pipe.finish()
        return None
    read = getattr(body, "read", None)
    if callable(read):
        return lambda size: bytes(read(size))
    chunks = iter(body)  # type: ignore[arg-type]
    return lambda _size: next(chunks, b"")
