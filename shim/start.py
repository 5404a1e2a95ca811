"""`shim start`: answer containerd with the socket of a daemon that will run this task.

Under the group's lock file: ask the group's daemon (if any) to reserve the task; a live one
answers with its socket, a dead one does not answer, one shutting down says no. Otherwise
spawn a daemon (fork, setsid, fork again, stdio on /dev/null, exec: containerd is no
subreaper and waits for `start`'s output to end) and wait until it is serving. The lock
makes concurrent starts for one group share one daemon; the reservation keeps an idle
daemon from exiting between this answer and containerd's Create.

Then it writes the group's route (group.py) so that the next `start` of the same group,
with the same inputs, is answered by the sh launcher without Python (launcher.py).

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
from wasm_oci.shim.config import ENV_CONFIG, SYSTEM_CONFIG, ShimConfig, load
from wasm_oci.shim.flags import Flags

READY_TIMEOUT = 30.0
ROUTE_FORMAT = "wasm-oci-route 1"


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


def _write_route(path: str, flags: Flags, options: bytes, config: ShimConfig, directory: str, version: int) -> None:
    """The inputs this answer came from, line by line, exactly as the sh launcher spells them.

    The file the configuration came from (or the system file that would have been read had it
    existed) is named so that sh sees its changes; the route goes stale with containerd's
    socket too (a restarted, perhaps upgraded, containerd). Called under the group lock.
    """
    source = "" if config.origin in ("defaults", "runtime options ConfigBody") else config.origin
    absent = SYSTEM_CONFIG if config.origin == "defaults" else ""
    lines = (
        ROUTE_FORMAT,
        flags.namespace,
        flags.address,
        flags.publish_binary,
        os.environ.get(ENV_CONFIG, ""),
        " ".join(f"{byte:02x}" for byte in options),
        source,
        absent,
        directory,
        str(version),
    )
    if any("\n" in line for line in lines):
        return
    temporary = f"{path}.{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
        os.replace(temporary, path)
        routes = os.path.join(directory, group.ROUTES)
        with open(routes, "a+", encoding="utf-8") as file:
            file.seek(0)
            if path not in file.read().splitlines():
                file.write(path + "\n")
    except OSError:
        pass  # no fast path for this group: every start comes here


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
    spec = _read_spec(bundle)
    name = group.name(config, flags.namespace, flags.id, spec)
    directory = group.directory(config, flags.address, name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    lock = os.open(os.path.join(directory, group.LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        control_path = os.path.join(directory, group.CONTROL)
        address = control.reserve(control_path, flags.namespace, flags.id) or spawn(flags, config, directory)
        route = group.route_path(bundle, spec)
        if route and not name.startswith("task/") and group.is_safe(flags.namespace) and flags.address:
            _write_route(route, flags, options, config, directory, version)
    finally:
        os.close(lock)
    with open(os.path.join(bundle, control.BUNDLE_RECORD), "w", encoding="utf-8") as file:
        file.write(control_path)
    return f'{{"version":{version},"address":"{address}","protocol":"{config.protocol}"}}'
