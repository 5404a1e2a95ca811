"""Letting go of a guest's output FIFOs while its thread is stuck in a host call.

A guest blocked in a host call a stop cannot end (writing to an output nobody reads; a stdin
read, a module's clock wait and a component's poll do end, see runner.py and polls.py) cannot
be stopped until the call returns, and its store cannot be closed under it. Its stdout and stderr FIFOs must not wait with it: a client
that waits for end-of-file on them (containerd's CRI does, before it marks a container exited)
would wait as long. So every write end of this process on those FIFOs is pointed at /dev/null
with dup2: the client sees EOF at once, the fd numbers stay taken (nothing else can be opened
on them by mistake), and the guest's own close still works.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterable
from pathlib import Path


def _fifo_identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISFIFO(info.st_mode) else None


def point_fifos_at_null(outputs: Iterable[Path]) -> int:
    """Redirect this process's write ends of the FIFOs among `outputs` (the guest's side; a
    reader in this process keeps its end); how many.

    The caller makes sure nothing closes those descriptors meanwhile (the guest's store is
    held open), so a number checked here is still the same open file when dup2 replaces it.
    """
    wanted = {identity for path in outputs if (identity := _fifo_identity(path)) is not None}
    if not wanted:
        return 0
    redirected = 0
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd == null:
                continue
            try:
                info = os.fstat(fd)
                mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
            except OSError:  # the listing's own descriptor, already closed
                continue
            if (info.st_dev, info.st_ino) in wanted and mode != os.O_RDONLY:
                os.dup2(null, fd, inheritable=False)
                redirected += 1
    finally:
        os.close(null)
    return redirected
