"""The kernel's hold on what a container may use, for guests that run as threads of a shared
daemon (docs/shim.md, Resources).

- cgroup v1 (controllers in separate hierarchies): a thread can sit in a cgroup of its own in
  the cpu, cpuacct and cpuset hierarchies. Each container whose spec sets CPU resources gets
  its `linux.cgroupsPath` there, with its shares, CFS quota and period and cpuset written as
  runc writes them, and its guest's thread joins it: the kernel enforces the limit and counts
  the time (the pod's cgroup above sums its containers). Memory is charged per process, not
  per thread, so containers' memory limits are the engine's (engine/memory.py).
- A pod's own daemon (group `auto`/`pod`) moves, whole, into the pod sandbox's cgroupsPath in
  every hierarchy (v1) or in the unified one (v2) when the sandbox is created, and back when it
  is deleted: the pod's memory and CPU, the daemon's own included, are enforced and counted by
  the kernel at the pod's level.
- cgroup v2 cannot split a process's threads across domain cgroups: there, only the pod-level
  placement applies.

Paths are cgroupfs paths ("/kubepods/burstable/pod<uid>/<id>") or systemd ones
("kubepods-burstable-pod<uid>.slice:cri-containerd:<id>"), expanded as systemd lays them out.
Writes go straight to cgroupfs; the daemon runs as root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from wasm_oci.errors import CgroupError

ROOT = Path("/sys/fs/cgroup")
_RMDIR_TRIES = 50


@dataclass(frozen=True)
class CpuLimits:
    """`linux.resources.cpu` of an OCI spec (zero or empty: not set)."""

    shares: int = 0
    quota: int = 0
    period: int = 0
    cpus: str = ""
    mems: str = ""

    DEFAULT_SHARES = 1024

    @property
    def enforce(self) -> bool:
        """Whether a cgroup of its own would change anything for the guest's thread: a quota,
        a cpuset, or shares other than the kernel's default (containerd's default spec sets just
        those 1024 shares). Moving a thread between cgroups costs the kernel an RCU grace
        period (10-20 ms measured here), which only a limit is worth."""
        return bool(self.quota or self.cpus or self.mems or self.shares not in (0, self.DEFAULT_SHARES))


def expand(path: str) -> str:
    """A cgroupsPath as a path below each hierarchy's root (systemd's "slice:prefix:name" form
    becomes /a.slice/a-b.slice/prefix-name.scope)."""
    if ":" not in path or path.startswith("/"):
        return "/" + path.strip("/")
    slice_name, prefix, name = ([*path.split(":"), "", ""])[:3]
    parts = []
    if slice_name and slice_name != "-.slice":
        stem = slice_name.removesuffix(".slice")
        words = stem.split("-")
        parts = ["-".join(words[: i + 1]) + ".slice" for i in range(len(words))]
    unit = f"{prefix}-{name}.scope" if prefix else name
    return "/" + "/".join([*parts, unit])


def _version() -> int:
    if (ROOT / "cgroup.controllers").exists():
        return 2
    return 1 if (ROOT / "cpu").is_dir() or (ROOT / "cpu,cpuacct").is_dir() else 0


def _v1_hierarchies() -> dict[str, Path]:
    """Controller -> its v1 hierarchy's mount point, from /proc/self/mountinfo."""
    found: dict[str, Path] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        for line in mounts:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(tail) >= 3 and tail[0] == "cgroup":
                for option in tail[2].split(","):
                    found.setdefault(option, Path(fields[4]))
    return found


VERSION = _version()
HIERARCHIES = _v1_hierarchies() if VERSION == 1 else {}


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _make(directory: Path, controller: str) -> list[Path]:
    """mkdir -p; the directories it created, outermost first. A new v1 cpuset has no CPUs or
    memory nodes (nothing could join it) until given its parent's."""
    created = []
    for missing in reversed([directory, *directory.parents]):
        if not missing.exists():
            try:
                missing.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise CgroupError(f"cannot create cgroup {missing}: {exc.strerror}") from None
            if controller == "cpuset":
                for key in ("cpuset.cpus", "cpuset.mems"):
                    _write(missing / key, (missing.parent / key).read_text().strip())
            created.append(missing)
    return created


def _remove(directory: Path, evacuate_to: Path | None = None) -> None:
    """rmdir a cgroup, first moving out threads that are still in it; an exiting thread leaves
    it a moment after its exit, so EBUSY is tried again for a little while."""
    for attempt in range(_RMDIR_TRIES):
        try:
            directory.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == _RMDIR_TRIES - 1:
                return  # left for the node's cleanup; nothing in it runs any more
        if evacuate_to is not None:
            for tid in (directory / "tasks").read_text().split():
                with contextlib.suppress(OSError):
                    (evacuate_to / "tasks").write_text(tid)
        time.sleep(0.002)


