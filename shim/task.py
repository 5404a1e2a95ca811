"""One container's task: its guest's run and its state as containerd sees it.

One state machine, CREATED -> RUNNING -> STOPPED (or CREATED -> STOPPED for a task killed or
deleted before Start): `_move` is the only place the state changes, under the task's lock
(Start runs on a worker thread, Kill and the exit on the event loop), and it refuses any
other transition, as containerd's and runwasi's shims do. Exit statuses are what runc users
see (engine/status.py): the guest's own code, 128 + the signal for a kill (137 for SIGKILL, 143
for SIGTERM), 134 for a trap. The guest runs in this process: its "pid" is the daemon's.

A Kubernetes pod sandbox runs no guest: it is RUNNING until killed, as the pause process is.

Create does all the guest's setup: it attaches stdio, instantiates the guest and parks a
thread for it; Start only wakes that thread, so the guest's first instruction follows Start
by a thread wake-up. The same thread then waits for the client to read the guest's output
and reports the exit. A start function in a core module (rare: WASI programs start at
`_start`) therefore runs at Create.

A kill stops the guest at its next epoch check, within a millisecond while it runs Wasm. The
kill also ends the waits the engine can cut short: a read of stdin (its relay closes), a
preview 1 module's clock wait (at once) and a component's poll (at the end of its current
slice, 20 ms to 2 s, engine/polls.py); the guest's thread then ends with everything it held.
A guest still in a host call after KILL_GRACE (a poll's later slice, a write to an output
nobody reads) is reported dead anyway, as the kill promised, its output FIFOs are let go at
once (clients such as CRI wait for their end-of-file), and its thread ends by itself when the
call returns.

Everything else a task holds is let go the moment its guest ends, whatever the reason: the
engine closes the guest's store (its WASI context's files) and the attachment closes the
shim's own FIFO ends; nothing waits for the garbage collector.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal as signals
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from wasm_oci.engine import Engine, Execution, Program, RunResult, RunSpec, memory
from wasm_oci.engine.proxy import ProxyHost
from wasm_oci.engine.result import Stop
from wasm_oci.errors import RpcError
from wasm_oci.proto.task_types_pb2 import Status
from wasm_oci.shim.cgroups import ContainerCgroup
from wasm_oci.shim.http_function import HttpFunction, HttpPlan
from wasm_oci.shim.stdio import Attachment, Stdio
from wasm_oci.shim.threadname import GUEST, name_this_thread

# Signals whose default action leaves a process running: delivering them changes nothing.
HARMLESS = frozenset({0, signals.SIGCHLD, signals.SIGCONT, signals.SIGURG, signals.SIGWINCH})
STOPPING = frozenset({signals.SIGSTOP, signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU})
KILL_GRACE = 0.05
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset({Status.RUNNING, Status.STOPPED}),
    Status.RUNNING: frozenset({Status.STOPPED}),
    Status.STOPPED: frozenset(),
}


class Task:
    def __init__(
        self,
        namespace: str,
        task_id: str,
        bundle: str,
        stdio: Stdio,
        program: Program | ProxyHost | None,
        run_spec: RunSpec,
        rootfs: Path | None,
        on_exit: Callable[[Task], None],
        log: logging.LoggerAdapter[logging.Logger],
        cgroup: ContainerCgroup | None = None,
        sandbox_id: str = "",
        http: HttpPlan | None = None,
    ) -> None:
        self.namespace, self.id, self.bundle, self.stdio = namespace, task_id, bundle, stdio
        self.program, self.run_spec = program, run_spec
        self.rootfs = rootfs
        """The mount point to unmount at delete (None when nothing was mounted)."""
        self.pid = os.getpid()
        self.sandbox_id = sandbox_id
        """The CRI pod it belongs to ("" outside Kubernetes); a sandbox's own id for itself."""
        self.cgroup = cgroup
        """The container's CPU cgroups, which the guest's thread joins (None: none to join)."""
        self.http = http
        self.function: HttpFunction | None = None
        """An HTTP function's listener and server (http_function.py), from Create on."""
        self.status: Status = Status.CREATED
        self.exit_status = 0
        self.exit_reason = ""
        """How the guest ended (engine/result.py reasons: "exit", "trap", "oom", ...)."""
        self.exited_at_ns = 0
        self.exited = asyncio.Event()
        self.log = log
        self._on_exit = on_exit
        self._attachment: Attachment | None = None
        self._execution: Execution | None = None
        self._woken = threading.Event()
        self._started = 0.0
        self._cpu: tuple[int, int | None] = (0, None)
        """The guest thread's CPU clock while it runs, then its CPU time in ns."""
        self._lock = threading.Lock()

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.id

    def prepare(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        """Attach stdio, instantiate the guest and park its thread (at Create; blocks)."""
        if self.program is None:
            return
        attachment = Attachment(self.stdio)
        try:
            if self.http is not None:
                self.function = HttpFunction(engine, self.program, self.run_spec, self.http, attachment, self._join_cgroup)
                return
            assert not isinstance(self.program, ProxyHost)  # trigger_of made every proxy an HTTP function
            execution = self._instantiated(engine, attachment, self.program, self.run_spec)
        except BaseException:
            attachment.close()
            raise
        self._attachment, self._execution = attachment, execution
        thread = threading.Thread(target=self._guest, args=(attachment, loop), name=f"task {self.id}", daemon=True)
        thread.start()
        if self.cgroup is not None:
            try:
                self.cgroup.join(thread.native_id)
            except BaseException:
                with self._lock:
                    self._move(Status.STOPPED)  # Create fails: the parked thread lets go and ends
                self._woken.set()
                raise

    def _join_cgroup(self) -> None:
        """On each of an HTTP function's guest threads: into the container's CPU cgroup."""
        if self.cgroup is not None:
            try:
                self.cgroup.join(threading.get_native_id())
            except Exception as exc:  # the request is still served; the limit does not hold for this thread
                self.log.warning("a guest thread could not join the container's cgroup: %s", exc)

    @staticmethod
    def _instantiated(engine: Engine, attachment: Attachment, program: Program, spec: RunSpec) -> Execution:
        execution = engine.execution(program, spec)
        with attachment.opening():
            execution.prepare()
        return execution

    def limit_memory(self, limit: int | None) -> None:
        """A new memory limit: before Start the guest is instantiated again under it (blocks);
        after, it applies to the next growth (a guest already past it is not stopped). An HTTP
        function's next requests get their share of it."""
        with self._lock:
            if self.function is not None and self.status != Status.STOPPED:
                self.function.limit_memory(limit)
                self.run_spec = replace(self.run_spec, memory_limit=limit)
                return
            if self.status == Status.RUNNING and self._execution is not None:
                self._execution.memory.limit = limit
                self.run_spec = replace(self.run_spec, memory_limit=limit)
                return
            if self.status != Status.CREATED:
                raise RpcError("FAILED_PRECONDITION", f"task {self.id} has ended: its memory limit cannot change")
            run_spec = replace(self.run_spec, memory_limit=limit)
            current = self._execution
            if current is not None and self._attachment is not None:
                self._execution = self._instantiated(current.engine, self._attachment, current.program, run_spec)
                current.discard()
            self.run_spec = run_spec

    def start(self) -> None:
        """Wake the guest's thread (or, for a sandbox, just be running)."""
        with self._lock:
            self._move(Status.RUNNING)
            self._started = time.perf_counter()
        if self.function is not None:
            self.function.start()
            return
        self._woken.set()

    def _move(self, to: Status) -> None:
        """The one place the state changes (the caller holds the lock); FAILED_PRECONDITION for
        a transition the state machine does not have."""
        if to not in TRANSITIONS[self.status]:
            raise RpcError(
                "FAILED_PRECONDITION", f"task {self.id} is {Status.Name(self.status).lower()}: it cannot become {Status.Name(to).lower()}"
            )
        self.status = to

    def _guest(self, attachment: Attachment, loop: asyncio.AbstractEventLoop) -> None:
        """The guest's thread: parked until Start (or an end before it), then the run and its exit."""
        name_this_thread(GUEST)
        self._woken.wait()
        with self._lock:
            execution = self._execution
            assert execution is not None  # set before this thread started
            if self.status != Status.RUNNING:  # killed or deleted before it started
                execution.discard()
                attachment.close()
                return
            self._cpu = (time.pthread_getcpuclockid(threading.get_ident()), None)
        result = execution.run()
        with self._lock:
            self._cpu = (0, time.thread_time_ns())
        self.log.info("guest entered %.3f ms after Start, ran %.3f s", (execution.entered - self._started) * 1e3, result.elapsed)
        attachment.drain()
        loop.call_soon_threadsafe(self.finish, result)

    def memory_bytes(self) -> tuple[int, int]:
        """(in RAM now, the most ever committed) of the guest's linear memories; (0, 0)
        without a guest."""
        if self.function is not None:
            return self.function.memory_bytes()
        execution = self._execution
        return (memory.resident(execution.memory), execution.memory.peak) if execution is not None else (0, 0)

    def cpu_ns(self) -> int:
        """CPU time the guest's thread (an HTTP function's guest threads) has used so far."""
        if self.function is not None:
            return self.function.counters.guest_cpu_ns
        with self._lock:
            clock, spent = self._cpu
            return spent if spent is not None else time.clock_gettime_ns(clock) if clock else 0

    def finish(self, result: RunResult) -> None:
        """Record the exit (on the event loop); later calls are ignored."""
        with self._lock:
            if self.status == Status.STOPPED:
                return
            self._move(Status.STOPPED)
            self.exit_status, self.exit_reason = result.status, result.reason
            self.exited_at_ns = time.time_ns()
        self._woken.set()  # a guest that never started lets go of its thread
        if self.function is not None:  # ended before Start, or deleted: the stop already closed it otherwise
            threading.Thread(target=self.function.close, name="wasm-oci http close", daemon=True).start()
        if result.message:
            self.log.info("exited with status %d: %s", result.status, result.message)
        self.exited.set()
        self._on_exit(self)

    def kill(self, signal: int) -> None:
        """Deliver `signal` as a process without handlers would take it (on the event loop)."""
        if signal in STOPPING:
            raise RpcError("UNIMPLEMENTED", f"signal {signal} would stop task {self.id}: a Wasm guest cannot be paused")
        with self._lock:
            if self.status == Status.STOPPED:
                raise RpcError("NOT_FOUND", f"task {self.id}: process already finished")
            running = self._execution if self.status == Status.RUNNING else None
        if signal in HARMLESS:
            return
        if self.function is not None and self.status == Status.RUNNING:
            loop = asyncio.get_running_loop()

            def ended(result: RunResult) -> None:
                loop.call_soon_threadsafe(self.finish, result)

            self.function.stop(signal, ended)
            return
        killed = Stop("killed", signal).result(0.0)
        if running is None:  # never started, or a sandbox: nothing runs that must stop first
            self.finish(killed)
            return
        running.kill(signal)
        asyncio.get_running_loop().call_later(KILL_GRACE, self._abandon, running, killed)

    def _abandon(self, execution: Execution, killed: RunResult) -> None:
        if self.status == Status.RUNNING and execution.wait(0) is None:
            self.log.warning("the guest is blocked in a host call a kill cannot end: reported killed now, it ends when the call returns")
            execution.release_stdio()
            self.finish(killed)
