"""A Kubernetes node without the kubelet: a private containerd 2.1 with its CRI plugin on, the
wasm-oci shim as runtime handlers, real CNI plugins, and a CRI v1 client that makes the calls a
kubelet makes (generated from our proto/cri.proto).

- Runtime handlers: `wasm-oci` (shim group `auto`: a daemon per pod), `wasm-oci-ns` (group
  `namespace`: a daemon per containerd namespace, here all of CRI's `k8s.io`), and `runc`.
- The pod sandbox (pause) image is built here (tests/services/images.py, a static busybox that
  sleeps) and served from the test registry, pinned in CRI's config.
- Pods that do not ask for the node's network get one from CNI: a bridge of this node's own
  (`bridge` + `host-local` IPAM in a private subnet, state under the node's dir), deleted when
  the node stops. /run/netns and /var/lib/cni are private dirs in containerd's mount namespace.
- Every call has a deadline; `wait_*` helpers poll with one too, and fail with what they saw.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from wasm_oci.proto import cri_pb2 as cri
from wasm_oci.proto import cri_pb2_grpc
from wasm_oci.shim import cgroups

from .containerd import ContainerdServer
from .images import push_busybox
from .registry import RegistryServer
from .shim import ShimHarness
from .tools import MissingToolError, tools_bin_dir

T = TypeVar("T")
CALL_TIMEOUT = 60.0
K8S_NAMESPACE = "k8s.io"
"""The containerd namespace CRI keeps everything in."""
HANDLERS = {"wasm-oci": "auto", "wasm-oci-ns": "namespace"}
"""Runtime handler -> the shim's `group` setting."""
SUBNET = "10.231.77"
"""The pod network's /24 (private, on this node's own bridge only)."""


def _toml(value: str) -> str:
    return json.dumps(value)


EXAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "containerd" / "containerd-config.toml"


