"""Small process and network helpers shared by the service fixtures.

Services log to a file (never a pipe, which would block a chatty daemon) and run in their own
session so that stopping one also reaches whatever it spawned in its process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (callers retry on a lost race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a daemon in a new session with stdout+stderr appended to log_path.

    `setpriv --pdeathsig TERM` (util-linux) makes the daemon get SIGTERM if the test process
    dies without running fixture teardown (e.g. SIGKILL), so nothing is left running.
    """
    setpriv = shutil.which("setpriv")
    prefix = [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [*prefix, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )


def tail(path: Path, limit: int = 4000) -> str:
    """The end of a log file, for error messages."""
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError as exc:
        return f"<no log: {exc}>"


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> T:
    """Poll probe() until it returns non-None; fail early if proc exits, with its log."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = probe()
        if value is not None:
            return value
        log = f"\n--- log {log_path} ---\n{tail(log_path)}" if log_path else ""
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with code {proc.returncode}{log}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout}s{log}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL it; always reaps the child.

    Signals go only while the leader is unreaped, so its pid (= pgid) cannot have been reused.
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    proc.wait(timeout=5.0)
