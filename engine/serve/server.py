"""CgiServer: the guest slots, the runs and the answers of `wasm-oci serve` (see the package docstring).

A CGI guest runs per request with the request's variables as its environment and its body on
stdin; a wasi:http proxy is handed to the proxy host and its answer streamed (http1.Streamed).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from wasm_oci.engine import cgi
from wasm_oci.engine.program import Program
from wasm_oci.engine.result import RunResult
from wasm_oci.engine.runner import Engine, Execution
from wasm_oci.engine.serve.http1 import Handler, Streamed, plain, stderr_of
from wasm_oci.engine.serve.watch import GRACE, STUCK, WATCH, Outputs, Watched, Watcher, seal
from wasm_oci.engine.spec import RunSpec
from wasm_oci.errors import WasmOciError

if TYPE_CHECKING:
    from wasm_oci.engine.proxy import ProxyHost

log = logging.getLogger(__name__)


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
        self._spare: list[Outputs] = []
        """Emptied stdout/stderr memfd pairs for the next requests (at most one per slot used at once)."""
        self._spare_lock = threading.Lock()
        self._closed = False
        self._watching: Watcher | None = None
        """Watches the guests that run on their request's thread (started with the first)."""
        self.draining = False
        super().__init__(address, Handler, bind_and_activate=listener is None)  # on failure calls server_close: all set above
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
        is still running GRACE after it was stopped, and this returns None once its guest is done
        (the request was answered). Else the guest runs on a guest thread while this one watches it.
        A proxy's answer is a Streamed response once its guest has set one: `Handler._send`
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
        Streamed one: its body comes as the guest writes it, and `slot` and the request body
        stay the guest's until its run ends (Handler._stream)."""
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
            return self.error_response(request, HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except BaseException:
            held.close()
            raise
        if answer.error is not None:  # it failed before its response: its run has ended
            held.close()
            self.error_log(f"{request.method} {request.target} -> {answer.status}: {answer.error}" + stderr_of(answer.stderr))
            return cgi.Response(answer.status, _reason(answer.status), [("Content-Type", "text/plain; charset=utf-8")], b"")
        if answer.status < 200:  # a client would take a 1xx for an interim response, the body for the next one
            answer.close()
            answer.result(GRACE)
            held.close()
            return self.error_response(request, HTTPStatus.INTERNAL_SERVER_ERROR, f"the guest's response has the status {answer.status}")
        release = slot.hold()

        def finish() -> None:
            held.close()
            release()

        headers = [(name, value.decode("latin-1")) for name, value in answer.headers if name.lower() not in cgi.HOP_BY_HOP]
        return Streamed(answer.status, _reason(answer.status), headers, b"", answer, finish)

    def _run(
        self, request: cgi.Request, body: bytes | Path, slot: _Slot, outputs: Outputs, rescue: Callable[[cgi.Response], None] | None
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
            return self.error_response(request, HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)), True
        if not here:
            slot.run(execution)
            result, stopped = self._watch(execution, stdout, stderr)
            if result is None:
                stopped += STUCK
        else:
            assert rescue is not None
            watched = Watched(self, request, execution, outputs, rescue)
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
                return self.error_response(request, HTTPStatus.INTERNAL_SERVER_ERROR, "the guest's run failed (see the log)"), True
        if stopped:  # sealed, or still held by a guest stuck in a host call: not for another request
            timed_out = stopped.startswith("timed out")
            return self.error_response(request, HTTPStatus.GATEWAY_TIMEOUT if timed_out else HTTPStatus.BAD_GATEWAY, stopped), False
        assert result is not None
        if result.reason != "exit" or result.status != 0:
            return self._failed(request, result, os.pread(stderr, 2048, 0)), True
        size = os.fstat(stdout).st_size
        if size > self.limits.max_response:
            return self.error_response(
                request, HTTPStatus.BAD_GATEWAY, f"response of {size} bytes is over the {self.limits.max_response}-byte limit"
            ), True
        try:
            return cgi.parse_response(os.pread(stdout, size, 0)), True
        except cgi.MalformedResponse as exc:
            return self.error_response(request, HTTPStatus.BAD_GATEWAY, str(exc)), True

    def _watcher(self) -> Watcher:
        with self._spare_lock:
            if self._watching is None:
                self._watching = Watcher(self.limits.max_response)
            return self._watching

    def _outputs(self) -> Outputs:
        with self._spare_lock:
            if self._spare:
                return self._spare.pop()
        return Outputs()

    def _give_back(self, outputs: Outputs, reusable: bool) -> None:
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
            result = execution.wait(max(0.0, min(WATCH, deadline - time.monotonic())))
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
        seal(stdout, stderr)
        execution.kill()
        return execution.wait(GRACE), stopped

    def error_response(self, request: cgi.Request, code: HTTPStatus, detail: str) -> cgi.Response:
        """Log the detail, answer with the bare status: the client learns nothing about the guest."""
        self.error_log(f"{request.method} {request.target} -> {int(code)}: {detail}")
        return plain(code)

    def _failed(self, request: cgi.Request, result: RunResult, stderr: bytes) -> cgi.Response:
        what = result.message or f"guest exited with status {result.status}"
        if stderr:
            what += f"; guest stderr: {stderr.decode('utf-8', 'replace').strip()!r}"
        code = HTTPStatus.GATEWAY_TIMEOUT if result.reason == "timeout" else HTTPStatus.INTERNAL_SERVER_ERROR
        return self.error_response(request, code, what)


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


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