def example_runtime() -> dict[str, Any]:
    """The `wasm-oci` runtime of the containerd configuration the docs tell users to merge: the
    node's runtime handlers are made from it (their own ConfigPath aside), so it cannot rot."""
    config = tomllib.loads(EXAMPLE_CONFIG.read_text())
    runtime: dict[str, Any] = config["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["wasm-oci"]
    return runtime


def cni_plugins_dir() -> Path:
    path = tools_bin_dir().parent / "root" / "usr" / "lib" / "cni"
    if not (path / "bridge").is_file():
        raise MissingToolError(f"CNI plugins missing in {path}: run `bash tests/tools/install-system-deps.sh`")
    return path


@dataclass
class CriNode:
    containerd: ContainerdServer
    registry: RegistryServer
    home: Path
    bridge: str
    cgroup_root: str = ""
    """The cgroupfs path a kubelet would call /kubepods: below this process's own memory
    cgroup (so the node stays inside the limits it was given), the same path in every hierarchy."""
    pause_image: str = ""
    channel: grpc.Channel | None = field(default=None, repr=False)
    runtime: cri_pb2_grpc.RuntimeServiceStub = field(init=False, repr=False)
    images: cri_pb2_grpc.ImageServiceStub = field(init=False, repr=False)

    # -- set-up ---------------------------------------------------------------------------------
    @property
    def cni_conf_dir(self) -> Path:
        return self.containerd.workdir / "cni" / "net.d"

    def shim_config(self, group: str) -> Path:
        return self.home / f"shim-{group}.toml"

    def cri_config(self) -> str:
        runtimes = "plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes"
        lines = [
            "[plugins.'io.containerd.cri.v1.images']",
            "[plugins.'io.containerd.cri.v1.images'.pinned_images]",
            f"sandbox = {_toml(self.pause_image)}",
            "[plugins.'io.containerd.cri.v1.images'.registry]",
            f"config_path = {_toml(str(self.registry.hosts_dir))}",
            "[plugins.'io.containerd.cri.v1.runtime'.containerd]",
            'default_runtime_name = "runc"',
            f"[{runtimes}.runc]",
            'runtime_type = "io.containerd.runc.v2"',
        ]
        example = example_runtime()
        for handler, group in HANDLERS.items():
            lines += [
                f"[{runtimes}.{_toml(handler)}]",
                f"runtime_type = {_toml(example['runtime_type'])}",
                f"[{runtimes}.{_toml(handler)}.options]",
                f"ConfigPath = {_toml(str(self.shim_config(group)))}",
            ]
        lines += [
            "[plugins.'io.containerd.cri.v1.runtime'.cni]",
            f"bin_dirs = [{_toml(str(cni_plugins_dir()))}]",
            f"conf_dir = {_toml(str(self.cni_conf_dir))}",
            "[plugins.'io.containerd.grpc.v1.cri']",
            'stream_server_address = "127.0.0.1"',
            'stream_server_port = "0"',
        ]
        return "\n".join(lines)

    def write_cni_config(self) -> None:
        self.cni_conf_dir.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "wasm-oci-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": f"{SUBNET}.0/24"}]],
                        "dataDir": str(self.containerd.workdir / "cni-ipam"),
                    },
                }
            ],
        }
        (self.cni_conf_dir / "10-wasm-oci-test.conflist").write_text(json.dumps(conflist, indent=1))

    def connect(self, timeout: float = 30.0) -> None:
        """Connect, and wait until CRI answers (after a containerd start it says UNAVAILABLE
        while it loads its state; a kubelet retries the same way)."""
        self.channel = grpc.insecure_channel(f"unix://{self.containerd.address}")
        self.runtime = cri_pb2_grpc.RuntimeServiceStub(self.channel)
        self.images = cri_pb2_grpc.ImageServiceStub(self.channel)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.call(self.runtime.Status, cri.StatusRequest(), timeout=5)
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    # -- calls, as a kubelet makes them -----------------------------------------------------------
    def call(self, rpc: Callable[..., T], request: Any, timeout: float = CALL_TIMEOUT) -> T:
        """One CRI call with a deadline (a hung call fails the test instead of stalling it)."""
        return rpc(request, timeout=timeout)

    def pull(self, image: str) -> str:
        response = self.call(self.images.PullImage, cri.PullImageRequest(image=cri.ImageSpec(image=image)), timeout=120)
        return response.image_ref

    def pod_config(self, name: str, network: str = "node", cgroups: bool = False, cpu_shares: int = 0) -> cri.PodSandboxConfig:
        """What a kubelet sends for a pod: metadata with a fresh uid, a log directory, the
        node's network (`network="node"`, hostNetwork: true) or a CNI one (`"pod"`), and with
        `cgroups` a cgroup parent of its own under this node's (cgroupfs driver layout), which
        gets the pod's `cpu_shares` (a kubelet gives a pod the sum of its containers' requests:
        without it, pods split the CPU evenly whatever their containers ask)."""
        uid = uuid.uuid4().hex
        if cgroups:
            make_pod_cgroups(f"{self.cgroup_root}/pod{uid}", cpu_shares)
        log_dir = self.home / "pods" / f"default_{name}_{uid}"
        log_dir.mkdir(parents=True)
        mode = cri.NamespaceMode.NODE if network == "node" else cri.NamespaceMode.POD
        return cri.PodSandboxConfig(
            metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="default", attempt=0),
            hostname="" if network == "node" else name,
            log_directory=str(log_dir),  # hostNetwork pods keep the node's
            labels={"app": name},
            annotations={"test": "wasm-oci"},
            linux=cri.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.cgroup_root}/pod{uid}" if cgroups else "",
                security_context=cri.LinuxSandboxSecurityContext(
                    namespace_options=cri.NamespaceOption(network=mode, pid=cri.NamespaceMode.CONTAINER, ipc=cri.NamespaceMode.POD)
                ),
            ),
        )

    def run_pod(self, config: cri.PodSandboxConfig, handler: str = "wasm-oci") -> str:
        response = self.call(self.runtime.RunPodSandbox, cri.RunPodSandboxRequest(config=config, runtime_handler=handler))
        return response.pod_sandbox_id

    def create(
        self,
        pod_id: str,
        pod: cri.PodSandboxConfig,
        name: str,
        image: str,
        *,
        args: Sequence[str] = (),
        command: Sequence[str] = (),
        env: dict[str, str] | None = None,
        mounts: Sequence[cri.Mount] = (),
        memory: int = 0,
        attempt: int = 0,
        cpu: cri.LinuxContainerResources | None = None,
    ) -> str:
        """CreateContainer with the log path a kubelet chooses (`NAME/ATTEMPT.log` in the pod's
        log directory); `cpu` carries the CPU fields of the container's resources."""
        resources = cri.LinuxContainerResources(memory_limit_in_bytes=memory)
        if cpu is not None:
            resources.MergeFrom(cpu)
        config = cri.ContainerConfig(
            metadata=cri.ContainerMetadata(name=name, attempt=attempt),
            image=cri.ImageSpec(image=image),
            command=list(command),
            args=list(args),
            envs=[cri.KeyValue(key=k, value=v.encode()) for k, v in (env or {}).items()],
            mounts=list(mounts),
            log_path=f"{name}/{attempt}.log",
            labels={"container": name},
            linux=cri.LinuxContainerConfig(resources=resources),
        )
        request = cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod)
        return self.call(self.runtime.CreateContainer, request).container_id

    def start(self, container_id: str) -> None:
        self.call(self.runtime.StartContainer, cri.StartContainerRequest(container_id=container_id))

    def status(self, container_id: str) -> cri.ContainerStatus:
        response = self.call(self.runtime.ContainerStatus, cri.ContainerStatusRequest(container_id=container_id))
        return response.status

    def pod_status(self, pod_id: str) -> cri.PodSandboxStatus:
        response = self.call(self.runtime.PodSandboxStatus, cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
        return response.status

    def wait_state(self, container_id: str, state: int, timeout: float = 15.0) -> cri.ContainerStatus:
        """Poll ContainerStatus until the container is in `state` (as the kubelet's PLEG would)."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(container_id)
            if status.state == state:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"container {container_id} is {cri.ContainerState.Name(status.state)}, not "
                    f"{cri.ContainerState.Name(state)}, after {timeout}s\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop_container(self, container_id: str, grace: int) -> None:
        self.call(self.runtime.StopContainer, cri.StopContainerRequest(container_id=container_id, timeout=grace), timeout=grace + 30)

    def remove_container(self, container_id: str) -> None:
        self.call(self.runtime.RemoveContainer, cri.RemoveContainerRequest(container_id=container_id))

    def stop_pod(self, pod_id: str) -> None:
        self.call(self.runtime.StopPodSandbox, cri.StopPodSandboxRequest(pod_sandbox_id=pod_id))

    def remove_pod(self, pod_id: str) -> None:
        self.call(self.runtime.RemovePodSandbox, cri.RemovePodSandboxRequest(pod_sandbox_id=pod_id))

    def containers(self, pod_id: str = "") -> list[cri.Container]:
        request = cri.ListContainersRequest(filter=cri.ContainerFilter(pod_sandbox_id=pod_id))
        return list(self.call(self.runtime.ListContainers, request).containers)

    def log_tail(self, limit: int = 3000) -> str:
        return "--- containerd log ---\n" + self.containerd.log_path.read_text(errors="replace")[-limit:]

    # -- what the node measures from outside ------------------------------------------------------
    def cpu_seconds(self) -> dict[int, float]:
        """CPU time of every process of containerd and its shims (those in its mount namespace)
        and of their descendants (runc's containers), by pid, from /proc, as a node operator
        would measure it."""
        parents: dict[int, int] = {}
        spent: dict[int, float] = {}
        inside: set[int] = set()
        namespace = self.containerd.mount_ns
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    inside.add(int(entry.name))
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            spent[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick

        def counted(pid: int) -> bool:
            while pid > 1:
                if pid in inside:
                    return True
                pid = parents.get(pid, 0)
            return False

        return {pid: seconds for pid, seconds in spent.items() if counted(pid)}

    # -- the node's shim daemons ------------------------------------------------------------------
    def daemons(self) -> list[int]:
        return ShimHarness(self.containerd, self.registry, self.home).daemons()

    def remove_everything(self) -> None:
        """Stop and remove every pod (and so its containers), as a drained node would."""
        pods = self.call(self.runtime.ListPodSandbox, cri.ListPodSandboxRequest()).items
        for pod in pods:
            self.stop_pod(pod.id)
            self.remove_pod(pod.id)


def _hierarchies() -> list[Path]:
    return [h for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir() and h.name not in ("unified", "systemd")]


def make_pod_cgroups(relative: str, cpu_shares: int) -> None:
    """What a kubelet does for a pod (cgroupfs driver, v1): its cgroup in every hierarchy
    (a new cpuset gets its parent's CPUs and memory nodes), with the pod's CPU shares."""
    for hierarchy in _hierarchies():
        target = hierarchy / relative.lstrip("/")
        for directory in reversed([target, *target.parents]):
            if directory.is_relative_to(hierarchy) and not directory.exists():
                directory.mkdir()
                if hierarchy.name == "cpuset":
                    for key in ("cpuset.cpus", "cpuset.mems"):
                        (directory / key).write_text((directory.parent / key).read_text())
        if cpu_shares and (target / "cpu.shares").exists():
            (target / "cpu.shares").write_text(str(cpu_shares))


def remove_cgroup_tree(relative: str) -> None:
    """rmdir `relative` and everything below it in every cgroup hierarchy, deepest first."""
    for hierarchy in _hierarchies():
        top = hierarchy / relative.lstrip("/")
        if not top.is_dir():
            continue
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            directory.rmdir()
        top.rmdir()


def _delete_link(name: str) -> None:
    subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10, check=False)


def cri_node(registry: RegistryServer) -> Iterator[CriNode]:
    """A started node; afterwards every pod is removed, containerd and every shim daemon are
    stopped, and the bridge is deleted. Its dir is a short mkdtemp (socket paths <= 108 bytes)."""
    workdir = Path(tempfile.mkdtemp(prefix="wasm-oci-cri-"))
    home = workdir / "home"
    home.mkdir()
    bridge = f"wocri{os.getpid() % 100000}"
    server = ContainerdServer(workdir=workdir, namespace=K8S_NAMESPACE, extra_env={"WASM_OCI_HOME": str(home / "wasm-oci")})
    node = CriNode(
        server, registry, home, bridge, cgroup_root=f"{cgroups.own_paths().get('memory', '').rstrip('/')}/wasm-oci-test-{os.getpid()}"
    )
    try:
        node.pause_image = push_busybox(registry.host, "k8s/pause", ["/bin/busybox", "sleep", "2147483647"], tag="3.10")
        for group in HANDLERS.values():
            node.shim_config(group).write_text(f'group = "{group}"\nlinger = 2.0\n')
        server.cri_config = node.cri_config()
        node.write_cni_config()
        server.start()
        subprocess.run(
            [sys.executable, "-m", "wasm_oci.shim.launcher", str(server.shim_bin_dir)], check=True, capture_output=True, timeout=60
        )
        node.connect()
        yield node
    finally:
        try:
            if node.channel is not None and server.proc is not None and server.proc.poll() is None:
                node.remove_everything()
        except grpc.RpcError:
            pass
        finally:
            node.close()
            server.stop()
            _delete_link(bridge)
            remove_cgroup_tree(node.cgroup_root)
            shutil.rmtree(workdir, ignore_errors=True)
