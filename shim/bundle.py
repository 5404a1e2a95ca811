"""A task's OCI bundle -> what its guest may see and use.

From `config.json`: process.args (argv), process.env, process.cwd, `root.readonly`,
`linux.resources.memory.limit` (the guest's memory cap), `linux.resources.cpu` and
`linux.cgroupsPath` (cgroups.py holds the CPU limits there) and the bind mounts, which become
WASI preopens at their destination (read-only when mounted `ro`). Other mounts (proc, sysfs,
tmpfs, devpts...) have no WASI meaning and are not granted; neither is anything else of the
host. Bind mounts of single files (/etc/hosts, resolv.conf) are skipped: WASI preopens are
directories.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasm_oci.engine import Preopen
from wasm_oci.shim.cgroups import CpuLimits
from wasm_oci.shim.transport.rpc import RpcError

CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"


@dataclass(frozen=True)
class TaskSpec:
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str = "/"
    root: str = "rootfs"
    """root.path: absolute, or relative to the bundle."""
    root_readonly: bool = False
    memory_limit: int | None = None
    cpu: CpuLimits = CpuLimits()
    cgroups_path: str = ""
    binds: tuple[Preopen, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_sandbox(self) -> bool:
        """A Kubernetes pod sandbox (the pause container): it runs no guest, it only holds the pod."""
        return self.annotations.get(CONTAINER_TYPE) == "sandbox"

    @property
    def sandbox_id(self) -> str:
        """The pod this container belongs to under CRI ("" outside Kubernetes)."""
        return self.annotations.get(SANDBOX_ID, "")


def _is_bind(mount: dict[str, Any]) -> bool:
    options = mount.get("options") or []
    return mount.get("type") in ("bind", "rbind") or "bind" in options or "rbind" in options


def _whole(value: object) -> int:
    """A positive JSON integer, else 0 (not set)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def memory_limit(resources: dict[str, Any]) -> int | None:
    """`memory.limit` of an OCI LinuxResources object, None when unlimited (absent, 0, -1)."""
    memory = resources.get("memory") if isinstance(resources.get("memory"), dict) else {}
    return _whole(memory.get("limit")) or None


def cpu_limits(resources: dict[str, Any]) -> CpuLimits:
    """`cpu` of an OCI LinuxResources object; anything malformed counts as not set."""
    cpu = resources.get("cpu") if isinstance(resources.get("cpu"), dict) else {}
    text = {key: value if isinstance(value := cpu.get(key), str) else "" for key in ("cpus", "mems")}
    return CpuLimits(_whole(cpu.get("shares")), _whole(cpu.get("quota")), _whole(cpu.get("period")), **text)


def parse(doc: dict[str, Any], where: str) -> TaskSpec:
    process = doc.get("process") or {}
    args = process.get("args") or []
    if not args or not all(isinstance(arg, str) for arg in args):
        raise RpcError("INVALID_ARGUMENT", f"{where}: process.args is empty: nothing to run")
    env: dict[str, str] = {}
    for item in process.get("env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    linux = doc.get("linux") if isinstance(doc.get("linux"), dict) else {}
    resources = linux.get("resources") if isinstance(linux.get("resources"), dict) else {}
    binds = tuple(
        Preopen(Path(mount["source"]), str(mount["destination"]), "ro" in (mount.get("options") or []))
        for mount in doc.get("mounts") or []
        if _is_bind(mount) and mount.get("source") and mount.get("destination") and Path(mount["source"]).is_dir()
    )
    return TaskSpec(
        args=tuple(args),
        env=env,
        cwd=str(process.get("cwd") or "/"),
        root=str((doc.get("root") or {}).get("path") or "rootfs"),
        root_readonly=bool((doc.get("root") or {}).get("readonly")),
        memory_limit=memory_limit(resources),
        cpu=cpu_limits(resources),
        cgroups_path=str(linux.get("cgroupsPath") or ""),
        binds=binds,
        annotations={str(k): str(v) for k, v in (doc.get("annotations") or {}).items()},
    )


def load(bundle: str) -> TaskSpec:
    path = Path(bundle, "config.json")
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise RpcError("NOT_FOUND", f"bundle {bundle} has no config.json") from None
    except (OSError, ValueError) as exc:
        raise RpcError("INVALID_ARGUMENT", f"{path}: cannot read the OCI spec: {exc}") from None
    if not isinstance(doc, dict):
        raise RpcError("INVALID_ARGUMENT", f"{path}: the OCI spec is not a JSON object")
    return parse(doc, str(path))
