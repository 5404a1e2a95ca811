"""One container's task: its guest's run and its state as containerd sees it.

CREATED -> RUNNING -> STOPPED, every transition under the task's lock (Start runs on a worker
thread, Kill and the exit on the event loop). Exit statuses are what runc users see: the
guest's own code, 128 + the signal for a kill (137 for SIGKILL, 143 for SIGTERM), 134 for a
trap. The guest runs in this process: its "pid" is the daemon's.

A Kubernetes pod sandbox runs no guest: it is RUNNING until killed, as the pause process is.

A kill stops the guest at its next epoch check, within a millisecond while it runs Wasm. A
guest blocked in a host call (a WASI clock wait, a read) only gets there when the call
returns: after KILL_GRACE the task is reported dead anyway, as the kill promised, and the
guest's thread ends by itself when its call returns (holding its memory and open files until
then).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal as signals
import threading
import time
from collections.abc import Callable
from pathlib import Path

from wasm_oci.engine import Engine, Execution, Program, RunResult, RunSpec
from wasm_oci.proto.task_types_pb2 import Status
from wasm_oci.shim.stdio import Attachment, Stdio
from wasm_oci.shim.transport.rpc import RpcError

# Signals whose default action leaves a process running: delivering them changes nothing.
HARMLESS = frozenset({0, signals.SIGCHLD, signals.SIGCONT, signals.SIGURG, signals.SIGWINCH})
STOPPING = frozenset({signals.SIGSTOP, signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU})
KILL_GRACE = 0.05


class Task:
    def __init__(
        self,
        namespace: str,
        task_id: str,
        bundle: str,
        stdio: Stdio,
        program: Program | None,
        run_spec: RunSpec,
        rootfs: Path | None,
        on_exit: Callable[[Task], None],
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self.namespace, self.id, self.bundle, self.stdio = namespace, task_id, bundle, stdio
        self.program, self.run_spec = program, run_spec
        self.rootfs = rootfs
        """The mount point to unmount at delete (None when nothing was mounted)."""
        self.pid = os.getpid()
        self.status = Status.CREATED
        self.exit_status = 0
        self.exited_at_ns = 0
        self.exited = asyncio.Event()
        self.log = log
        self._on_exit = on_exit
        self._execution: Execution | None = None
        self._lock = threading.Lock()

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.id

    def start(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> float:
        """Instantiate and enter the guest; seconds from the call until its thread runs."""
        began = time.perf_counter()
        attachment = Attachment(self.stdio) if self.program is not None else None
        try:
            with self._lock:
                if self.status != Status.CREATED:
                    raise RpcError("FAILED_PRECONDITION", f"task {self.id} is {Status.Name(self.status).lower()}, not created")
                if self.program is not None and attachment is not None:
                    execution = engine.execution(self.program, self.run_spec)
                    execution.start()
                    self._execution = execution
                    attachment.guest_attached()
                    threading.Thread(target=self._watch, args=(execution, attachment, loop), name=f"wait {self.id}",
                                     daemon=True).start()
                self.status = Status.RUNNING
        except BaseException:
            if attachment is not None:
                attachment.close()
            raise
        return time.perf_counter() - began

    def _watch(self, execution: Execution, attachment: Attachment, loop: asyncio.AbstractEventLoop) -> None:
        result = execution.wait()
        assert result is not None  # wait() without a timeout returns the result
        attachment.drain()
        loop.call_soon_threadsafe(self.finish, result)

    def finish(self, result: RunResult) -> None:
        """Record the exit (on the event loop); later calls are ignored."""
        with self._lock:
            if self.status == Status.STOPPED:
                return
            self.status = Status.STOPPED
            self.exit_status = result.status
            self.exited_at_ns = time.time_ns()
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
            execution = self._execution
        if signal in HARMLESS:
            return
        killed = RunResult(128 + signal, "killed", f"killed by signal {signal}")
        if execution is None:  # never started, or a sandbox: nothing runs that must stop first
            self.finish(killed)
            return
        execution.kill(signal)
        asyncio.get_running_loop().call_later(KILL_GRACE, self._abandon, execution, killed)

    def _abandon(self, execution: Execution, killed: RunResult) -> None:
        if self.status == Status.RUNNING and execution.wait(0) is None:
            self.log.warning("the guest is blocked in a host call: reported killed now, it ends when the call returns")
            self.finish(killed)
