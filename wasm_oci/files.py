"""Files that appear whole or not at all: the one way this project writes a file in place."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

WRITE_BEHIND = 8 << 20
"""Bytes of a durable write after which the disk is set to work on them in the background."""


class _WriteBehind:
    """fdatasync of a file being written, on a thread while the writer goes on, so the disk
    writes a download as it arrives and the final fsync has only the tail left to wait for.
    An error it meets is kept for `finish` (the kernel reports a writeback error only once)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.wake = threading.Event()
        self.finished = False
        self.error: OSError | None = None
        self.thread: threading.Thread | None = None

    def kick(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="write-behind", daemon=True)
            self.thread.start()
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            if self.finished:
                return
            try:
                os.fdatasync(self.fd)
            except OSError as exc:
                self.error = exc
                return

    def finish(self) -> None:
        self.finished = True
        self.wake.set()
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error


def atomic_write(path: Path, chunks: Iterable[bytes], mode: int = 0o644, durable: bool = True) -> None:
    """Write to a sibling temp file and rename: readers see the old file or the whole new one, never a part.

    `durable=False` skips the fsync: right for store blobs, which are re-verified on every read,
    so a blob torn by a crash is detected instead of trusted. A durable write of more than
    WRITE_BEHIND bytes starts the disk on it while it is still being written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            behind = _WriteBehind(fd) if durable else None
            try:
                unsynced = 0
                for chunk in chunks:
                    out.write(chunk)
                    unsynced += len(chunk)
                    if behind is not None and unsynced >= WRITE_BEHIND:
                        out.flush()
                        behind.kick()
                        unsynced = 0
            finally:
                if behind is not None:
                    behind.finish()  # before the file is closed: the thread uses its descriptor
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
