"""containerd's task service (`containerd.task.v3.Task`, and the identical v2 of containerd 1.x)
for every task of one daemon, keyed by (namespace, id).

The protocol layer: it maps requests onto Task (task.py), Guests (guest.py) and the engine,
and reports the task events containerd's clients wait for. Handlers that block (Create mounts,
compiles, opens stdio and instantiates; Update instantiates again) are plain functions run on
worker threads; the others, Start among them, are coroutines on the event loop, where task
exits are recorded. Exec, Pause, Resume and
Checkpoint have no meaning for a single in-process guest and answer UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal as signals
import threading
from contextlib import suppress
from pathlib import Path

from google.protobuf.any_pb2 import Any
from google.protobuf.empty_pb2 import Empty
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from wasm_oci import __version__
from wasm_oci.engine import Engine, Preopen, RunResult, RunSpec
from wasm_oci.engine.acceptor import Acceptor
from wasm_oci.engine.proxy import ProxyHost
from wasm_oci.errors import RpcError
from wasm_oci.proto import events_pb2
from wasm_oci.proto import task_pb2 as api
from wasm_oci.proto.task_types_pb2 import ProcessInfo, Status
from wasm_oci.shim import control, runtime_spec, stats
from wasm_oci.shim import rootfs as mounts
from wasm_oci.shim.cgroups import ContainerCgroup, PodPlacement
from wasm_oci.shim.guest import Guests
from wasm_oci.shim.http_function import HttpPlan, HttpSettings, trigger_of
from wasm_oci.shim.lifetime import Lifetime
from wasm_oci.shim.logs import TASK, BundleLogs
from wasm_oci.shim.stdio import Stdio
from wasm_oci.shim.task import Task
from wasm_oci.shim.transport.events import EventPublisher
from wasm_oci.shim.transport.rpc import Context
from wasm_oci.status import killed

log = logging.getLogger(__name__)
FORGET_TIMEOUT = 5.0


def _timestamp(ns: int) -> Timestamp:
    stamp = Timestamp()
    if ns:
        stamp.FromNanoseconds(ns)
    return stamp


def _stdio_path(uri: str, name: str) -> str:
    """A stdio FIFO or file path; log URIs other than file:// need a logging binary we lack."""
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    if "://" in uri:
        raise RpcError("UNIMPLEMENTED", f"{name} {uri}: only FIFOs and file:// logs are supported")
    return uri


def _record_deleted(bundle: str, response: bytes) -> None:
    """The DeleteResponse, whole (renamed into place), where `shim delete` prints it from (control.DELETED_RECORD)."""
    path = os.path.join(bundle, control.DELETED_RECORD)
    temporary = f"{path}.tmp"
    try:
        with open(temporary, "wb") as file:
            file.write(control.printable(response))
        os.replace(temporary, path)
    except OSError:
        log.warning("cannot record the deletion in %s: `shim delete` will report 137", bundle)


