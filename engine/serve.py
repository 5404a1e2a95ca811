"""`wasm-oci serve`: an HTTP trigger that runs a fresh guest instance per request, CGI-style.

The server takes a thread per connection, and runs at most `concurrency` guests at once (a
slot each). A guest runs on its request's own thread, unless guests need threads of their own
(the shim's on_guest_thread puts those in the container's cgroup): then it runs on one of up to
`concurrency` long-lived guest threads (a thread started per request, as `Execution.start()`
does, cost ~40% more CPU per small request; the hand-over to a guest thread and back ~12%).
Either way a request is answered at its deadline even when its guest sits in a host call no
stop can interrupt: its watcher (the request's thread waiting for a guest thread, or the
server's one watcher thread, every _WATCH, for the guests on their request's thread) stops it
at the deadline, and if it has not ended _GRACE later answers 504 for it (from another thread,
closing the connection, when the stuck guest holds the request's own). Such a guest keeps its
thread, and so its slot, until the call returns: stuck guests, too, are at most `concurrency`.
A request takes its slot before its body is read: what waits for a slot stays in the kernel's
socket buffers. Every request gets the run spec's limits and a clean 5xx without guest details
when its guest fails; what went wrong, with the guest's stderr, goes to the server's log
instead. The guest's stdout and stderr land in anonymous memory files (memfd), emptied and
reused by the next request once the guest is done with them: no Python code runs per guest
write, and the watcher looks at their size.

A wasi:http proxy component is answered through the proxy host (engine/proxy) instead, its
guest on a thread the host starts for the request, and its response streamed: the head goes
out once the guest sets it, the body as the guest writes it (chunked, or ended by the close
for an HTTP/1.0 client; the guest's writes wait while the client is behind), and a body the
guest does not finish, or one past max_response, ends in a reset rather than an end. The
request keeps its slot until the guest's run ends.

HTTP/1.1 is parsed here rather than by http.server, which accepts HTTP/0.9, obs-folded and
malformed fields, signed or conflicting Content-Lengths, and has no bound on how long a
client may take to send a request (RFC 9112's framing rules are applied strictly: a message
whose length two parsers could read differently is refused, never guessed).
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import functools
import io
import logging
import math
import os
import queue
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasm_oci import __version__
from wasm_oci.engine import cgi
from wasm_oci.engine.program import Program
from wasm_oci.engine.result import RunResult
from wasm_oci.engine.runner import Engine, Execution
from wasm_oci.engine.spec import RunSpec
from wasm_oci.errors import WasmOciError

if TYPE_CHECKING:
    from wasm_oci.engine.proxy import ProxyHost
    from wasm_oci.engine.proxy import Response as ProxyResponse

log = logging.getLogger(__name__)

SERVER = f"wasm-oci/{__version__}"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_WATCH = 0.005
"""Seconds between two looks at a running guest's output sizes: what it can write past
max_response before it is stopped (a single write is bounded by its memory limit)."""
_GRACE = 0.1
"""Seconds a stopped guest has to end before it counts as stuck in a host call."""
_STUCK = "; stuck in a host call, it keeps its slot until the call returns"
_WATCHER_IDLE = 1.0
"""Seconds without a guest to watch before the watcher stops polling."""
_LINGER = 1.0
"""Seconds a refused client may go on sending what was left unread before the connection
closes (closing with unread data resets it, and the client might never read the refusal)."""
_CHUNK_LINE = 4096
_IN_MEMORY = 64 << 10
"""Bodies up to this size go to the guest as bytes; larger and chunked ones are spooled to a
memfd, 64 KiB at a time, that Wasmtime reads: a body-sized allocation here would, once freed,
stay in glibc's per-thread arenas (measured: +850 MiB of RSS after 40 bodies of 15 MiB)."""

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_NAME = re.compile(_TOKEN)
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_LENGTH = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_ABSOLUTE = re.compile(r"https?://[^/?#]*(.*)", re.IGNORECASE)


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost the server, whatever its client or its guest does."""

    max_body: int = 16 << 20
    max_response: int = 64 << 20
    """Each of the guest's stdout and stderr, watched while it runs: it is stopped (502) soon after passing it.
    A proxy's response body: the guest is stopped and the connection cut before a byte past it goes out."""
    concurrency: int = os.cpu_count() or 1
    queue_timeout: float = 10.0
    """Seconds a request waits for a guest slot before a 503."""
    max_request_line: int = 8 << 10
    """Bytes, CRLF included; longer is a 414."""
    max_header_bytes: int = 32 << 10
    """All header lines together (and again all trailer lines); more is a 431."""
    max_headers: int = 100
    header_timeout: float = 10.0
    """Seconds from a request's first byte to the end of its header section (slowloris); then a 408."""
    body_timeout: float = 60.0
    """Seconds to receive the whole body, from when a guest slot is free for it; then a 408."""
    idle_timeout: float = 60.0
    """Seconds a keep-alive connection may wait for its next request, and a response may take to send."""


@dataclass
class Counters:
    """What a server has answered since it started (the shim's Stats reports them)."""

    requests: int = 0
    """Requests answered, refusals included."""
    failed: int = 0
    """Answered with a 5xx."""
    bytes_in: int = 0
    """Request bodies received."""
    bytes_out: int = 0
    """Response bodies sent."""
    guest_cpu_ns: int = 0
    """CPU time of the guest threads, up to their last finished run."""


class CgiServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        engine: Engine,
        program: Program | ProxyHost,
        spec: RunSpec,
        limits: ServeLimits = ServeLimits(),
        *,
        listener: socket.socket | None = None,
        on_guest_thread: Callable[[], None] | None = None,
        access_log: Callable[[str], None] | None = None,
        error_log: Callable[[str], None] | None = None,
    ) -> None:
        """`spec` is the template for every request: args, env, preopens, memory limit, timeout.

        `listener`: a socket already bound and listening (the shim opens it in the task's network
        namespace) instead of binding `address`. `on_guest_thread` runs first on every guest
        thread (the shim puts it in the container's cgroup). `access_log` gets one line per
        response; `error_log` what went wrong when a guest fails (default: this module's log)."""
        self.engine, self.spec, self.limits = engine, spec, limits
        self.program: Program | None = program if isinstance(program, Program) else None
        self.proxy: ProxyHost | None = None if isinstance(program, Program) else program
        """A wasi:cli command or module run CGI-style, or a wasi:http proxy component."""
        self._pinned = {name: value for name, value in spec.env.items() if name.startswith("HTTP_")}
        """What the operator set among the names request headers map to: no client replaces it."""
        self._slots = threading.BoundedSemaphore(limits.concurrency)
        self._runs: queue.SimpleQueue[Execution | None] = queue.SimpleQueue()
        self.on_guest_thread, self.access_log = on_guest_thread, access_log
        self.error_log: Callable[[str], None] = error_log or log.warning
        self.counters = Counters()
        self._state = threading.Condition()
        self._guest_threads = self._busy = self._in_flight = 0
        """Guest threads started (one per slot ever used at once: an idle server has none),
        slots held, requests between their head and their response."""
        self._connections: dict[socket.socket, bool] = {}
        """Open connections, and whether each is between requests (a drain closes those at once)."""
        self._executions: set[Execution] = set()
        self._spare: list[_Outputs] = []
        """Emptied stdout/stderr memfd pairs for the next requests (at most one per slot used at once)."""
        self._spare_lock = threading.Lock()
        self._closed = False
        self._watching: _Watcher | None = None
        """Watches the guests that run on their request's thread (started with the first)."""
        self.draining = False
        super().__init__(address, _Handler, bind_and_activate=listener is None)  # on failure calls server_close: all set above
        if listener is not None:
            self.socket.close()
            self.socket = listener
        self.host, self.port = self.socket.getsockname()[:2]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def server_close(self) -> None:
        super().server_close()
        with self._state:
            threads = self._guest_threads
            self._guest_threads = self.limits.concurrency  # no more guest threads start
        for _ in range(threads):
            self._runs.put(None)
        with self._spare_lock:
            self._closed = True
            spare, self._spare = self._spare, []
            watching = self._watching
        for outputs in spare:
            outputs.close()
        if watching is not None:
            watching.close()

    def slot(self) -> _Slot | None:
        """A guest slot, or None when none came free within the queue timeout."""
        if not self._slots.acquire(timeout=self.limits.queue_timeout):
            return None
        with self._state:
            self._busy += 1
            start = self._busy > self._guest_threads
            self._guest_threads += start
        if start:
            threading.Thread(target=self._guest_thread, name=f"wasm-oci guest {self._guest_threads}", daemon=True).start()
        return _Slot(self)

    def _freed(self) -> None:
        with self._state:
            self._busy -= 1
        self._slots.release()

    def _guest_thread(self) -> None:
        if self.on_guest_thread is not None:
            self.on_guest_thread()
        spent = time.thread_time_ns()
        while (execution := self._runs.get()) is not None:
            try:
                execution.run()
            except Exception:  # the guest's own failures are its result: this is the server's
                log.exception("guest run failed")
            finally:
                now = time.thread_time_ns()
                with self._state:
                    self._executions.discard(execution)
                    self.counters.guest_cpu_ns += now - spent
                spent = now
                self._freed()

    def executions(self) -> list[Execution]:
        """The guests running now."""
        with self._state:
            return list(self._executions)

    def idle(self, conn: socket.socket, between_requests: bool) -> bool:
        """Record where a connection is; False when it must close now (a drain has begun)."""
        with self._state:
            if self.draining and between_requests:
                self._connections.pop(conn, None)
                return False
            self._connections[conn] = between_requests
            self._in_flight += not between_requests
            return True

    def done(self, conn: socket.socket, closing: bool) -> None:
        """A response was sent on `conn` (or it ended); wake a drain waiting for the last one."""
        with self._state:
            if self._connections.get(conn) is False:
                self._in_flight -= 1
            if closing:
                self._connections.pop(conn, None)
            else:
                self._connections[conn] = True
            self._state.notify_all()

    def drain(self, grace: float) -> bool:
        """Stop taking requests (the caller has stopped accepting), close idle connections and
        wait up to `grace` seconds for the requests in flight; whether they all ended."""
        deadline = time.monotonic() + grace
        with self._state:
            self.draining = True
            for conn, between in self._connections.items():
                if between:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)
            return self._state.wait_for(lambda: self._in_flight == 0, max(0.0, deadline - time.monotonic()))

    def abort(self) -> None:
        """End everything now: stop the guests running and cut every connection."""
        with self._state:
            self.draining = True
            executions, conns = list(self._executions), list(self._connections)
        for execution in executions:
            execution.kill()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def count(self, status: int, bytes_in: int, bytes_out: int) -> None:
        with self._state:
            counters = self.counters
            counters.requests += 1
            counters.failed += status >= 500
            counters.bytes_in += bytes_in
            counters.bytes_out += bytes_out

    def respond(
        self, request: cgi.Request, body: bytes | Path, slot: _Slot, rescue: Callable[[cgi.Response], None] | None = None
    ) -> cgi.Response | None:
        """Run the guest for `request` on `slot`, which is given back when the run really ends.

        With `rescue` (how to answer the request from another thread) and no on_guest_thread, the
        guest runs on this thread: the server's watcher calls `rescue` with the answer if the guest
        is still running _GRACE after it was stopped, and this returns None once its guest is done
        (the request was answered). Else the guest runs on a guest thread while this one watches it.
        A proxy's answer is a _Streamed response once its guest has set one: `_Handler._send`
        sends its body and gives `slot` back once the guest's run ends."""
        if self.proxy is not None:
            return self._proxied(request, body, slot)
        outputs = self._outputs()
        reusable = False
        try:
            response, reusable = self._run(request, body, slot, outputs, rescue)
            return response
        finally:
            self._give_back(outputs, reusable)

    def _proxied(self, request: cgi.Request, body: bytes | Path, slot: _Slot) -> cgi.Response:
        """A wasi:http proxy's answer: the host runs the guest within the request's limits
        (memory, timeout) and answers for it when it fails before it sets its response, as
        `wasmtime serve` does (a bare 500; 504 at the timeout; the details to the error log); the
        guest sees the request as it came. Once the guest has set its response, the answer is a
        _Streamed one: its body comes as the guest writes it, and `slot` and the request body
        stay the guest's until its run ends (_Handler._stream)."""
        from wasm_oci.engine.proxy import Limits, Request

        assert self.proxy is not None
        authority = next((value for name, value in request.headers if name.lower() == "host"), None)
        limits = Limits(memory=self.spec.memory_limit, timeout=self.spec.timeout, max_response=self.limits.max_response)
        held = contextlib.ExitStack()  # the request body, open for the guest until its run ends
        try:
            content = body if isinstance(body, bytes) else held.enter_context(body.open("rb"))
            answer = self.proxy.handle(
                Request(request.method, request.target, "http", authority, request.headers, content), limits, stream=True
            )
        except WasmOciError as exc:  # it could not even start (a missing import)
            held.close()
            return self._error(request, HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except BaseException:
            held.close()
            raise
        if answer.error is not None:  # it failed before its response: its run has ended
            held.close()
            self.error_log(f"{request.method} {request.target} -> {answer.status}: {answer.error}" + _stderr_of(answer.stderr))
            return cgi.Response(answer.status, _reason(answer.status), [("Content-Type", "text/plain; charset=utf-8")], b"")
        if answer.status < 200:  # a client would take a 1xx for an interim response, the body for the next one
            answer.close()
            answer.result(_GRACE)
            held.close()
            return self._error(request, HTTPStatus.INTERNAL_SERVER_ERROR, f"the guest's response has the status {answer.status}")
        release = slot.hold()

        def finish() -> None:
            held.close()
            release()

        headers = [(name, value.decode("latin-1")) for name, value in answer.headers if name.lower() not in cgi.HOP_BY_HOP]
        return _Streamed(answer.status, _reason(answer.status), headers, b"", answer, finish)

    def _run(
        self, request: cgi.Request, body: bytes | Path, slot: _Slot, outputs: _Outputs, rescue: Callable[[cgi.Response], None] | None
    ) -> tuple[cgi.Response | None, bool]:
        """The response, and whether the guest is done with `outputs` (they can serve another request)."""
        stdout, stderr = outputs.stdout, outputs.stderr
        here = rescue is not None and self.on_guest_thread is None
        spec = replace(
            self.spec,
            env={**self.spec.env, **cgi.environ(request), **self._pinned},
            stdin=body,
            stdout=outputs.stdout_path,
            stderr=outputs.stderr_path,
            # on its request's thread the watcher stops it at its deadline: an engine timer on
            # top would wake the engine's deadline thread once per request, to drop the timer
            timeout=None if here else self.spec.timeout,
        )
        assert self.program is not None  # a proxy is answered by _proxied
        execution = self.engine.execution(self.program, spec)
        try:
            execution.prepare()
        except WasmOciError as exc:  # the guest could not even start (a missing import, a preopen gone)
            return self._error(request, HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)), True
        if not here:
            slot.run(execution)
            result, stopped = self._watch(execution, stdout, stderr)
            if result is None:
                stopped += _STUCK
        else:
            assert rescue is not None
            watched = _Watched(self, request, execution, outputs, rescue)
            watcher = self._watcher()
            watcher.add(watched)
            try:
                result = slot.run_here(execution)
            finally:
                watcher.discard(watched)  # the watcher is done with it: `stopped` and `rescued` are final
            if watched.rescued:
                watched.sent.wait()  # the connection is the rescuer's until then
                return None, False
            stopped = watched.stopped
            if result is None and not stopped:
                return self._error(request, HTTPStatus.INTERNAL_SERVER_ERROR, "the guest's run failed (see the log)"), True
        if stopped:  # sealed, or still held by a guest stuck in a host call: not for another request
            timed_out = stopped.startswith("timed out")
            return self._error(request, HTTPStatus.GATEWAY_TIMEOUT if timed_out else HTTPStatus.BAD_GATEWAY, stopped), False
        assert result is not None
        if result.reason != "exit" or result.status != 0:
            return self._failed(request, result, os.pread(stderr, 2048, 0)), True
        size = os.fstat(stdout).st_size
        if size > self.limits.max_response:
            return self._error(
                request, HTTPStatus.BAD_GATEWAY, f"response of {size} bytes is over the {self.limits.max_response}-byte limit"
            ), True
        try:
            return cgi.parse_response(os.pread(stdout, size, 0)), True
        except cgi.MalformedResponse as exc:
            return self._error(request, HTTPStatus.BAD_GATEWAY, str(exc)), True

    def _watcher(self) -> _Watcher:
        with self._spare_lock:
            if self._watching is None:
                self._watching = _Watcher(self.limits.max_response)
            return self._watching

    def _outputs(self) -> _Outputs:
        with self._spare_lock:
            if self._spare:
                return self._spare.pop()
        return _Outputs()

    def _give_back(self, outputs: _Outputs, reusable: bool) -> None:
        """Keep an ended guest's memfds, emptied, for the next request; close any other."""
        if reusable:
            try:
                outputs.empty()
            except OSError:
                reusable = False
        with self._spare_lock:
            if reusable and not self._closed:
                self._spare.append(outputs)
                return
        outputs.close()

    def _watch(self, execution: Execution, stdout: int, stderr: int) -> tuple[RunResult | None, str]:
        """Wait for the guest on its guest thread, stopping it at the request's deadline or once its
        stdout or stderr passes max_response: its result (None if it is stuck in a host call) and
        why it was stopped."""
        timeout, cap = self.spec.timeout, self.limits.max_response
        deadline = math.inf if timeout is None else time.monotonic() + timeout
        while True:
            result = execution.wait(max(0.0, min(_WATCH, deadline - time.monotonic())))
            if result is not None:
                return result, ""
            if time.monotonic() >= deadline:
                stopped = f"timed out after {timeout}s"
                break
            sizes = {"stdout": os.fstat(stdout).st_size, "stderr": os.fstat(stderr).st_size}
            over = [name for name, size in sizes.items() if size > cap]
            if over:
                stopped = f"{over[0]} passed the {cap}-byte limit"
                break
        _seal(stdout, stderr)
        execution.kill()
        return execution.wait(_GRACE), stopped

    def _error(self, request: cgi.Request, code: HTTPStatus, detail: str) -> cgi.Response:
        """Log the detail, answer with the bare status: the client learns nothing about the guest."""
        self.error_log(f"{request.method} {request.target} -> {int(code)}: {detail}")
        return _plain(code)

    def _failed(self, request: cgi.Request, result: RunResult, stderr: bytes) -> cgi.Response:
        what = result.message or f"guest exited with status {result.status}"
        if stderr:
            what += f"; guest stderr: {stderr.decode('utf-8', 'replace').strip()!r}"
        code = HTTPStatus.GATEWAY_TIMEOUT if result.reason == "timeout" else HTTPStatus.INTERNAL_SERVER_ERROR
        return self._error(request, code, what)


