"""A CGI guest's outputs and the watching of guests that run on their request's thread.

stdout and stderr land in anonymous memory files (memfd) that no Python code reads while the
guest writes; one watcher thread per server looks at their sizes and at each guest's deadline
every WATCH, stops a guest past either, and answers for one still stuck GRACE later.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

from wasm_oci.engine import cgi
from wasm_oci.engine.runner import Execution

if TYPE_CHECKING:
    from wasm_oci.engine.serve.server import CgiServer

WATCH = 0.005
"""Seconds between two looks at a running guest's output sizes: what it can write past
max_response before it is stopped (a single write is bounded by its memory limit)."""
GRACE = 0.1
"""Seconds a stopped guest has to end before it counts as stuck in a host call."""
STUCK = "; stuck in a host call, it keeps its slot until the call returns"
_WATCHER_IDLE = 1.0
"""Seconds without a guest to watch before the watcher stops polling."""


@contextlib.contextmanager
def memfd(name: str) -> Iterator[int]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        yield fd
    finally:
        os.close(fd)


class Outputs:
    """A guest's stdout and stderr: two memfds, and the paths Wasmtime opens them by.

    A pair serves request after request (created, closed and named anew each time they cost
    ~35 us of a request): only once its guest's store is closed (the run ended, so no file of
    it remains open) and emptied. A pair whose guest was stopped is sealed against growth, or
    still held by a guest stuck in a host call: it is closed, never reused."""

    __slots__ = ("stderr", "stderr_path", "stdout", "stdout_path")

    def __init__(self) -> None:
        self.stdout = os.memfd_create("stdout", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            self.stderr = os.memfd_create("stderr", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except BaseException:
            os.close(self.stdout)
            raise
        self.stdout_path, self.stderr_path = fd_path(self.stdout), fd_path(self.stderr)

    def empty(self) -> None:
        os.ftruncate(self.stdout, 0)
        os.ftruncate(self.stderr, 0)

    def close(self) -> None:
        os.close(self.stdout)
        os.close(self.stderr)

    def seal(self) -> None:
        seal(self.stdout, self.stderr)


def seal(*fds: int) -> None:
    """Make every later write of a stopped guest fail, whatever it does before it stops."""
    for fd in fds:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)


class Watched:
    """A guest running on its request's thread, as the watcher sees it."""

    __slots__ = ("deadline", "execution", "outputs", "request", "rescue", "rescue_at", "rescued", "sent", "server", "stopped")

    def __init__(
        self, server: CgiServer, request: cgi.Request, execution: Execution, outputs: Outputs, rescue: Callable[[cgi.Response], None]
    ) -> None:
        self.server, self.request, self.execution, self.outputs, self.rescue = server, request, execution, outputs, rescue
        timeout = server.spec.timeout
        self.deadline = math.inf if timeout is None else time.monotonic() + timeout
        self.rescue_at = math.inf
        self.stopped = ""
        """Why the watcher stopped the guest ("" while it has not)."""
        self.rescued = False
        self.sent = threading.Event()

    def check(self, now: float, cap: int) -> None:
        """Stop the guest at its deadline or once an output passes `cap`; answer for it if it
        still runs GRACE later (stuck in a host call)."""
        if self.rescued or self.execution.result is not None:
            return
        if not self.stopped:
            if now >= self.deadline:
                self._stop(now, f"timed out after {self.server.spec.timeout}s")
            elif os.fstat(self.outputs.stdout).st_size > cap:
                self._stop(now, f"stdout passed the {cap}-byte limit")
            elif os.fstat(self.outputs.stderr).st_size > cap:
                self._stop(now, f"stderr passed the {cap}-byte limit")
        elif now >= self.rescue_at:
            self.rescued = True
            threading.Thread(target=self._answer, name="wasm-oci rescue", daemon=True).start()

    def _stop(self, now: float, why: str) -> None:
        self.stopped = why
        self.outputs.seal()
        self.execution.kill()
        self.rescue_at = now + GRACE

    def _answer(self) -> None:
        try:
            code = HTTPStatus.GATEWAY_TIMEOUT if self.stopped.startswith("timed out") else HTTPStatus.BAD_GATEWAY
            self.rescue(self.server.error_response(self.request, code, self.stopped + STUCK))
        finally:
            self.sent.set()


class Watcher:
    """One thread for all the guests that run on their request's thread: every WATCH it looks
    at each one's output sizes and deadline (see `Watched.check`). A request only adds itself
    to a set and takes itself out: one that ends within WATCH costs the watcher nothing. Idle
    for _WATCHER_IDLE, the thread waits for the next guest instead of polling."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._running: set[Watched] = set()
        self._state = threading.Condition()
        self._waiting = self._closed = False
        threading.Thread(target=self._loop, name="wasm-oci watcher", daemon=True).start()

    def add(self, watched: Watched) -> None:
        with self._state:
            self._running.add(watched)
            if self._waiting:
                self._state.notify()

    def discard(self, watched: Watched) -> None:
        """Once this returns the watcher no longer acts on `watched`."""
        with self._state:
            self._running.discard(watched)

    def close(self) -> None:
        with self._state:
            self._closed = True
            self._state.notify()

    def _loop(self) -> None:
        busy = time.monotonic()
        while True:
            with self._state:
                if self._closed:
                    return
                now = time.monotonic()
                if self._running:
                    busy = now
                    for watched in list(self._running):
                        watched.check(now, self._cap)
                elif now - busy > _WATCHER_IDLE:
                    self._waiting = True
                    self._state.wait()
                    self._waiting = False
                    busy = time.monotonic()
                    continue
            time.sleep(WATCH)


def fd_path(fd: int) -> Path:
    return Path(f"/proc/self/fd/{fd}")