class TaskService:
    def __init__(
        self,
        namespace: str,
        engine: Engine,
        guests: Guests,
        lifetime: Lifetime,
        publisher: EventPublisher,
        logs: BundleLogs,
        loop: asyncio.AbstractEventLoop,
        pod_daemon: bool = False,
    ) -> None:
        self.namespace = namespace
        """The daemon's own (every group lives in one namespace), for requests that name none:
        containerd 1.7 sends no namespace metadata to shims."""
        self.pod_daemon = pod_daemon
        """Group auto/pod: a pod sandbox's daemon is that pod's alone, and moves into its cgroup."""
        self._placement: PodPlacement | None = None
        self.engine, self.guests, self.lifetime, self.publisher = engine, guests, lifetime, publisher
        self.logs, self.loop = logs, loop
        self.tasks: dict[tuple[str, str], Task] = {}
        self._creating: set[tuple[str, str]] = set()
        self._guard = threading.Lock()
        self.acceptor = Acceptor()
        """Accepts the connections of every HTTP function of the daemon, on one thread."""

    # -- helpers -------------------------------------------------------------------------------
    def _key(self, context: Context, task_id: str) -> tuple[str, str]:
        return context.namespace or self.namespace, task_id

    def _get(self, context: Context, task_id: str, exec_id: str = "") -> Task:
        if exec_id:
            raise RpcError("NOT_FOUND", f"process {exec_id} of task {task_id} not found: Wasm tasks have no exec processes")
        task = self.tasks.get(self._key(context, task_id))
        if task is None:
            raise RpcError("NOT_FOUND", f"task {task_id} not found")
        return task

    def _publish(self, namespace: str, event: Message) -> None:
        """From any thread; events leave in the order they were published."""
        self.loop.call_soon_threadsafe(self.publisher.publish, namespace, event)

    def _exited(self, task: Task) -> None:
        if task.exit_reason == "oom":  # CRI then reports reason OOMKilled
            self._publish(task.namespace, events_pb2.TaskOOM(container_id=task.id))
        self._publish(
            task.namespace,
            events_pb2.TaskExit(
                container_id=task.id, id=task.id, pid=task.pid, exit_status=task.exit_status, exited_at=_timestamp(task.exited_at_ns)
            ),
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def Create(self, request: api.CreateTaskRequest, context: Context) -> api.CreateTaskResponse:
        key = self._key(context, request.id)
        namespace = key[0]
        if request.terminal:
            raise RpcError("FAILED_PRECONDITION", "a Wasm guest has no terminal: run it without -t/--tty")
        if request.checkpoint:
            raise RpcError("UNIMPLEMENTED", "restoring a checkpoint is not supported for Wasm tasks")
        with self._guard:
            if key in self.tasks or key in self._creating:
                raise RpcError("ALREADY_EXISTS", f"task {request.id} already exists")
            self._creating.add(key)
        try:
            self.lifetime.claim(key)
            with suppress(OSError):  # an earlier task's record must not answer for this one
                os.unlink(os.path.join(request.bundle, control.DELETED_RECORD))
            self.logs.attach(f"{namespace}/{request.id}", request.bundle)
            task_log = logging.LoggerAdapter(log, {TASK: f"{namespace}/{request.id}"})
            try:
                task = self._create(request, namespace, task_log)
            except BaseException as exc:
                task_log.error("create failed: %s", exc)
                self.logs.detach(f"{namespace}/{request.id}")
                self.lifetime.release(key)
                raise
            with self._guard:
                self.tasks[key] = task
        finally:
            with self._guard:
                self._creating.discard(key)
        self._publish(
            namespace,
            events_pb2.TaskCreate(
                container_id=request.id,
                bundle=request.bundle,
                rootfs=request.rootfs,
                pid=task.pid,
                io=events_pb2.TaskIO(stdin=request.stdin, stdout=request.stdout, stderr=request.stderr),
            ),
        )
        return api.CreateTaskResponse(pid=task.pid)

    def _create(self, request: api.CreateTaskRequest, namespace: str, task_log: logging.LoggerAdapter[logging.Logger]) -> Task:
        spec = runtime_spec.load(request.bundle)
        root = Path(spec.root) if os.path.isabs(spec.root) else Path(request.bundle, spec.root)
        mounted = None
        if request.rootfs:
            mounts.mount_all(request.rootfs, str(root))
            mounted = root
        cgroup = None
        try:
            program, http = None, None
            if spec.is_sandbox:
                if self.pod_daemon and self._placement is None:
                    self._placement = PodPlacement.for_sandbox(spec.cgroups_path)
                task_log.info("created a pod sandbox (no guest)")
            else:
                cgroup = ContainerCgroup.for_spec(spec.cgroups_path, spec.cpu)
                guest = self.guests.load(namespace, request.id, spec, root)
                program = guest.program
                if trigger_of(spec.env, guest.trigger, proxy=isinstance(program, ProxyHost)) == "http":
                    http = HttpPlan(HttpSettings.from_env(spec.env), runtime_spec.pod_network(request.bundle, spec), self.acceptor)
                task_log.info("created from %s%s", guest.describe(), f", an HTTP function on {http.describe()}" if http else "")
            stdio = Stdio(_stdio_path(request.stdin, "stdin"), _stdio_path(request.stdout, "stdout"), _stdio_path(request.stderr, "stderr"))
            root_preopen = (Preopen(root, "/", spec.root_readonly),) if root.is_dir() else ()
            run_spec = RunSpec(
                args=spec.args,
                env=spec.env,
                stdin=Path(stdio.stdin) if stdio.stdin else None,
                stdout=Path(stdio.stdout) if stdio.stdout else None,
                stderr=Path(stdio.stderr) if stdio.stderr else None,
                preopens=(*root_preopen, *spec.binds),
                memory_limit=spec.memory_limit,
            )
            task = Task(
                namespace,
                request.id,
                request.bundle,
                stdio,
                program,
                run_spec,
                mounted,
                self._exited,
                task_log,
                cgroup,
                spec.sandbox_id,
                http,
            )
            task.prepare(self.engine, self.loop)
            return task
        except BaseException:
            if mounted is not None:
                mounts.unmount(str(mounted))
            if cgroup is not None:
                cgroup.remove()
            raise

    async def Start(self, request: api.StartRequest, context: Context) -> api.StartResponse:
        task = self._get(context, request.id, request.exec_id)
        task.start()
        self._publish(task.namespace, events_pb2.TaskStart(container_id=task.id, pid=task.pid))
        return api.StartResponse(pid=task.pid)

    async def Wait(self, request: api.WaitRequest, context: Context) -> api.WaitResponse:
        task = self._get(context, request.id, request.exec_id)
        await task.exited.wait()
        return api.WaitResponse(exit_status=task.exit_status, exited_at=_timestamp(task.exited_at_ns))

    async def Kill(self, request: api.KillRequest, context: Context) -> Empty:
        self._get(context, request.id, request.exec_id).kill(request.signal)
        return Empty()

    async def Delete(self, request: api.DeleteRequest, context: Context) -> api.DeleteResponse:
        task = self._get(context, request.id, request.exec_id)
        if task.status == Status.RUNNING:
            raise RpcError("FAILED_PRECONDITION", f"task {task.id} is running: kill it before deleting it")
        task.finish(RunResult(killed(signals.SIGKILL), "killed", "deleted before it started"))  # no-op once stopped
        await self._remove(task)
        self._publish(
            task.namespace,
            events_pb2.TaskDelete(
                container_id=task.id, pid=task.pid, exit_status=task.exit_status, exited_at=_timestamp(task.exited_at_ns)
            ),
        )
        response = api.DeleteResponse(pid=task.pid, exit_status=task.exit_status, exited_at=_timestamp(task.exited_at_ns))
        _record_deleted(task.bundle, response.SerializeToString())
        return response

    def _release(self, task: Task) -> None:
        """What a deleted task holds outside the engine (blocks: umount, cgroup removal)."""
        if task.rootfs is not None:
            mounts.unmount(str(task.rootfs))
        if task.cgroup is not None:
            task.cgroup.remove()
        if task.program is None and self._placement is not None:
            self._placement.leave()  # the pod's sandbox is gone: so is the daemon's place in it
            self._placement = None

    async def _remove(self, task: Task) -> None:
        await self.loop.run_in_executor(None, self._release, task)
        with self._guard:
            self.tasks.pop(task.key, None)
        task.log.info("deleted (exit status %d)", task.exit_status)
        self.logs.detach(f"{task.namespace}/{task.id}")
        self.lifetime.release(task.key)

    async def forget(self, namespace: str, task_id: str) -> Task | None:
        """`shim delete` for a task containerd lost: stop it, forget it, say how it ended."""
        task = self.tasks.get((namespace, task_id))
        if task is None:
            self.lifetime.release((namespace, task_id))  # a reservation that never became a task
            return None
        if task.status != Status.STOPPED:
            task.kill(signals.SIGKILL)
            await asyncio.wait_for(task.exited.wait(), FORGET_TIMEOUT)
        await self._remove(task)
        return task

    async def Shutdown(self, request: api.ShutdownRequest, context: Context) -> Empty:
        """containerd is done with this task's connection; the daemon leaves when idle (lifetime.py)."""
        if self._key(context, request.id) not in self.tasks:
            self.lifetime.shutdown(self._key(context, request.id))
        return Empty()

    async def Connect(self, request: api.ConnectRequest, context: Context) -> api.ConnectResponse:
        task = self.tasks.get(self._key(context, request.id))
        return api.ConnectResponse(shim_pid=os.getpid(), task_pid=task.pid if task else 0, version=f"wasm-oci {__version__}")

    # -- inspection and updates ----------------------------------------------------------------
    async def State(self, request: api.StateRequest, context: Context) -> api.StateResponse:
        task = self._get(context, request.id, request.exec_id)
        return api.StateResponse(
            id=task.id,
            bundle=task.bundle,
            pid=task.pid,
            status=task.status,
            stdin=task.stdio.stdin,
            stdout=task.stdio.stdout,
            stderr=task.stdio.stderr,
            exit_status=task.exit_status,
            exited_at=_timestamp(task.exited_at_ns),
        )

    async def Pids(self, request: api.PidsRequest, context: Context) -> api.PidsResponse:
        task = self._get(context, request.id)
        return api.PidsResponse(processes=[ProcessInfo(pid=task.pid)])

    async def Stats(self, request: api.StatsRequest, context: Context) -> api.StatsResponse:
        task = self._get(context, request.id)
        if task.program is None:
            return api.StatsResponse(stats=self._pod_stats(task))
        used, peak = task.memory_bytes()
        served = task.function.counters if task.function is not None else None
        return api.StatsResponse(
            stats=stats.metrics(task.status == Status.RUNNING, task.cpu_ns(), used, peak, task.run_spec.memory_limit, served)
        )

    def _pod_stats(self, sandbox: Task) -> Any:
        """A pod sandbox's figures are its pod's (CRI's PodSandboxStats): the kernel's count of
        the pod's cgroup when this daemon is the pod's own and sits in it, else the sum of the
        pod's guests in this daemon."""
        running = sandbox.status == Status.RUNNING
        if self._placement is not None and sandbox.id == sandbox.sandbox_id:
            cpu, memory = self._placement.usage()
            return stats.metrics(running, cpu, memory, memory, None)
        with self._guard:
            members = [task for task in self.tasks.values() if task.sandbox_id == sandbox.id and task is not sandbox]
        held = [task.memory_bytes() for task in members]
        return stats.metrics(
            running, sum(task.cpu_ns() for task in members), sum(used for used, _ in held), sum(peak for _, peak in held), None
        )

    async def CloseIO(self, request: api.CloseIORequest, context: Context) -> Empty:
        """Nothing to do: the client's close of its stdin end is the guest's end-of-file
        (the engine relays the FIFO), and the shim holds no write end of it to close."""
        self._get(context, request.id, request.exec_id)
        return Empty()

    def Update(self, request: api.UpdateTaskRequest, context: Context) -> Empty:
        """Resources (an OCI LinuxResources, JSON in the Any): the memory limit (before Start
        the guest is instantiated again under it) and the CPU limits of its cgroup; annotations
        need nothing."""
        task = self._get(context, request.id)
        if not request.HasField("resources"):
            return Empty()
        try:
            resources = json.loads(request.resources.value or b"{}")
        except ValueError:
            raise RpcError("INVALID_ARGUMENT", f"resources of type {request.resources.type_url} are not JSON LinuxResources") from None
        resources = resources if isinstance(resources, dict) else {}
        limit = runtime_spec.memory_limit(resources)
        if limit != task.run_spec.memory_limit:
            task.limit_memory(limit)
        if task.cgroup is not None:
            task.cgroup.update(runtime_spec.cpu_limits(resources))
        return Empty()

    async def ResizePty(self, request: api.ResizePtyRequest, context: Context) -> Empty:
        self._get(context, request.id, request.exec_id)
        raise RpcError("FAILED_PRECONDITION", f"task {request.id} has no terminal to resize")

    # -- not for Wasm tasks --------------------------------------------------------------------
    async def Exec(self, request: api.ExecProcessRequest, context: Context) -> Empty:
        raise RpcError("UNIMPLEMENTED", "exec is not supported: a Wasm task runs one guest and has nothing to exec into; run another task")

    async def Pause(self, request: api.PauseRequest, context: Context) -> Empty:
        raise RpcError("UNIMPLEMENTED", "pause is not supported for Wasm tasks")

    async def Resume(self, request: api.ResumeRequest, context: Context) -> Empty:
        raise RpcError("UNIMPLEMENTED", "resume is not supported for Wasm tasks")

    async def Checkpoint(self, request: api.CheckpointTaskRequest, context: Context) -> Empty:
        raise RpcError("UNIMPLEMENTED", "checkpoint is not supported for Wasm tasks")