class _Slot:
    """One of the server's `concurrency` guest slots: given back by the request if it runs no
    guest, else by the guest thread when the run ends."""

    def __init__(self, server: CgiServer) -> None:
        self._server = server
        self._running = False

    def run(self, execution: Execution) -> None:
        """Enter the prepared `execution` on a guest thread (one is free: this slot is its)."""
        self._running = True
        with self._server._state:
            self._server._executions.add(execution)
        self._server._runs.put(execution)

    def run_here(self, execution: Execution) -> RunResult | None:
        """Run the prepared `execution` on this thread (None if the run itself failed); the slot
        is given back when it ends."""
        self._running = True
        server = self._server
        with server._state:
            server._executions.add(execution)
        spent = time.thread_time_ns()
        try:
            return execution.run()
        except Exception:  # the guest's own failures are its result: this is the server's
            log.exception("guest run failed")
            return None
        finally:
            now = time.thread_time_ns()
            with server._state:
                server._executions.discard(execution)
                server.counters.guest_cpu_ns += now - spent
            server._freed()

    def release(self) -> None:
        if not self._running:
            self._server._freed()

    def hold(self) -> Callable[[], None]:
        """Keep the slot past `release()`, for a guest that runs on while its response is sent
        (a proxy's streamed body); what gives it back (once)."""
        self._running = True
        given_back = threading.Event()

        def give_back() -> None:
            if not given_back.is_set():
                given_back.set()
                self._server._freed()

        return give_back


