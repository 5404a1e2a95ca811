"""When a daemon may exit, and the guarantee that a daemon handed a task is still there.

A daemon holds one entry per task it serves and per reservation `start` made (a task
containerd is about to Create; forgotten after RESERVATION_TTL if it never comes). When the
last entry goes, it lingers `linger` seconds for new tasks, so back-to-back `ctr run`s reuse
it (and at least SHUTDOWN_WAIT for containerd's Shutdown, the call after Delete that Go shims
exit on). Then it commits to exit under the group lock that `start` also takes: no `start`
is between its probe and its answer, so no task is handed to a daemon that is leaving. From
then on it answers reservations NO and Create UNAVAILABLE, and it removes its control socket
so that the next `start` spawns a fresh daemon.

The sh launcher's fast `start` (launcher.py) cannot take the lock: it reserves by creating a
file in the door's `reserved/` and only then checks that the door (`open`) still names this
process; a leaving daemon first closes the door and only then looks for reservations. Each
writes before it reads, so at least one sees the other: sh falls back to Python, or the
daemon stays (and takes the reservation as its own, until Create or RESERVATION_TTL).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from wasm_oci.errors import RpcError
from wasm_oci.shim.group import OPEN, RESERVED, reservation

RESERVATION_TTL = 60.0
SHUTDOWN_WAIT = 1.0
Key = tuple[str, str]


def _start_time() -> str:
    """This process's start time (field 22 of /proc/self/stat): with the pid, names it for good."""
    with open("/proc/self/stat") as file:
        return file.read().rpartition(")")[2].split()[19]


class Door:
    """The files that let the sh launcher hand this daemon a task (see group.py)."""

    def __init__(self, group_dir: str, answer: str) -> None:
        self._open = os.path.join(group_dir, OPEN)
        self._reserved = os.path.join(group_dir, RESERVED)
        self._text = f"{os.getpid()} {_start_time()}\n{answer}\n"
        """Who accepts tasks, then the bootstrap JSON after its version: sh prints
        `{"version":N,` and this."""

    def open(self) -> None:
        os.makedirs(self._reserved, mode=0o700, exist_ok=True)
        temporary = f"{self._open}.{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(self._text)
        os.replace(temporary, self._open)

    def close(self) -> None:
        """Stop sh from handing out this daemon (a newer daemon's door stays)."""
        try:
            with open(self._open, encoding="utf-8") as file:
                if file.read() != self._text:
                    return
            os.unlink(self._open)
        except OSError:
            pass

    def reservations(self) -> dict[Key, float]:
        """Reservations sh took, key -> expiry (time.monotonic()); expired ones are removed."""
        found: dict[Key, float] = {}
        try:
            names = os.listdir(self._reserved)
        except OSError:
            return found
        now, wall = time.monotonic(), time.time()
        for name in names:
            namespace, at, task_id = name.partition("@")
            path = os.path.join(self._reserved, name)
            try:
                expiry = os.stat(path).st_mtime + RESERVATION_TTL - wall
                if expiry <= 0 or not at:
                    os.unlink(path)
                    continue
            except OSError:
                continue
            found[namespace, task_id] = now + expiry
        return found

    def drop(self, key: Key) -> None:
        """The reservation became a task, or was deleted."""
        with suppress(OSError):
            os.unlink(os.path.join(self._reserved, reservation(*key)))


class Lifetime:
    def __init__(self, loop: asyncio.AbstractEventLoop, lock_path: str, linger: float, leave: Callable[[], None]) -> None:
        self._loop, self._lock_path, self._linger, self._leave = loop, lock_path, linger, leave
        self.door: Door | None = None
        """Set once the daemon serves: from then on sh may hand it tasks."""
        self._holds: dict[Key, float | None] = {}
        """Task key -> reservation expiry (time.monotonic()), None once the task exists."""
        self._timer: asyncio.TimerHandle | None = None
        self._guard = threading.Lock()
        self.closing = False

    def reserve(self, key: Key) -> bool:
        """Hold a place for a task `start` hands out; False once the daemon is leaving."""
        with self._guard:
            if self.closing:
                return False
            if self._holds.get(key, 0.0) is not None:
                self._holds[key] = time.monotonic() + RESERVATION_TTL
        self._loop.call_soon_threadsafe(self._rearm)
        self._loop.call_soon_threadsafe(lambda: self._loop.call_later(RESERVATION_TTL + 0.1, self._rearm))
        return True

    def claim(self, key: Key) -> None:
        """A task is being created: hold the daemon until `release(key)`."""
        with self._guard:
            if self.closing:
                raise RpcError("UNAVAILABLE", "this shim daemon is shutting down; retry to get a new one")
            self._holds[key] = None
        if self.door is not None:
            self.door.drop(key)
        self._loop.call_soon_threadsafe(self._rearm)

    def release(self, key: Key) -> None:
        """The task (or reservation) is gone."""
        with self._guard:
            self._holds.pop(key, None)
        if self.door is not None:
            self.door.drop(key)
        self._loop.call_soon_threadsafe(self._rearm)

    def shutdown(self, key: Key) -> None:
        """containerd's Shutdown for a task: the linger need not wait for it any more."""
        with self._guard:
            self._holds.pop(key, None)
        self._loop.call_soon_threadsafe(self._rearm, self._linger)

    def _idle(self) -> bool:
        """No live entry (expired reservations are dropped); call with the guard held."""
        now = time.monotonic()
        for key in [k for k, expiry in self._holds.items() if expiry is not None and expiry <= now]:
            del self._holds[key]
        return not self._holds

    def _rearm(self, linger: float | None = None) -> None:
        """(On the loop) start the linger timer when idle, cancel it when not."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with self._guard:
            idle = self._idle() and not self.closing
        if idle:
            delay = max(self._linger, SHUTDOWN_WAIT) if linger is None else linger
            self._timer = self._loop.call_later(delay, lambda: self._loop.create_task(self._try_leave()))

    def _take(self, pending: dict[Key, float]) -> None:
        """(On the loop, under the group lock, door closed) stay after all: hold what sh reserved, reopen."""
        with self._guard:
            for key, expiry in pending.items():
                if self._holds.get(key, 0.0) is not None:
                    self._holds[key] = max(expiry, self._holds.get(key) or 0.0)
        if self.door is not None:
            self.door.open()
        self._rearm()
        for expiry in pending.values():
            self._loop.call_later(max(0.0, expiry - time.monotonic()) + 0.1, self._rearm)

    async def _try_leave(self) -> None:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            with self._guard:
                if not self._idle() or self.closing:
                    return
            pending = {}
            if self.door is not None:
                self.door.close()
                pending = self.door.reservations()
            with self._guard:
                self.closing = not pending and self._idle()  # idle again: a Create may have come meanwhile
            if not self.closing:
                self._take(pending)
                return
            self._leave()  # under the group lock: removes the control socket
        finally:
            os.close(fd)
