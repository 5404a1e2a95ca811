"""`shim start`: answer containerd with the socket of a daemon that will run this task.

Under the group's lock file: ask the group's daemon (if any) to reserve the task; a live one
answers with its socket, a dead one does not answer, one shutting down says no. Otherwise
spawn a daemon (fork, setsid, fork again, stdio on /dev/null, exec: containerd is no
subreaper and waits for `start`'s output to end) and wait until it is serving. The lock
makes concurrent starts for one group share one daemon; the reservation keeps an idle
daemon from exiting between this answer and containerd's Create.

Only the bootstrap JSON goes to stdout: containerd parses everything `start` prints.
"""

from __future__ import annotations

import fcntl
import os
import select
import sys
import time

from wasm_oci.errors import DaemonError, ShimConfigError, UsageError
from wasm_oci.shim import api_version, control, group
from wasm_oci.shim.config import ShimConfig, load
from wasm_oci.shim.flags import Flags

READY_TIMEOUT = 30.0


def _daemonize(argv: list[str], ready_fd: int) -> None:
    """In the forked child: become a session leader's orphaned child and exec the daemon."""
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.set_inheritable(ready_fd, True)
        os.chdir("/")
        os.execv(argv[0], argv)
    finally:
        os._exit(127)


def _wait_ready(fd: int, timeout: float) -> str:
    """The daemon's first line: "OK <address>" or "ERR <why>" ("" if it died first)."""
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise DaemonError(f"the shim daemon did not get ready within {timeout:g}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        line += chunk
    return line.decode(errors="replace").strip()


def spawn(flags: Flags, config: ShimConfig, directory: str) -> str:
    """Start the group's daemon with `flags.id` reserved; its task socket address."""
    config_path = os.path.join(directory, group.CONFIG)
    with open(config_path, "w", encoding="utf-8") as file:
        file.write(config.text)
    read_fd, write_fd = os.pipe()
    daemon = Flags()
    for name in ("namespace", "address", "publish_binary", "id", "debug"):
        setattr(daemon, name, getattr(flags, name))
    daemon.group_dir, daemon.config, daemon.ready_fd = directory, config_path, str(write_fd)
    argv = [sys.executable, "-m", "wasm_oci.shim", *daemon.argv(), "serve"]
    child = os.fork()
    if child == 0:
        os.close(read_fd)
        _daemonize(argv, write_fd)
    os.close(write_fd)
    try:
        os.waitpid(child, 0)
        answer = _wait_ready(read_fd, READY_TIMEOUT)
    finally:
        os.close(read_fd)
    if answer.startswith("OK "):
        return answer[3:]
    raise DaemonError(answer.removeprefix("ERR ") or f"the shim daemon exited before it was ready ({' '.join(argv)})")


def _read_spec(bundle: str) -> bytes:
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as file:
            return file.read()
    except OSError:
        return b""


def start(flags: Flags, options: bytes) -> str:
    """The bootstrap JSON for containerd."""
    if not flags.namespace or not flags.id:
        raise UsageError("start needs -namespace and -id")
    config = load(options)
    os.makedirs(config.run_dir, mode=0o711, exist_ok=True)
    version = api_version.task_api(flags.publish_binary, config.run_dir)
    if version == api_version.LEGACY and config.protocol == "grpc":
        raise ShimConfigError(f'{config.origin}: containerd 1.x talks to shims over ttrpc only; set protocol = "ttrpc"')
    bundle = os.getcwd()
    spec = _read_spec(bundle) if config.group in ("auto", "pod") else b""
    directory = group.directory(config, flags.address, group.name(config, flags.namespace, flags.id, spec))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(directory, group.LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        control_path = os.path.join(directory, group.CONTROL)
        address = control.reserve(control_path, flags.namespace, flags.id) or spawn(flags, config, directory)
    finally:
        os.close(lock)
    with open(os.path.join(bundle, control.BUNDLE_RECORD), "w", encoding="utf-8") as file:
        file.write(control_path)
    return f'{{"version":{version},"address":"{address}","protocol":"{config.protocol}"}}'
