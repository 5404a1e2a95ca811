"""A task's OCI bundle -> what its guest may see and use.

From `config.json`: process.args (argv), process.env, process.cwd, `root.readonly`,
`linux.resources.memory.limit` (the guest's memory cap), `linux.resources.cpu` and
`linux.cgroupsPath` (cgroups.py holds the CPU limits there), the `network` entry of
`linux.namespaces` (where an HTTP function listens, netns.py) and the bind mounts, which become
WASI preopens at their destination (read-only when mounted `ro`). Other mounts (proc, sysfs,
tmpfs, devpts...) have no WASI meaning and are not granted; neither is anything else of the
host. Bind mounts of single files (/etc/hosts, resolv.conf) are skipped: WASI preopens are
directories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasm_oci.engine import Preopen
from wasm_oci.errors import MalformedContent, RpcError
from wasm_oci.oci import documents
from wasm_oci.shim.cgroups import CpuLimits
from wasm_oci.shim.netns import Network

CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
MAX_SPEC = 16 << 20


@dataclass(frozen=True)
class TaskSpec:
    args: tuple[str, ...]
    env: dict[str, str]
    cwd: str = "/"
    root: str = "rootfs"
    """root.path: absolute, or relative to the bundle."""
    root_readonly: bool = False
    memory_limit: int | None = None
    cpu: CpuLimits = field(default_factory=CpuLimits)
    cgroups_path: str = ""
    binds: tuple[Preopen, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)
    network: Network = field(default_factory=Network)

    @property
    def is_sandbox(self) -> bool:
        """A Kubernetes pod sandbox (the pause container): it runs no guest, it only holds the pod."""
        return self.annotations.get(CONTAINER_TYPE) == "sandbox"

    @property
    def sandbox_id(self) -> str:
        """The pod this container belongs to under CRI ("" outside Kubernetes)."""
        return self.annotations.get(SANDBOX_ID, "")


def _is_bind(mount: dict[str, Any]) -> bool:
    options = mount.get("options")
    options = options if isinstance(options, list) else []
    return mount.get("type") in ("bind", "rbind") or "bind" in options or "rbind" in options


def _whole(value: object) -> int:
    """A positive JSON integer, else 0 (not set)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def memory_limit(resources: dict[str, Any]) -> int | None:
    """`memory.limit` of an OCI LinuxResources object, None when unlimited (absent, 0, -1)."""
    memory = resources.get("memory")
    memory = memory if isinstance(memory, dict) else {}
    return _whole(memory.get("limit")) or None


def cpu_limits(resources: dict[str, Any]) -> CpuLimits:
    """`cpu` of an OCI LinuxResources object; anything malformed counts as not set."""
    cpu = resources.get("cpu")
    cpu = cpu if isinstance(cpu, dict) else {}
    text = {key: value if isinstance(value := cpu.get(key), str) else "" for key in ("cpus", "mems")}
    return CpuLimits(_whole(cpu.get("shares")), _whole(cpu.get("quota")), _whole(cpu.get("period")), **text)


def parse(doc: dict[str, Any], where: str) -> TaskSpec:
    """The spec's fields this shim uses, each type-checked: a wrong shape is INVALID_ARGUMENT
    naming the field, never a crash in the middle of Create."""
    try:
        return _parse(doc, where)
    except MalformedContent as exc:
        raise RpcError("INVALID_ARGUMENT", str(exc)) from None


def _parse(doc: dict[str, Any], where: str) -> TaskSpec:
    process = documents.section(doc, "process", where)
    args = documents.strings(process, "args", f"{where}: process")
    if not args:
        raise RpcError("INVALID_ARGUMENT", f"{where}: process.args is empty: nothing to run")
    env: dict[str, str] = {}
    for item in documents.strings(process, "env", f"{where}: process"):
        key, _, value = item.partition("=")
        env[key] = value
    linux = documents.section(doc, "linux", where)
    resources = documents.section(linux, "resources", f"{where}: linux")
    mounts = doc.get("mounts") or []
    if not isinstance(mounts, list) or not all(isinstance(mount, dict) for mount in mounts):
        raise MalformedContent(f"{where}: `mounts` must be a list of objects")
    binds = tuple(
        Preopen(Path(source), destination, "ro" in documents.strings(mount, "options", f"{where}: mount"))
        for mount in mounts
        if _is_bind(mount)
        and (source := documents.text(mount, "source", f"{where}: mount"))
        and (destination := documents.text(mount, "destination", f"{where}: mount"))
        and Path(source).is_dir()
    )
    root = documents.section(doc, "root", where)
    return TaskSpec(
        args=args,
        env=env,
        cwd=documents.text(process, "cwd", f"{where}: process") or "/",
        root=documents.text(root, "path", f"{where}: root") or "rootfs",
        root_readonly=root.get("readonly") is True,
        memory_limit=memory_limit(resources),
        cpu=cpu_limits(resources),
        cgroups_path=documents.text(linux, "cgroupsPath", f"{where}: linux") or "",
        binds=binds,
        annotations=documents.string_map(doc, "annotations", where),
        network=_network(linux, f"{where}: linux.namespaces"),
    )


def _network(linux: dict[str, Any], where: str) -> Network:
    namespaces = linux.get("namespaces") or []
    if not isinstance(namespaces, list) or not all(isinstance(entry, dict) for entry in namespaces):
        raise MalformedContent(f"{where} must be a list of objects")
    for entry in namespaces:
        if documents.text(entry, "type", where) == "network":
            path = documents.text(entry, "path", where)
            return Network(path) if path else Network(new=True)
    return Network()


def load(bundle: str) -> TaskSpec:
    path = Path(bundle, "config.json")
    try:
        doc = documents.load(path.read_bytes(), f"{path}: the OCI spec", MAX_SPEC)
    except FileNotFoundError:
        raise RpcError("NOT_FOUND", f"bundle {bundle} has no config.json") from None
    except OSError as exc:
        raise RpcError("INVALID_ARGUMENT", f"{path}: cannot read the OCI spec: {exc.strerror}") from None
    except MalformedContent as exc:
        raise RpcError("INVALID_ARGUMENT", str(exc)) from None
    return parse(doc, str(path))


def pod_network(bundle: str, spec: TaskSpec) -> Network:
    """The network namespace a pod's container really lives in. CRI names the sandbox's as
    `/proc/<sandbox pid>/ns/net`, and a Wasm sandbox's "pid" is its shim daemon's (it runs no
    pause process): that path is the host's network. The sandbox's own spec, in its bundle
    beside this one, names the namespace CNI set up (`/var/run/netns/cni-...`)."""
    if not spec.sandbox_id or spec.is_sandbox:
        return spec.network
    try:
        sandbox = load(str(Path(bundle).parent / spec.sandbox_id))
    except RpcError:  # no sandbox bundle here (not containerd's layout): trust the spec
        return spec.network
    return sandbox.network if sandbox.network.path else spec.network