@dataclass(frozen=True)
class _Streamed(cgi.Response):
    """A wasi:http proxy's response whose body its guest is still writing (`body` is empty):
    `answer` is the host's (its body an iterator of chunks, its trailers once that ends, its
    run); `finish` gives back what the run held (the guest slot, the request body) once it ended."""

    answer: ProxyResponse
    finish: Callable[[], None]


_NOT_TRAILERS = {*cgi.HOP_BY_HOP, "authorization", "cache-control", "content-encoding", "content-range", "content-type", "host"}
_NOT_TRAILERS |= {"max-forwards", "set-cookie"}
"""Fields a trailer section may not carry (RFC 9110 6.5.1: framing, routing, authentication,
what the recipient must see before the content; hyper's list)."""


def _trailer_section(trailers: list[tuple[str, bytes]] | None) -> bytes:
    """A guest's trailers as the lines of a chunked body's trailer section (the host checked
    their names and values as it does headers; those no trailer may carry are left out)."""
    return b"".join(name.encode("ascii") + b": " + value + b"\r\n" for name, value in trailers or () if name.lower() not in _NOT_TRAILERS)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _stderr_of(stderr: bytes) -> str:
    """The start of a guest's stderr, for a line of the error log."""
    text = stderr[:2048].decode("utf-8", "replace").strip()
    return f"; guest stderr: {text!r}" if text else ""


