"""`wasm-oci serve --workers N`: N processes serve one listening socket, each with its own GIL.

Why processes: a request is mostly Python around wasmtime calls (HTTP parsing, the WASI set-up,
instantiation, the response), so one process serves about one CPU's worth however many guests
run at once (bench/engine_serve.py on 2 CPUs, the hello function at 8 connections: one process
~1,300 requests/s, two workers ~2,200). Threads cannot lift that; processes can.

How: the caller binds and listens (`listen`) before wasmtime has an engine or any thread
exists; `serve` then forks the workers, and each creates its own Engine, loads the program and
serves the inherited socket with its share of the guest slots (`--concurrency` stays the bound
for the whole server). The first worker starts alone, so that a cold compile cache compiles once
and a program that cannot load is reported once; the others then load from the disk cache. The
kernel gives a connection to whichever worker accepts it first; a worker whose guest slots are all
busy holds back for up to _DEFER, so that one with a free slot takes it (keep-alive connections
stay with the worker that accepted them).

Supervision: the parent forwards SIGTERM, SIGINT and SIGHUP to the workers as SIGTERM; each stops
accepting, closes its idle connections, lets the requests in flight finish (up to the request
timeout and a second) and exits 0; the parent exits once they all have (and SIGKILLs any still
there _KILL_AFTER seconds later). A worker that ends on its own (a crash, the OOM killer) is not
respawned: the parent stops the others and fails naming it (exit 1), so that the supervisor
above (systemd, Kubernetes) sees the failure instead of a server quietly restarting a crash
loop. A worker dies with its parent (PR_SET_PDEATHSIG), whatever ends the parent.

`--workers 1` serves in this process, as the server always did before workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from wasm_oci.engine.serve import CgiServer, ServeLimits
from wasm_oci.engine.spec import RunSpec
from wasm_oci.errors import WasmOciError

if TYPE_CHECKING:
    from wasm_oci.engine.program import Program
    from wasm_oci.engine.proxy import ProxyHost

log = logging.getLogger(__name__)

BACKLOG = 128
"""Connections the kernel holds before any worker accepts them (the stdlib's 5 resets connections under a burst)."""
STOPS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""What ends the server gracefully (the parent forwards each to the workers as SIGTERM), unless
this process was started with it ignored (`nohup`, a shell's background job)."""
_DEFER = 0.1
"""Seconds a worker with no free guest slot leaves a pending connection to the others."""
_DEFER_STEP = 0.002
_KILL_AFTER = 5.0
"""Seconds past its drain a worker has to exit after a stop before the parent SIGKILLs it."""
_STARTUP_BACKOFF = 0.05
"""Seconds between two accept() failures for want of descriptors or memory (the socket stays readable)."""
_UNTIMED_GRACE = 10.0
"""Seconds a drain waits for requests whose guests have no timeout."""
_PR_SET_PDEATHSIG, _PR_SET_NAME = 1, 15


@dataclass(frozen=True)
class Guest:
    """What every worker loads: the verified bytes, their digest and the guest's name (argv[0])."""

    wasm: bytes
    digest: str
    name: str
    cache_dir: Path | None = None
    """The compile cache (None: the default one)."""
    outbound: frozenset[str] = frozenset()
    """Hosts a wasi:http proxy guest may send requests to (none by default)."""


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, ready to be shared by forked workers (non-blocking:
    a worker that loses the race for a connection must not block in accept); OSError if it cannot."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def shares(concurrency: int, workers: int) -> list[int]:
    """`concurrency` guest slots dealt out to `workers` (each gets at least one)."""
    if workers > concurrency:
        raise ValueError(f"{workers} workers need a concurrency of at least {workers}")
    return [concurrency // workers + (index < concurrency % workers) for index in range(workers)]


def serve(listener: socket.socket, guest: Guest, spec: RunSpec, limits: ServeLimits, workers: int, ready: Callable[[str], None]) -> None:
    """Serve `guest` on `listener` until SIGTERM, SIGINT or SIGHUP (then return: exit 0).

    `limits.concurrency` is shared out among `workers` processes (1: this one). `ready(url)`
    runs once every worker serves. A program that cannot load raises its WasmOciError; a worker
    that fails later raises a WasmOciError naming it, once the others have stopped."""
    host, port = listener.getsockname()[:2]
    url = f"http://{host}:{port}"
    if workers == 1:
        server = _server(listener, guest, spec, limits, defer=False)
        ready(url)
        _serve_until_stopped(server, _stops())
        return
    _Supervisor(listener, guest, spec, limits, shares(limits.concurrency, workers)).run(lambda: ready(url))


class _Server(CgiServer):
    """A server that may leave a pending connection to another worker when its guest slots are all busy."""

    defer = False

    def has_free_slot(self) -> bool:
        with self._state:
            return self._busy < self.limits.concurrency


def _server(listener: socket.socket, guest: Guest, spec: RunSpec, limits: ServeLimits, defer: bool) -> _Server:
    from wasm_oci.engine.proxy import Outbound, ProxyHost, is_proxy
    from wasm_oci.engine.runner import Engine

    engine = Engine(cache_dir=guest.cache_dir)
    program: Program | ProxyHost
    if is_proxy(guest.wasm):
        program = ProxyHost(engine, guest.wasm, guest.name, Outbound(allow=guest.outbound), env=spec.env)
    else:
        program = engine.load(guest.wasm, guest.digest, guest.name)
    server = _Server(listener.getsockname()[:2], engine, program, spec, limits, listener=listener)
    server.defer = defer
    return server


def _serve_until_stopped(server: _Server, stops: tuple[signal.Signals, ...]) -> None:
    """Accept connections on this (the main) thread until one of `stops` arrives, then drain.

    The signals reach this loop through a wake-up pipe in its own selector: whichever thread the
    kernel delivers a signal to, the loop sees it at once (a handler alone would wait for the
    main thread to run Python)."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    previous = {stop: signal.signal(stop, _noop) for stop in stops}
    signal.set_wakeup_fd(wake_w)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(wake_r, selectors.EVENT_READ)
            while not any(key.fd == wake_r for key, _ in selector.select()):
                _accept(server)
        server.socket.close()  # what is still in the backlog goes to the workers still accepting
    finally:
        signal.set_wakeup_fd(-1)
        for stop, handler in previous.items():
            signal.signal(stop, handler)
        os.close(wake_r)
        os.close(wake_w)
    if not server.drain(_drain_grace(server.spec)):
        server.abort()
    server.server_close()


def _drain_grace(spec: RunSpec) -> float:
    """Seconds a stopping server gives its requests in flight: the request timeout and a second."""
    return (spec.timeout or _UNTIMED_GRACE) + 1.0


def _stops() -> tuple[signal.Signals, ...]:
    return tuple(stop for stop in STOPS if signal.getsignal(stop) != signal.SIG_IGN)


def _noop(signum: int, frame: object) -> None:
    """A Python-level handler, so that the C handler runs and writes the signal to the wake-up pipe."""


def _accept(server: _Server) -> None:
    """Take one pending connection, unless another worker is better placed to (see _DEFER)."""
    if server.defer and not server.has_free_slot():
        until = time.monotonic() + _DEFER
        while time.monotonic() < until and not server.has_free_slot():
            time.sleep(_DEFER_STEP)
    try:
        conn, address = server.socket.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):  # another worker took it, or the client left
        return
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            log.warning("cannot accept a connection: %s", exc.strerror)
            time.sleep(_STARTUP_BACKOFF)  # the socket stays readable: do not spin
            return
        raise
    try:
        server.process_request(conn, address)  # a thread per connection
    except Exception:
        log.exception("could not hand over a connection")
        server.shutdown_request(conn)


class _Supervisor:
    """The parent of the workers: starts them, forwards stops, reaps them, reports a failure."""

    def __init__(self, listener: socket.socket, guest: Guest, spec: RunSpec, limits: ServeLimits, slots: list[int]) -> None:
        self.listener, self.guest, self.spec, self.limits, self.slots = listener, guest, spec, limits, slots
        self.workers: dict[int, int] = {}
        """pid -> index, of the workers not reaped yet."""
        self.pending: dict[int, int] = {}
        """Read end of its start-up pipe -> index, of the workers not ready yet."""
        self.stopping = False
        self.stop_deadline = 0.0
        self.failure: WasmOciError | None = None
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def run(self, ready: Callable[[], None]) -> None:
        handled = (*_stops(), signal.SIGCHLD)
        previous = {number: signal.signal(number, _noop) for number in handled}
        signal.set_wakeup_fd(self.wake_w)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        announced = False
        try:
            self._start(0)
            while self.workers:
                timeout = max(0.0, self.stop_deadline - time.monotonic()) if self.stopping else None
                events = self.selector.select(timeout)
                for key, _ in events:
                    if key.fd == self.wake_r:
                        self._signals()
                    else:
                        self._started(key.fd)
                        if not announced and not self.pending and not self.stopping and len(self.workers) == len(self.slots):
                            announced = True
                            ready()
                if self.stopping and time.monotonic() >= self.stop_deadline:
                    late = ", ".join(f"{index} (pid {pid})" for pid, index in self.workers.items())
                    self._fail(WasmOciError(f"worker(s) {late} did not stop within {_KILL_AFTER}s of their drain: killed"), 1)
                    self._kill_all()
        finally:
            signal.set_wakeup_fd(-1)
            for number, handler in previous.items():
                signal.signal(number, handler)
            self._kill_all()  # only workers left by an exception here: none on the normal paths
            for fd in (*self.pending, self.wake_r, self.wake_w):
                os.close(fd)
            self.selector.close()
        if self.failure is not None:
            raise self.failure

    def _start(self, index: int) -> None:
        """Fork worker `index`; its start-up pipe tells when it serves (or why it cannot)."""
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, (*STOPS, signal.SIGCHLD))  # none reaches the child before it is set up
        try:
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                _worker(index, self, parent, ready_w, blocked)
            os.close(ready_w)
            self.workers[pid] = index
            self.pending[ready_r] = index
            self.selector.register(ready_r, selectors.EVENT_READ)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _started(self, fd: int) -> None:
        """A worker's start-up pipe is readable: it serves, or it says why it cannot, or it died."""
        index = self.pending.pop(fd)
        self.selector.unregister(fd)
        chunks = []
        while chunk := os.read(fd, 64 << 10):  # the worker closes its end right after its one message
            chunks.append(chunk)
        os.close(fd)
        message = b"".join(chunks).decode("utf-8", "replace")
        if message == "ready":
            if index == 0 and not self.stopping:
                for other in range(1, len(self.slots)):
                    self._start(other)
            return
        if message:  # "EXIT_CODE MESSAGE": the program cannot be served
            code, _, text = message.partition(" ")
            self._fail(WasmOciError(text), int(code))
        # an empty read: the worker died before it was ready; reaping it reports how

    def _signals(self) -> None:
        numbers = b""
        with contextlib.suppress(BlockingIOError):
            numbers = os.read(self.wake_r, 256)
        if any(number != signal.SIGCHLD for number in numbers):
            self._stop()
        self._reap()

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.workers.pop(pid, None)
            if index is None or (self.stopping and os.waitstatus_to_exitcode(status) in (0, -signal.SIGTERM)):
                continue
            crash = WasmOciError(f"worker {index} (pid {pid}) {_ended(status)}: the server stopped")
            if self.failure is None and not self.stopping:
                log.error("worker %d (pid %d) %s: stopping the others", index, pid, _ended(status))
            self._fail(crash, 1)

    def _fail(self, error: WasmOciError, code: int) -> None:
        if self.failure is None:
            error.exit_code = code
            self.failure = error
        self._stop()

    def _stop(self) -> None:
        """Tell every worker to stop (again, if one more signal came)."""
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + _drain_grace(self.spec) + _KILL_AFTER
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def _kill_all(self) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            del self.workers[pid]


def _worker(index: int, supervisor: _Supervisor, parent: int, ready_w: int, mask: set[int | signal.Signals]) -> NoReturn:
    """A forked worker: load, say so, serve until SIGTERM; never returns into the parent's code."""
    status = 1
    try:
        signal.set_wakeup_fd(-1)
        supervisor.selector.close()
        for fd in (*supervisor.pending, supervisor.wake_r, supervisor.wake_w):
            os.close(fd)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the parent too: it decides
        stops = tuple(stop for stop in (signal.SIGTERM, signal.SIGHUP) if signal.getsignal(stop) != signal.SIG_IGN)  # nohup's stays
        for number in (*stops, signal.SIGCHLD):
            signal.signal(number, signal.SIG_DFL)  # until it serves, a stop just ends it
        _die_with_parent(parent, name=f"wasm-oci w{index}")
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        limits = replace(supervisor.limits, concurrency=supervisor.slots[index])
        try:
            server = _server(supervisor.listener, supervisor.guest, supervisor.spec, limits, defer=True)
        except WasmOciError as exc:
            os.write(ready_w, f"{exc.exit_code} {exc}".encode())
            _exit(1)
        os.write(ready_w, b"ready")
        os.close(ready_w)
        _serve_until_stopped(server, stops)
        status = 0
    except BaseException:
        traceback.print_exc()
    _exit(status)


def _exit(status: int) -> NoReturn:
    """Leave at once: the parent's clean-up (atexit, finalizers, click) is not the worker's to run."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)


def _die_with_parent(parent: int, name: str) -> None:
    """SIGKILL this process when its parent ends, however it ends (even if it already has)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it ended before the prctl
        _exit(1)
    libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)  # what ps and top show


def _ended(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
