"""The daemon's log, written where containerd reads shim logs: each task bundle's `log` FIFO.

containerd copies what a shim writes to `<bundle>/log` into its own log while the task's
connection lives. One daemon serves many bundles, so a record about a task goes to that
task's FIFO and a record about the daemon goes to the oldest attached one. Writes never
block: a full pipe (containerd not reading) drops the line. Lines are logfmt, as Go shims
(logrus) write them.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time

RUNTIME = "io.containerd.wasm-oci.v1"
TASK = "task"
"""The `extra` key naming the task ("namespace/id") a record is about."""


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class BundleLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self._pipes: dict[str, int] = {}
        self._guard = threading.Lock()

    def attach(self, task: str, bundle: str) -> None:
        """Send `task`'s records to its bundle's log FIFO (if containerd has it open)."""
        try:
            fd = os.open(os.path.join(bundle, "log"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # no FIFO or no reader: containerd is not collecting this shim's log
        with self._guard:
            old = self._pipes.pop(task, None)
            self._pipes[task] = fd
        if old is not None:
            os.close(old)

    def detach(self, task: str) -> None:
        with self._guard:
            fd = self._pipes.pop(task, None)
        if fd is not None:
            os.close(fd)

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.created % 1 * 1e6):06d}Z"
        fields = [
            f"time={_quote(stamp)}",
            f"level={record.levelname.lower().replace('warning', 'warn')}",
            f"msg={_quote(record.getMessage())}",
        ]
        if task := getattr(record, TASK, None):
            namespace, _, task_id = task.partition("/")
            fields += [f"id={_quote(task_id)}", f"namespace={_quote(namespace)}"]
        if record.exc_info:
            fields.append(f"error={_quote(logging.Formatter().formatException(record.exc_info))}")
        fields.append(f"runtime={RUNTIME}")
        return " ".join(fields) + "\n"

    def emit(self, record: logging.LogRecord) -> None:
        task = getattr(record, TASK, None)
        with self._guard:
            fd = self._pipes.get(task) if task else None
            if fd is None:
                fd = next(iter(self._pipes.values()), None)
        if fd is None:
            return
        try:
            os.write(fd, self.format(record).encode())
        except OSError as exc:
            if exc.errno == errno.EPIPE and task:
                self.detach(task)
