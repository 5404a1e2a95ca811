"""A task's stdio FIFOs (the client's: ctr's, CRI's): attaching the guest to them without
blocking and without losing its output.

The guest's Wasmtime opens the output FIFO paths itself, and an open of one end of a FIFO
blocks until the other end is open. Around it:
- at Create, wait (up to READER_TIMEOUT) for the client to open stdout and stderr for reading
  (clients start opening their ends before they send Create) and hold a write end of each,
  so Wasmtime's open returns at once (a client that never attaches gets EPIPE);
- at exit, before the exit is reported, wait (up to DRAIN_TIMEOUT) until the client has read
  what the guest wrote, then let go. ctr opens its FIFOs on goroutines and, once it sees the
  exit, cancels an open that has not completed: without this, the output of a guest that
  ends within a millisecond is lost now and then (seen once in 150 runs with 50 at once).

Stdin needs nothing here: the engine opens a FIFO stdin itself without blocking and relays it
(engine/stdin.py), so that a kill can close it under a guest blocked reading it; the client's
close, or no client writing at the guest's start, is the guest's end-of-file as before.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import stat
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

READER_TIMEOUT = 2.0
DRAIN_TIMEOUT = 2.0
_POLL = 0.001
_PIPE_BUF = 4096


@dataclass(frozen=True)
class Stdio:
    """Paths of the task's stdio ("" when not given)."""

    stdin: str = ""
    stdout: str = ""
    stderr: str = ""


def _is_fifo(path: str) -> bool:
    """A FIFO (not a file to create, as a file:// log's is)."""
    try:
        return bool(path) and stat.S_ISFIFO(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _writer(path: str) -> int | None:
    """A write end, or None while no reader has the FIFO open (ENXIO)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        raise


def _has_reader(path: str) -> bool:
    """Only while holding a write end: opening and closing another one must not be the last
    writer's close, which a reader would take for EOF."""
    fd = _writer(path)
    if fd is not None:
        os.close(fd)
    return fd is not None


def _unread(fd: int) -> int:
    """Bytes still in the FIFO; 0 once the end was pointed at /dev/null (engine/detach.py)."""
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count)
    except OSError:
        return 0
    return count[0]


class Attachment:
    """The shim's own ends of a task's stdio FIFOs, from Create until the exit is reported."""

    def __init__(self, stdio: Stdio, reader_timeout: float = READER_TIMEOUT) -> None:
        self._unattended: list[str] = []
        """Output paths nobody reads, which Wasmtime's open would block on."""
        self._outputs: list[tuple[str, int]] = []
        """Write ends of outputs a client reads, held until the exit so `drain` can watch them."""
        self._paths = (stdio.stdout, stdio.stderr)
        try:
            deadline = time.monotonic() + reader_timeout
            for path in self._paths:
                if not _is_fifo(path):
                    continue
                while (fd := _writer(path)) is None and time.monotonic() < deadline:
                    time.sleep(_POLL)
                if fd is not None:
                    self._outputs.append((path, fd))
                else:
                    self._unattended.append(path)
        except BaseException:
            self.close()
            raise

    @contextmanager
    def opening(self) -> Iterator[None]:
        """Hold read-write ends of the unattended paths while Wasmtime opens them, so its
        opens return at once; let go after, so the guest sees EPIPE on an output nobody
        reads, as a process would."""
        held: list[int] = []
        try:
            for path in self._unattended:
                held.append(os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
            yield
        finally:
            for fd in held:
                os.close(fd)

    def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Wait until the client read all the guest wrote (or left), then let go."""
        deadline = time.monotonic() + timeout
        for path, fd in self._outputs:
            while _unread(fd) and _has_reader(path) and time.monotonic() < deadline:
                time.sleep(_POLL)
        self.close()

    def write_line(self, stream: int, line: str) -> None:
        """One line on stdout (0) or stderr (1) from the shim itself (an HTTP function's log),
        if a client reads it. Never blocks: a line the FIFO has no room for is dropped (a line
        under PIPE_BUF is written whole or not at all)."""
        path = self._paths[stream]
        fd = next((fd for held, fd in self._outputs if held == path), None)
        if fd is None and path and path not in self._unattended:  # a file:// log: appended to
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            except OSError:
                self._unattended.append(path)  # not tried again
                return
            self._outputs.append((path, fd))
        if fd is not None:
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(fd, line.encode("utf-8", "replace")[: _PIPE_BUF - 1] + b"\n")

    def close(self) -> None:
        for _, fd in self._outputs:
            os.close(fd)
        self._outputs = []