def _plain(code: HTTPStatus) -> cgi.Response:
    return cgi.Response(code, code.phrase, [("Content-Type", "text/plain; charset=utf-8")], f"{code} {code.phrase}\n".encode())


@contextlib.contextmanager
def _memfd(name: str) -> Iterator[int]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        yield fd
    finally:
        os.close(fd)


class _Outputs:
    """A guest's stdout and stderr: two memfds, and the paths Wasmtime opens them by.

    A pair serves request after request (created, closed and named anew each time they cost
    ~35 us of a request): only once its guest's store is closed (the run ended, so no file of
    it remains open) and emptied. A pair whose guest was stopped is sealed against growth, or
    still held by a guest stuck in a host call: it is closed, never reused."""

    __slots__ = ("stderr", "stderr_path", "stdout", "stdout_path")

    def __init__(self) -> None:
        self.stdout = os.memfd_create("stdout", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            self.stderr = os.memfd_create("stderr", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except BaseException:
            os.close(self.stdout)
            raise
        self.stdout_path, self.stderr_path = _path(self.stdout), _path(self.stderr)

    def empty(self) -> None:
        os.ftruncate(self.stdout, 0)
        os.ftruncate(self.stderr, 0)

    def close(self) -> None:
        os.close(self.stdout)
        os.close(self.stderr)

    def seal(self) -> None:
        _seal(self.stdout, self.stderr)


def _seal(*fds: int) -> None:
    """Make every later write of a stopped guest fail, whatever it does before it stops."""
    for fd in fds:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)


class _Watched:
    """A guest running on its request's thread, as the watcher sees it."""

    __slots__ = ("deadline", "execution", "outputs", "request", "rescue", "rescue_at", "rescued", "sent", "server", "stopped")

    def __init__(
        self, server: CgiServer, request: cgi.Request, execution: Execution, outputs: _Outputs, rescue: Callable[[cgi.Response], None]
    ) -> None:
        self.server, self.request, self.execution, self.outputs, self.rescue = server, request, execution, outputs, rescue
        timeout = server.spec.timeout
        self.deadline = math.inf if timeout is None else time.monotonic() + timeout
        self.rescue_at = math.inf
        self.stopped = ""
        """Why the watcher stopped the guest ("" while it has not)."""
        self.rescued = False
        self.sent = threading.Event()

    def check(self, now: float, cap: int) -> None:
        """Stop the guest at its deadline or once an output passes `cap`; answer for it if it
        still runs _GRACE later (stuck in a host call)."""
        if self.rescued or self.execution.result is not None:
            return
        if not self.stopped:
            if now >= self.deadline:
                self._stop(now, f"timed out after {self.server.spec.timeout}s")
            elif os.fstat(self.outputs.stdout).st_size > cap:
                self._stop(now, f"stdout passed the {cap}-byte limit")
            elif os.fstat(self.outputs.stderr).st_size > cap:
                self._stop(now, f"stderr passed the {cap}-byte limit")
        elif now >= self.rescue_at:
            self.rescued = True
            threading.Thread(target=self._answer, name="wasm-oci rescue", daemon=True).start()

    def _stop(self, now: float, why: str) -> None:
        self.stopped = why
        self.outputs.seal()
        self.execution.kill()
        self.rescue_at = now + _GRACE

    def _answer(self) -> None:
        try:
            code = HTTPStatus.GATEWAY_TIMEOUT if self.stopped.startswith("timed out") else HTTPStatus.BAD_GATEWAY
            self.rescue(self.server._error(self.request, code, self.stopped + _STUCK))
        finally:
            self.sent.set()


class _Watcher:
    """One thread for all the guests that run on their request's thread: every _WATCH it looks
    at each one's output sizes and deadline (see `_Watched.check`). A request only adds itself
    to a set and takes itself out: one that ends within _WATCH costs the watcher nothing. Idle
    for _WATCHER_IDLE, the thread waits for the next guest instead of polling."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._running: set[_Watched] = set()
        self._state = threading.Condition()
        self._waiting = self._closed = False
        threading.Thread(target=self._loop, name="wasm-oci watcher", daemon=True).start()

    def add(self, watched: _Watched) -> None:
        with self._state:
            self._running.add(watched)
            if self._waiting:
                self._state.notify()

    def discard(self, watched: _Watched) -> None:
        """Once this returns the watcher no longer acts on `watched`."""
        with self._state:
            self._running.discard(watched)

    def close(self) -> None:
        with self._state:
            self._closed = True
            self._state.notify()

    def _loop(self) -> None:
        busy = time.monotonic()
        while True:
            with self._state:
                if self._closed:
                    return
                now = time.monotonic()
                if self._running:
                    busy = now
                    for watched in list(self._running):
                        watched.check(now, self._cap)
                elif now - busy > _WATCHER_IDLE:
                    self._waiting = True
                    self._state.wait()
                    self._waiting = False
                    busy = time.monotonic()
                    continue
            time.sleep(_WATCH)


def _path(fd: int) -> Path:
    return Path(f"/proc/self/fd/{fd}")


class _Refused(Exception):
    """A request answered with a bare 4xx/5xx status before any guest ran; the connection closes."""

    def __init__(self, code: HTTPStatus) -> None:
        super().__init__(code.phrase)
        self.code = code


class _Gone(Exception):
    """The client closed its side in the middle of a request: nobody to answer."""


@dataclass(frozen=True)
class _Head:
    method: str
    target: str
    version: str
    fields: list[tuple[str, str]]
    length: int
    """The body's Content-Length (0 when chunked)."""
    chunked: bool
    close: bool
    expect_continue: bool


class _Timed(io.RawIOBase):
    """A socket's reads against one deadline for a whole phase (an idle wait, a request head, a
    body), not a timeout per recv: a client trickling a byte at a time would restart that forever."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = 0.0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class _Handler(socketserver.BaseRequestHandler):
    server: CgiServer
    request: socket.socket

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)  # no Nagle + delayed-ACK stall on small responses
        self.clock = _Timed(self.request)
        self.rfile = io.BufferedReader(self.clock, 64 << 10)
        self.method = self.version = self.target = ""
        self.received, self.began = 0, 0.0
        if self.server.proxy is not None and self.server.on_guest_thread is not None:
            self.server.on_guest_thread()  # a proxy's guests run on their connection's thread

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except (_Gone, ConnectionError, TimeoutError):  # the client went away or stopped reading: nobody to tell
            pass
        finally:
            self.server.done(self.request, closing=True)

    def _one(self) -> bool:
        """Serve one request; whether the connection stays open for the next."""
        limits = self.server.limits
        self.method = self.version = self.target = ""
        self.received = 0
        if not self.server.idle(self.request, between_requests=True):
            return False
        self.clock.deadline = time.monotonic() + limits.idle_timeout
        try:
            if not self.rfile.peek(1):
                return False
        except (TimeoutError, OSError):  # OSError: a drain shut the idle connection down
            return False
        self.server.idle(self.request, between_requests=False)
        self.began = time.monotonic()
        self.clock.deadline = self.began + limits.header_timeout
        try:
            head = self._head()
            self.method, self.version, self.target = head.method, head.version, head.target
            slot = self.server.slot()
            if slot is None:
                self.server.error_log(f"{head.method} {head.target} -> 503: no guest slot came free within {limits.queue_timeout}s")
                raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE)
            try:  # the body is read only now: at most `concurrency` bodies are in memory
                if head.expect_continue:
                    self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.clock.deadline = time.monotonic() + limits.body_timeout
                with self._body(head) as (body, length):
                    self.received = length
                    request = cgi.Request(
                        method=head.method,
                        target=head.target,
                        headers=head.fields,
                        body_length=length,
                        client=self.client_address[:2],
                        server=(self.server.host, self.server.port),
                        protocol=head.version,
                    )
                    response = self.server.respond(request, body, slot, rescue=self._rescue)
            finally:
                slot.release()
            if response is None:  # answered from another thread: its guest got stuck in a host call
                return False
        except _Refused as exc:
            self._send(_plain(exc.code), close=True)
            self._linger()
            return False
        except TimeoutError:
            self._send(_plain(HTTPStatus.REQUEST_TIMEOUT), close=True)
            return False
        return self._send(response, close=head.close or self.server.draining)

    def _head(self) -> _Head:
        limits = self.server.limits
        line = self._line(limits.max_request_line, HTTPStatus.REQUEST_URI_TOO_LONG)
        if not line:  # RFC 9112 2.2: one empty line before a request is tolerated
            line = self._line(limits.max_request_line, HTTPStatus.REQUEST_URI_TOO_LONG)
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:  # HTTP/0.9 (no version), extra spaces, controls, garbage
            raise _Refused(HTTPStatus.BAD_REQUEST)
        if match[3] != b"1":
            raise _Refused(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
        method = match[1].decode()
        if method not in METHODS:
            raise _Refused(HTTPStatus.NOT_IMPLEMENTED)
        version = "HTTP/1.0" if match[4] == b"0" else "HTTP/1.1"
        fields = self._fields()
        return _framed(method, _origin_form(method, match[2].decode()), version, fields, limits.max_body)

    def _fields(self) -> list[tuple[str, str]]:
        """A header (or trailer) section, up to the empty line that ends it."""
        limits = self.server.limits
        fields: list[tuple[str, str]] = []
        budget = limits.max_header_bytes
        while True:
            if budget < 2:
                raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            line = self._line(budget, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            if not line:
                return fields
            budget -= len(line) + 2
            if len(fields) == limits.max_headers:
                raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            name, colon, value = line.partition(b":")
            value = value.strip(b" \t")
            # no space before the colon, no obs-fold, no CR, LF, NUL or other control in a value
            if not colon or not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
                raise _Refused(HTTPStatus.BAD_REQUEST)
            fields.append((name.decode("ascii"), value.decode("latin-1")))

    def _line(self, limit: int, too_long: HTTPStatus) -> bytes:
        """A line ending in CRLF (a bare LF or CR is refused), at most `limit` bytes with it."""
        line = self.rfile.readline(limit)
        if line.endswith(b"\r\n"):
            return line[:-2]
        if line.endswith(b"\n"):
            raise _Refused(HTTPStatus.BAD_REQUEST)
        if len(line) == limit:
            raise _Refused(too_long)
        raise _Gone

    @contextlib.contextmanager
    def _body(self, head: _Head) -> Iterator[tuple[bytes | Path, int]]:
        """The request body for the guest's stdin, and its length."""
        if not head.chunked and head.length <= _IN_MEMORY:
            yield self._read(head.length), head.length
            return
        with _memfd("stdin") as spool:
            yield _path(spool), self._chunked(spool) if head.chunked else self._spool(spool, head.length)

    def _read(self, size: int) -> bytes:
        data = self.rfile.read(size) if size else b""
        if len(data) != size:
            raise _Gone
        return data

    def _spool(self, spool: int, size: int) -> int:
        left = size
        while left:
            data = self.rfile.read1(min(left, 64 << 10))
            if not data:
                raise _Gone
            os.write(spool, data)
            left -= len(data)
        return size

    def _chunked(self, spool: int) -> int:
        limit = self.server.limits.max_body
        total = 0
        while True:
            match = _CHUNK_SIZE.fullmatch(self._line(_CHUNK_LINE, HTTPStatus.BAD_REQUEST))
            if match is None:  # a sign, 0x, no digits, a control in an extension
                raise _Refused(HTTPStatus.BAD_REQUEST)
            size = int(match[1], 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            self._spool(spool, size)
            if self._read(2) != b"\r\n":
                raise _Refused(HTTPStatus.BAD_REQUEST)
        self._fields()  # trailers: bounded as headers are, and not passed on
        return total

    def _send(self, response: cgi.Response, close: bool) -> bool:
        """Send `response`; whether the connection stays open for the next request."""
        if isinstance(response, _Streamed):
            return self._stream(response, close)
        body = response.body
        framing = []
        if response.status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            body = b""  # they end at their header section: a body would be read as the next response
        else:
            framing.append(f"Content-Length: {len(body)}")
        head = self._head_block(response, framing, close)
        if self.method == "HEAD":
            body = b""
        self.server.count(response.status, self.received, len(body))
        if self.server.access_log is not None:
            self._log(response.status, len(body))
        if len(body) <= 64 << 10:
            self._write(head + body)
        else:
            self._write(head)
            self._write(body)
        self.server.done(self.request, closing=close)
        return not close

    def _head_block(self, response: cgi.Response, framing: list[str], close: bool) -> bytes:
        """The status line and header section: the response's headers, then `framing` (how the body is delimited)."""
        lines = [f"HTTP/1.1 {response.status} {response.reason}", f"Server: {SERVER}", f"Date: {_date(int(time.time()))}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        lines += framing
        if close:
            lines.append("Connection: close")
        elif self.version == "HTTP/1.0":  # it asked to keep the connection; without this it would not know it may
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _stream(self, response: _Streamed, close: bool) -> bool:
        """Send a proxy's response while its guest writes the body: the head at once, each chunk
        as it comes; chunked to an HTTP/1.1 client (with the guest's trailers, if it set any, in
        the trailer section), ended by the connection's close to an HTTP/1.0 one; no body at all
        for HEAD, 204 and 304 (what the guest writes is read and dropped, so that its run ends as
        it would for GET). The guest's writes wait while the client is behind (Limits.window);
        each send waits at most idle_timeout for the client to read. A body the guest does not
        finish (BodyAborted), or one past max_response, cuts the connection with a reset: the
        client sees an error, never a short body that looks whole. Once the guest's run has
        ended its slot and the request body are given back; whether the connection stays open."""
        from wasm_oci.engine.proxy import BodyAborted

        server, answer = self.server, response.answer
        cap = server.limits.max_response
        bodiless = self.method == "HEAD" or response.status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED)
        chunked = not bodiless and self.version == "HTTP/1.1"
        close = close or not (bodiless or chunked)
        chunks = iter((answer.body,)) if isinstance(answer.body, bytes) else answer.body
        sent = written = 0
        cut = ""
        """Why the body stopped short ("" while it has not)."""
        complete = False
        try:
            self._write(self._head_block(response, ["Transfer-Encoding: chunked"] if chunked else [], close))
            try:
                for chunk in chunks:
                    written += len(chunk)
                    if written > cap:
                        cut = f"the response body passed the {cap}-byte limit"
                        break
                    if not bodiless:
                        self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                        sent += len(chunk)
                else:
                    if chunked:
                        self._write(b"0\r\n" + _trailer_section(answer.trailers) + b"\r\n")
                    complete = True
            except BodyAborted as exc:
                cut = f"the guest did not finish its response body ({exc})"
        finally:
            if not complete:  # the guest is stopped: its body has nowhere to go
                answer.close()
            if isinstance(chunks, Generator):
                chunks.close()
            server.count(response.status, self.received, sent)
            if server.access_log is not None:
                self._log(response.status, sent)
            self._end_run(response, cut, bodiless, sent)
        if cut and not bodiless:
            self._reset()
            close = True
        server.done(self.request, closing=close)
        return not close

    def _end_run(self, response: _Streamed, cut: str, bodiless: bool, sent: int) -> None:
        """Wait for the guest's run to end (within its timeout), log how it failed if it did,
        then give back what it held; a run still going then (stuck in a host call) keeps them
        until it ends, on a thread of its own."""
        answer = response.answer
        timeout = self.server.spec.timeout
        result = answer.result(None if timeout is None else timeout + 1.0)
        # "killed": stopped here, its body going nowhere (the client left, the cap); the why is logged as `cut`
        ended = "" if result is None or result.reason in ("exit", "killed") else result.message or result.reason
        if result is None:
            ended = "still running after its deadline; it keeps its slot until its run ends"

            def finish_at_the_end() -> None:
                answer.result(None)
                response.finish()

            threading.Thread(target=finish_at_the_end, name="wasm-oci proxy wait", daemon=True).start()
        else:
            response.finish()
        if cut and not bodiless:
            what = f"{cut}; the connection was cut after {sent} bytes of body"
        elif cut:
            what = f"{cut} (a {self.method if self.method == 'HEAD' else response.status} response sends no body)"
        elif ended:
            what = "the guest failed after its response was sent"
        else:
            return
        self.server.error_log(
            f"{self.method} {self.target} -> {response.status}: {what}" + (f"; {ended}" if ended else "") + _stderr_of(answer.stderr)
        )

    def _reset(self) -> None:
        """Close the connection with a reset (SO_LINGER 0) rather than a FIN: to the client an
        error, not the end of a body."""
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.request.close()

    def _rescue(self, response: cgi.Response) -> None:
        """Answer from another thread while this one is held by a guest stuck in a host call; the
        connection ends there (this thread leaves it alone once the guest returns)."""
        with contextlib.suppress(OSError):
            self._send(response, close=True)
            self.request.shutdown(socket.SHUT_RDWR)

    def _log(self, status: int, size: int) -> None:
        """One access-log line: client, request line, status, body bytes, milliseconds taken."""
        assert self.server.access_log is not None
        took = (time.monotonic() - self.began) * 1e3 if self.began else 0.0
        request = f"{self.method} {self.target} {self.version}" if self.method else "-"
        self.server.access_log(f'{self.client_address[0]} "{_printable(request)}" {status} {size} {took:.1f}ms')

    def _write(self, data: bytes) -> None:
        self.request.settimeout(self.server.limits.idle_timeout)  # sendall's whole duration, not per send
        self.request.sendall(data)

    def _linger(self) -> None:
        """After a refusal: stop sending and read (and drop) what the client still sends for a moment."""
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_WR)
            self.clock.deadline = time.monotonic() + _LINGER
            while self.rfile.read1(64 << 10):
                pass


def _printable(text: str) -> str:
    """A request line for a log line: its controls and quotes escaped (it came from a client)."""
    return text.encode("unicode_escape").decode("ascii").replace('"', "\\x22")


@functools.lru_cache(maxsize=1)
def _date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def _origin_form(method: str, target: str) -> str:
    """The path and query of a request target (RFC 9112 3.2); a path starting with '//' is cut to
    one '/' (clients would take it for a host: an open redirect). A %00 is refused: the guest's
    PATH_INFO would end there (C strings), and "/admin%00.png" would pass for "/admin"."""
    if "%00" in target:
        raise _Refused(HTTPStatus.BAD_REQUEST)
    if target == "*" and method == "OPTIONS":
        return target
    if not target.startswith("/"):
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is None:
            raise _Refused(HTTPStatus.BAD_REQUEST)
        target = "/" + absolute[1].lstrip("/")
    return "/" + target.lstrip("/") if target.startswith("//") else target


def _framed(method: str, target: str, version: str, fields: list[tuple[str, str]], max_body: int) -> _Head:
    """How the body is framed, by RFC 9112 6.3's rules; any message whose length could be read
    two ways (the root of request smuggling) is refused with a 400."""
    lengths: list[str] = []
    codings: list[str] = []
    connection: list[str] = []
    expect: list[str] = []
    transfer_encoding = False
    hosts = 0
    for name, value in fields:
        key = name.lower()
        if key == "content-length":
            lengths += [item.strip(" \t") for item in value.split(",")]
        elif key == "transfer-encoding":
            transfer_encoding = True
            codings += [item for item in (item.strip(" \t").lower() for item in value.split(",")) if item]
        elif key == "connection":
            connection += [item.strip(" \t").lower() for item in value.split(",")]
        elif key == "expect":
            expect.append(value.lower())
        elif key == "host":
            hosts += 1
    if version == "HTTP/1.1" and hosts != 1:  # RFC 9112 3.2
        raise _Refused(HTTPStatus.BAD_REQUEST)
    length = 0
    if transfer_encoding:
        if lengths or version == "HTTP/1.0" or not codings or codings[-1] != "chunked" or "chunked" in codings[:-1]:
            raise _Refused(HTTPStatus.BAD_REQUEST)
        if len(codings) > 1:  # gzip, chunked: a coding this server does not undo
            raise _Refused(HTTPStatus.NOT_IMPLEMENTED)
    elif lengths:
        if not all(_LENGTH.fullmatch(item) for item in lengths) or len({int(item) for item in lengths}) != 1:
            raise _Refused(HTTPStatus.BAD_REQUEST)
        length = int(lengths[0])
        if length > max_body:
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    if expect and expect != ["100-continue"]:
        raise _Refused(HTTPStatus.EXPECTATION_FAILED)
    close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    expect_continue = bool(expect) and version == "HTTP/1.1" and (transfer_encoding or length > 0)
    return _Head(method, target, version, fields, length, transfer_encoding, close, expect_continue)