class ContainerCgroup:
    """A container's v1 cpu/cpuacct/cpuset cgroups, which its guest's thread joins."""

    def __init__(self, relative: str, limits: CpuLimits) -> None:
        self.relative = relative
        self._dirs: dict[str, Path] = {}
        self._lock = threading.Lock()
        controllers = ["cpu", "cpuacct"] + (["cpuset"] if limits.cpus or limits.mems else [])
        try:
            for controller in controllers:
                root = HIERARCHIES.get(controller)
                if root is None:
                    continue
                directory = root / relative.lstrip("/")
                _make(directory, controller)
                self._dirs[controller] = directory
            self.update(limits)
        except BaseException:
            self.remove()
            raise

    @classmethod
    def for_spec(cls, cgroups_path: str, limits: CpuLimits) -> ContainerCgroup | None:
        """The container's cgroups, when this host (v1) can hold its CPU limits per thread."""
        if VERSION != 1 or not cgroups_path or not limits.enforce:
            return None
        return cls(expand(cgroups_path), limits)

    def update(self, limits: CpuLimits) -> None:
        cpu, cpuset = self._dirs.get("cpu"), self._dirs.get("cpuset")
        if cpu is not None:
            if limits.shares:
                _write(cpu / "cpu.shares", str(limits.shares))
            if limits.period:
                _write(cpu / "cpu.cfs_period_us", str(limits.period))
            if limits.quota:
                _write(cpu / "cpu.cfs_quota_us", str(limits.quota))
        if cpuset is not None:
            if limits.cpus:
                _write(cpuset / "cpuset.cpus", limits.cpus)
            if limits.mems:
                _write(cpuset / "cpuset.mems", limits.mems)

    def join(self, tid: int | None) -> None:
        """Move the guest's thread in (v1 takes any thread id of this process)."""
        with self._lock:
            for directory in self._dirs.values():
                _write(directory / "tasks", str(tid))

    def remove(self) -> None:
        """Remove the container's own cgroup (not parents it shares with others)."""
        with self._lock:
            own = own_paths()
            for controller, directory in self._dirs.items():
                _remove(directory, evacuate_to=HIERARCHIES[controller] / own.get(controller, "/").lstrip("/"))
            self._dirs = {}


def _number(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _keyed(path: Path) -> dict[str, int]:
    """A "key value" per line cgroup file (cpu.stat, memory.stat)."""
    try:
        pairs = (line.split() for line in path.read_text().splitlines())
        return {words[0]: int(words[1]) for words in pairs if len(words) == 2 and words[1].isdigit()}
    except OSError:
        return {}


def own_paths() -> dict[str, str]:
    """This process's cgroup in each v1 hierarchy, by controller ("" for the unified one)."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else [""]:
            paths[name] = path
    return paths


class PodPlacement:
    """This daemon, moved whole into a pod sandbox's cgroup while the pod lives."""

    def __init__(self, cgroups_path: str) -> None:
        relative = expand(cgroups_path).lstrip("/")
        self._moves: list[tuple[Path, Path]] = []
        """(where the daemon went, where it came from) per hierarchy."""
        self._created: list[Path] = []
        hierarchies = HIERARCHIES if VERSION == 1 else {"": ROOT}
        own = own_paths()
        try:
            for controller, root in sorted(hierarchies.items()):
                if controller.startswith("name="):
                    continue
                target = root / relative
                if any(target == moved for moved, _ in self._moves):
                    continue  # co-mounted controllers share one directory
                origin = root / own.get(controller, "/").lstrip("/")
                self._created += _make(target, controller)
                _write(target / "cgroup.procs", str(os.getpid()))
                self._moves.append((target, origin))
        except BaseException:
            self.leave()
            raise

    @classmethod
    def for_sandbox(cls, cgroups_path: str) -> PodPlacement | None:
        return cls(cgroups_path) if VERSION and cgroups_path else None

    def usage(self) -> tuple[int, int]:
        """(CPU ns, memory bytes less inactive file pages) the kernel counts for the whole pod
        (the sandbox's parent: its containers' cgroups and the daemon)."""
        pod = {target.parent for target, _ in self._moves}
        cpu = memory = 0
        for directory in pod:
            if VERSION == 2:
                stat = _keyed(directory / "cpu.stat")
                cpu = stat.get("usage_usec", 0) * 1000
                memory = _number(directory / "memory.current") - _keyed(directory / "memory.stat").get("inactive_file", 0)
            elif (directory / "cpuacct.usage").exists():
                cpu = _number(directory / "cpuacct.usage")
            elif (directory / "memory.usage_in_bytes").exists():
                stat = _keyed(directory / "memory.stat")
                memory = _number(directory / "memory.usage_in_bytes") - stat.get("total_inactive_file", 0)
        return cpu, max(memory, 0)

    def leave(self) -> None:
        """Move back to where the daemon came from and remove the sandbox cgroups created."""
        for target, origin in reversed(self._moves):
            try:
                _write(origin / "cgroup.procs", str(os.getpid()))
            except CgroupError:
                continue
            if target in self._created:
                _remove(target)
        self._moves = []
