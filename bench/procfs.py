"""Memory and threads of process trees and of the machine, read from /proc (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from services.containerd import ContainerdServer

PROC = Path("/proc")


@dataclass(frozen=True)
class Footprint:
    rss: int  # bytes, VmRSS summed: shared pages counted in every process
    pss: int  # bytes, Pss summed: shared pages split between their users
    threads: int


def _number(path: Path, name: str) -> int:
    """The number on a `Name:   N [kB]` line of a /proc file (0 if the process is gone)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def available() -> int:
    """The machine's MemAvailable, in bytes."""
    return _number(PROC / "meminfo", "MemAvailable") * 1024


def cpu_ticks() -> tuple[int, int]:
    """All CPUs' time since boot, and the part of it the hypervisor ran other guests on (steal), in ticks."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7]


def machine_threads() -> int:
    """Threads on the machine now (each takes a pid)."""
    return int((PROC / "loadavg").read_text().split()[3].split("/")[1])


def pid_max() -> int:
    return int((PROC / "sys" / "kernel" / "pid_max").read_text())


def _processes() -> Iterator[tuple[int, int, str]]:
    """(pid, ppid, mount namespace) of every process still readable."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            yield int(entry.name), ppid, os.readlink(entry / "ns" / "mnt")
        except (OSError, IndexError, ValueError):
            continue


def footprint(containerd: ContainerdServer) -> Footprint:
    """Memory and threads of containerd's shims and all their descendants.

    The shims are every process in containerd's mount namespace but containerd itself (its
    tasks' containers get mount namespaces of their own, as children of the shims).
    """
    assert containerd.proc is not None
    procs = list(_processes())
    counted = {pid for pid, _, ns in procs if ns == containerd.mount_ns and pid != containerd.proc.pid}
    grew = True
    while grew:
        before = len(counted)
        counted |= {pid for pid, ppid, _ in procs if ppid in counted}
        grew = len(counted) > before
    return Footprint(
        rss=sum(_number(PROC / str(pid) / "status", "VmRSS") for pid in counted) * 1024,
        pss=sum(_number(PROC / str(pid) / "smaps_rollup", "Pss") for pid in counted) * 1024,
        threads=sum(_number(PROC / str(pid) / "status", "Threads") for pid in counted),
    )
