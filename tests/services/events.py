"""`ctr events` as a test probe: a subscriber whose lines a thread collects.

The subscription is confirmed before the watcher is handed out: it creates throwaway
namespaces until containerd's `/namespaces/create` event for one comes back, so no event a
test then causes can slip past an unready subscriber.
"""

from __future__ import annotations

import queue
import subprocess
import threading
import time
import uuid

from .containerd import ContainerdServer
from .tools import find_tool


class EventWatcher:
    def __init__(self, containerd: ContainerdServer, ready_timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            [find_tool("ctr"), "--address", str(containerd.address), "events"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self._confirm_subscribed(containerd, ready_timeout)
        except BaseException:
            self.stop()
            raise

    def _confirm_subscribed(self, containerd: ContainerdServer, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            marker = f"events-probe-{uuid.uuid4().hex[:12]}"
            containerd.ctr("namespaces", "create", marker)
            try:
                self.next_with(marker, timeout=0.5)
                return
            except AssertionError:
                continue
            finally:
                containerd.ctr("namespaces", "remove", marker, check=False)
        raise AssertionError(f"`ctr events` saw none of its probe events within {timeout}s")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_with(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise AssertionError(f"ctr events printed no line with {text!r}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
