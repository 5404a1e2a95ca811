"""The shim daemon: one long-lived process serving every task of its group.

`start` execs it (`serve`) with the group directory, the configuration it read and a pipe
to report readiness on. It listens on a task socket (ttrpc, or gRPC if configured) that
`start` announces to containerd for each task of the group, and on the control socket
`start` and `delete` use. It exits when lifetime.py says so, or dies with its tasks
(containerd then cleans up through `shim delete`).

It also keeps the files the sh launcher answers from without Python: the door (lifetime.py
`Door`) while it accepts tasks, and each deleted task's DeleteResponse in its bundle
(service.py), which containerd's `shim delete` then prints.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path

from wasm_oci.engine import Engine
from wasm_oci.errors import UsageError
from wasm_oci.proto import task_pb2, task_v2_pb2
from wasm_oci.shim import config as configs
from wasm_oci.shim import group
from wasm_oci.shim.admission import TrustGate
from wasm_oci.shim.flags import Flags
from wasm_oci.shim.guest import Guests
from wasm_oci.shim.image import Containerd
from wasm_oci.shim.lifetime import Door, Lifetime
from wasm_oci.shim.logs import BundleLogs
from wasm_oci.shim.service import TaskService
from wasm_oci.shim.threadname import BLOCKING_IO, name_this_thread
from wasm_oci.shim.transport.events import EventPublisher
from wasm_oci.shim.transport.rpc import Registry
from wasm_oci.shim.transport.ttrpc import TtrpcServer

log = logging.getLogger(__name__)
SHUTDOWN_GRACE = 5.0


def _raise_open_files_limit() -> None:
    """The soft limit of open files up to the hard one, as Go programs (containerd and its other
    shims) do at start: every HTTP function holds a listener and its connections, and a
    thousand of them in one daemon pass the usual soft limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Daemon:
    def __init__(self, flags: Flags) -> None:
        if not (flags.group_dir and flags.config and flags.namespace and flags.id):
            raise UsageError("serve is started by `start`: it needs -group-dir, -config, -namespace and -id")
        self.flags = flags
        _raise_open_files_limit()
        self.config = configs.parse(Path(flags.config).read_text(encoding="utf-8"), flags.config)
        self.control_path = os.path.join(flags.group_dir, group.CONTROL)
        self.task_path = os.path.join(flags.group_dir, f"task-{os.getpid()}.sock")
        self.announced = ""
        self.logs = BundleLogs()
        self._leaving = asyncio.Event()
        self._control_inode = 0

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            words = (await reader.readline()).decode(errors="replace").split()
            answer = "NO bad request"
            if len(words) == 3 and words[0] == "RESERVE":
                answer = f"OK {self.announced}" if self.lifetime.reserve((words[1], words[2])) else "NO shutting down"
            elif len(words) == 3 and words[0] == "DELETE":
                task = await self.service.forget(words[1], words[2])
                answer = "GONE" if task is None else f"EXITED {task.pid} {task.exit_status} {task.exited_at_ns}"
            writer.write(answer.encode() + b"\n")
            await writer.drain()
        except (TimeoutError, OSError) as exc:
            log.warning("control request failed: %s", exc)
        finally:
            writer.close()

    def _leave(self) -> None:
        """Called under the group lock once idle (door closed): no new task may find this daemon."""
        with suppress(OSError):
            if os.stat(self.control_path).st_ino == self._control_inode:
                os.unlink(self.control_path)
        self._forget_routes()
        self._leaving.set()

    def _forget_routes(self) -> None:
        """Remove the routes `start` wrote to this group (one per pod: they would pile up in
        containerd's state dir); the next `start` of the group writes them again."""
        listing = os.path.join(self.flags.group_dir, group.ROUTES)
        try:
            with open(listing, encoding="utf-8") as file:
                routes = file.read().splitlines()
            os.unlink(listing)
        except OSError:
            return
        for route in routes:
            with suppress(OSError):
                with open(route, encoding="utf-8") as file:
                    lines = file.read().splitlines()
                if len(lines) > 8 and lines[8] == self.flags.group_dir:  # not since rewritten for another group
                    os.unlink(route)

    async def run(self, ready: Ready) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(4, initializer=name_this_thread, initargs=(BLOCKING_IO,)))
        root = logging.getLogger("wasm_oci")
        root.addHandler(self.logs)
        root.setLevel(logging.DEBUG if self.flags.debug else logging.INFO)
        self.lifetime = Lifetime(loop, os.path.join(self.flags.group_dir, group.LOCK), self.config.linger, self._leave)
        engine = Engine(cache_dir=Path(self.config.cache_dir) if self.config.cache_dir else None)
        containerd = Containerd(self.flags.address or os.environ.get("GRPC_ADDRESS", ""))
        guests = Guests(engine, containerd, TrustGate(self.config.policy, self.config.plain_http))
        publisher = EventPublisher(os.environ.get("TTRPC_ADDRESS", f"{self.flags.address}.ttrpc"))
        self.service = TaskService(
            self.flags.namespace, engine, guests, self.lifetime, publisher, self.logs, loop, pod_daemon=self.config.group in ("auto", "pod")
        )
        registry = Registry()
        for module in (task_pb2, task_v2_pb2):
            registry.register_service(module.DESCRIPTOR.services_by_name["Task"], self.service)

        with suppress(FileNotFoundError):
            os.unlink(self.task_path)
        if self.config.protocol == "grpc":
            from wasm_oci.shim.transport.grpc_server import start_grpc_server

            grpc_server = await start_grpc_server(registry, self.task_path)
            self.announced = self.task_path  # containerd's gRPC dialer wants a plain path
        else:
            ttrpc_server = TtrpcServer(registry)
            await ttrpc_server.start(self.task_path)
            self.announced = f"unix://{self.task_path}"
        with suppress(FileNotFoundError):
            os.unlink(self.control_path)  # a dead daemon's: `start` holds the group lock, none is alive
        control = await asyncio.start_unix_server(self._control, path=self.control_path)
        self._control_inode = os.stat(self.control_path).st_ino
        self.lifetime.reserve((self.flags.namespace, self.flags.id))
        self.lifetime.door = Door(self.flags.group_dir, f'"address":"{self.announced}","protocol":"{self.config.protocol}"}}')
        self.lifetime.door.open()
        ready.report(f"OK {self.announced}")
        log.info("serving %s tasks on %s (pid %d)", self.config.protocol, self.task_path, os.getpid())

        await self._leaving.wait()
        log.info("idle for %gs: exiting", self.config.linger)
        control.close()
        if self.config.protocol == "grpc":
            await grpc_server.stop(SHUTDOWN_GRACE)
        else:
            await ttrpc_server.shutdown(SHUTDOWN_GRACE)
        await publisher.close()
        with suppress(FileNotFoundError):
            os.unlink(self.task_path)


class Ready:
    """The pipe `start` waits on: one line, "OK <address>" or "ERR <why>", then closed."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def report(self, line: str) -> None:
        if self._fd is None:
            return
        with suppress(OSError):
            os.write(self._fd, line.encode() + b"\n")
        os.close(self._fd)
        self._fd = None


def serve(flags: Flags) -> None:
    """Run the daemon; a failure before it is ready goes to `start` through the ready pipe."""
    ready = Ready(int(flags.ready_fd) if flags.ready_fd else None)
    try:
        asyncio.run(Daemon(flags).run(ready))
    except BaseException as exc:
        log.exception("shim daemon failed")
        ready.report(f"ERR shim daemon: {exc}")
        raise
