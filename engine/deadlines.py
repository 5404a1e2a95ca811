"""Timeouts for many guests from one thread.

A thread per timed run would cost more than the run itself (~0.1 ms to start one); here a
timed run costs a heap push. The thread starts with the first timeout and sleeps until the
earliest deadline. A run that ends first cancels its deadline, which drops the action (and
what it holds, such as a request body) at once; the heap entry itself is popped when due.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Deadline:
    def __init__(self, when: float, order: int, action: Callable[[], None]) -> None:
        self.when, self.order = when, order
        self.action: Callable[[], None] | None = action

    def __lt__(self, other: Deadline) -> bool:
        return (self.when, self.order) < (other.when, other.order)

    def cancel(self) -> None:
        self.action = None


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._order = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def at(self, when: float, action: Callable[[], None]) -> Deadline:
        """Call `action` on the deadline thread once `time.monotonic()` reaches `when`, unless cancelled."""
        deadline = Deadline(when, next(self._order), action)
        with self._wakeup:
            heapq.heappush(self._heap, deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="wasm-oci-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0] is deadline:
                self._wakeup.notify()
        return deadline

    def _loop(self) -> None:
        while True:
            with self._wakeup:
                while not self._heap or self._heap[0].when > time.monotonic():
                    self._wakeup.wait(self._heap[0].when - time.monotonic() if self._heap else None)
                action = heapq.heappop(self._heap).action
            if action is not None:
                action()
