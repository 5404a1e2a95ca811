"""When a daemon may exit, and the guarantee that a daemon handed a task is still there.

A daemon holds one entry per task it serves and per reservation `start` made (a task
containerd is about to Create; forgotten after RESERVATION_TTL if it never comes). When the
last entry goes, it lingers `linger` seconds for new tasks, so back-to-back `ctr run`s reuse
it (and at least SHUTDOWN_WAIT for containerd's Shutdown, the call after Delete that Go shims
exit on). Then it commits to exit under the group lock that `start` also takes: no `start`
is between its probe and its answer, so no task is handed to a daemon that is leaving. From
then on it answers reservations NO and Create UNAVAILABLE, and it removes its control socket
so that the next `start` spawns a fresh daemon.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading
import time
from collections.abc import Callable

from wasm_oci.errors import RpcError

RESERVATION_TTL = 60.0
SHUTDOWN_WAIT = 1.0
Key = tuple[str, str]


class Lifetime:
    def __init__(self, loop: asyncio.AbstractEventLoop, lock_path: str, linger: float, leave: Callable[[], None]) -> None:
        self._loop, self._lock_path, self._linger, self._leave = loop, lock_path, linger, leave
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
        self._loop.call_soon_threadsafe(self._rearm)

    def release(self, key: Key) -> None:
        """The task (or reservation) is gone."""
        with self._guard:
            self._holds.pop(key, None)
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

    async def _try_leave(self) -> None:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            with self._guard:
                if not self._idle() or self.closing:
                    return
                self.closing = True
            self._leave()  # under the group lock: removes the control socket
        finally:
            os.close(fd)
