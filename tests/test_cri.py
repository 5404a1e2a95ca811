"""Kubernetes' path: the shim under containerd 2.1's CRI plugin, driven the way a kubelet drives
it (tests/services/cri.py): pods, containers of every outcome, stops with grace periods, logs,
stats, restarts, a CNI pod network, both shim groupings, and faults. Every wait has a deadline.

CRI marks a container EXITED only after the shim reports the exit *and* the container's stdout
and stderr FIFOs reach end-of-file, so these tests also prove the shim lets go of them.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from services.cri import SUBNET, CriNode, cri_node
from services.registry import RegistryServer
from services.shim import EXAMPLES, EXIT_42, MEMORY_HOG, TRAP, ShimHarness, module, sleeper
from wasm_oci.proto import cri_pb2 as cri
from wasm_oci.shim.threadname import BLOCKING_IO, GUEST, POOLS, RPC_HANDLER

pytestmark = [pytest.mark.containerd, pytest.mark.registry]

EXITED, RUNNING, CREATED = cri.ContainerState.CONTAINER_EXITED, cri.ContainerState.CONTAINER_RUNNING, cri.ContainerState.CONTAINER_CREATED
HANDLERS = ["wasm-oci", "wasm-oci-ns"]
PROMPT = 5.0
"""Seconds within which an ended guest's container must read EXITED (it takes ~0.1 s)."""

# Writes a line to stdout, then one to stderr, and exits 0.
OUT_AND_ERR = module(
    '(memory (export "memory") 1)'
    ' (data (i32.const 100) "to stdout\\n") (data (i32.const 120) "to stderr\\n")'
    ' (func (export "_start")'
    "  (i32.store (i32.const 0) (i32.const 100)) (i32.store (i32.const 4) (i32.const 10))"
    "  (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))"
    "  (i32.store (i32.const 0) (i32.const 120))"
    "  (drop (call $write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))"
    "  (call $exit (i32.const 0)))"
)
# Creates new.txt in its second preopen (fd 4: the first bind mount after the rootfs at fd 3),
# writes "written" to it and exits 0; exits with the WASI errno when the open is refused.
WRITER = module(
    '(import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))'
    ' (memory (export "memory") 1)'
    ' (data (i32.const 100) "new.txt") (data (i32.const 120) "written")'
    ' (func (export "_start") (local $errno i32)'
    "  (local.set $errno (call $open (i32.const 4) (i32.const 0) (i32.const 100) (i32.const 7)"
    "    (i32.const 9) (i64.const 64) (i64.const 0) (i32.const 0) (i32.const 200)))"
    "  (if (local.get $errno) (then (call $exit (local.get $errno))))"
    "  (i32.store (i32.const 0) (i32.const 120)) (i32.store (i32.const 4) (i32.const 7))"
    "  (drop (call $write (i32.load (i32.const 200)) (i32.const 0) (i32.const 1) (i32.const 8)))"
    "  (call $exit (i32.const 0)))"
)
# Imports a function no host provides: Create (StartContainer, for CRI) fails and names it.
UNLINKABLE = module('(import "env" "missing" (func)) (memory (export "memory") 1) (func (export "_start"))')


@pytest.fixture(scope="module")
def node(registry: RegistryServer) -> Iterator[CriNode]:
    yield from cri_node(registry)


class Images:
    """Wasm images pushed with `wasm-oci push` and pulled through CRI's PullImage, once each."""

    def __init__(self, node: CriNode) -> None:
        self.node = node
        self.shim = ShimHarness(node.containerd, node.registry, node.home)
        self._refs: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self._refs:
            wasm = {
                "hello": EXAMPLES / "hello" / "hello.wasm",
                "spin": EXAMPLES / "spin" / "spin.wasm",
                "exit42": EXIT_42,
                "trap": TRAP,
                "hog": MEMORY_HOG,
                "out-err": OUT_AND_ERR,
                "writer": WRITER,
                "unlinkable": UNLINKABLE,
                "sleeper": sleeper(3600, 0),
            }[name]
            ref = self.shim.push(name, wasm, pull=False)
            self.node.pull(ref)
            self._refs[name] = ref
        return self._refs[name]


@pytest.fixture(scope="module")
def images(node: CriNode) -> Images:
    return Images(node)


@pytest.fixture
def pod(node: CriNode, request: pytest.FixtureRequest) -> Iterator[tuple[str, cri.PodSandboxConfig]]:
    """A pod on the node's network under the `wasm-oci` handler (or the test's `handler` param),
    stopped and removed afterwards."""
    handler = getattr(request, "param", "wasm-oci")
    config = node.pod_config(request.node.name.split("[")[0][5:40].replace("_", "-"))
    pod_id = node.run_pod(config, handler)
    yield pod_id, config
    node.stop_pod(pod_id)
    node.remove_pod(pod_id)


def run_to_exit(
    node: CriNode, pod: tuple[str, cri.PodSandboxConfig], name: str, image: str, **kwargs: object
) -> tuple[cri.ContainerStatus, float]:
    """Create and start a container, wait until EXITED; its status and the seconds it took."""
    pod_id, config = pod
    container_id = node.create(pod_id, config, name, image, **kwargs)  # type: ignore[arg-type]
    began = time.monotonic()
    node.start(container_id)
    status = node.wait_state(container_id, EXITED, timeout=PROMPT)
    return status, time.monotonic() - began


def verbose_pid(node: CriNode, pod_id: str) -> int:
    """The pid CRI recorded for the pod's sandbox task: its shim daemon's."""
    response = node.call(node.runtime.PodSandboxStatus, cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    return int(json.loads(response.info["info"])["pid"])


def log_lines(status: cri.ContainerStatus) -> list[tuple[str, str, str]]:
    """The container log in CRI's format, `TIMESTAMP STREAM TAG CONTENT`: (stream, tag, content)."""
    lines = []
    for line in Path(status.log_path).read_text().splitlines():
        stamp, stream, tag, content = line.split(" ", 3)
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))  # RFC 3339 with nanoseconds
        lines.append((stream, tag, content))
    return lines


# -- pods --------------------------------------------------------------------------------------


def test_version_and_status_name_containerd(node: CriNode) -> None:
    version = node.call(node.runtime.Version, cri.VersionRequest())
    assert (version.runtime_name, version.runtime_api_version) == ("containerd", "v1")
    conditions = {c.type: c.status for c in node.call(node.runtime.Status, cri.StatusRequest()).status.conditions}
    assert conditions.get("RuntimeReady") is True


def test_pod_sandbox_runs_stops_and_is_removed_without_a_guest(node: CriNode) -> None:
    config = node.pod_config("sandbox-only")
    pod_id = node.run_pod(config)
    status = node.pod_status(pod_id)
    assert status.state == cri.PodSandboxState.SANDBOX_READY
    assert (status.metadata.name, status.runtime_handler) == ("sandbox-only", "wasm-oci")
    daemon = verbose_pid(node, pod_id)
    assert daemon in node.daemons()
    assert "created a pod sandbox (no guest)" in node.containerd.log_path.read_text()
    assert [t for t in os.listdir(f"/proc/{daemon}/task") if "task " in Path(f"/proc/{daemon}/task/{t}/comm").read_text()] == []
    node.stop_pod(pod_id)
    assert node.pod_status(pod_id).state == cri.PodSandboxState.SANDBOX_NOTREADY
    node.remove_pod(pod_id)
    listed = node.call(node.runtime.ListPodSandbox, cri.ListPodSandboxRequest()).items
    assert pod_id not in [p.id for p in listed]
    with pytest.raises(grpc.RpcError) as gone:
        node.pod_status(pod_id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


# -- how containers end ------------------------------------------------------------------------


@pytest.mark.parametrize("pod", HANDLERS, indirect=True)
@pytest.mark.parametrize(
    ("image", "env", "memory", "code", "reason"),
    [
        ("hello", {}, 0, 0, "Completed"),
        ("hello", {"EXIT_CODE": "3"}, 0, 1, "Error"),
        ("exit42", {}, 0, 42, "Error"),
        ("trap", {}, 0, 134, "Error"),
        ("hog", {}, 16 << 20, 137, "OOMKilled"),
    ],
    ids=["exit-0", "exit-1", "exit-42", "trap", "memory-limit"],
)
def test_every_ending_reaches_exited_promptly(
    node: CriNode,
    images: Images,
    pod: tuple[str, cri.PodSandboxConfig],
    image: str,
    env: dict[str, str],
    memory: int,
    code: int,
    reason: str,
) -> None:
    status, took = run_to_exit(node, pod, image, images[image], env=env, memory=memory)
    assert (status.exit_code, status.reason) == (code, reason)
    assert took < PROMPT
    # CRI stamps started_at after Start returns; a guest that ends within a millisecond may
    # finish a moment before that: only the order against creation is certain.
    assert status.finished_at > status.created_at > 0 and status.started_at > 0


def test_a_failed_create_is_a_start_error_that_names_the_import(
    node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]
) -> None:
    pod_id, config = pod
    container_id = node.create(pod_id, config, "unlinkable", images["unlinkable"])
    with pytest.raises(grpc.RpcError) as failed:
        node.start(container_id)
    assert "missing" in (failed.value.details() or "")
    status = node.status(container_id)
    assert status.state in (CREATED, EXITED)
    node.remove_container(container_id)


def test_stop_container_sends_sigterm_which_ends_a_guest_at_once(
    node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]
) -> None:
    pod_id, config = pod
    spin = node.create(pod_id, config, "spin", images["spin"])
    node.start(spin)
    node.wait_state(spin, RUNNING)
    began = time.monotonic()
    node.stop_container(spin, grace=30)
    status = node.wait_state(spin, EXITED, timeout=1)
    assert time.monotonic() - began < 2
    assert (status.exit_code, status.reason) == (143, "Error")


def test_stop_container_of_a_guest_blocked_in_a_host_call(node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    """The guest sleeps in poll_oneoff for an hour: the kill cuts the sleep short and CRI sees
    it exited at once."""
    pod_id, config = pod
    sleeping = node.create(pod_id, config, "sleeper", images["sleeper"])
    node.start(sleeping)
    node.wait_state(sleeping, RUNNING)
    began = time.monotonic()
    node.stop_container(sleeping, grace=10)
    assert node.wait_state(sleeping, EXITED, timeout=1).exit_code == 143
    assert time.monotonic() - began < 2


def test_stop_container_without_grace_is_sigkill(node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    pod_id, config = pod
    spin = node.create(pod_id, config, "spin", images["spin"])
    node.start(spin)
    node.wait_state(spin, RUNNING)
    node.stop_container(spin, grace=0)
    assert node.wait_state(spin, EXITED, timeout=1).exit_code == 137


def test_a_stop_signal_the_guest_ignores_is_followed_by_sigkill_after_the_grace(
    node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]
) -> None:
    """An image whose StopSignal leaves a process running (SIGWINCH): CRI waits the grace
    period, then kills."""
    ref = images.shim.push_rootfs_image(
        "spin-winch", EXAMPLES / "spin" / "spin.wasm", "/spin.wasm", config={"StopSignal": "SIGWINCH"}, pull=False
    )
    node.pull(ref)
    pod_id, config = pod
    spin = node.create(pod_id, config, "spin-winch", ref)
    node.start(spin)
    node.wait_state(spin, RUNNING)
    began = time.monotonic()
    node.stop_container(spin, grace=2)
    status = node.wait_state(spin, EXITED, timeout=1)
    took = time.monotonic() - began
    assert status.exit_code == 137
    assert 1.9 < took < 4, took


def test_removing_a_running_container_and_stopping_a_pod_with_running_containers(node: CriNode, images: Images) -> None:
    config = node.pod_config("busy")
    pod_id = node.run_pod(config)
    spins = [node.create(pod_id, config, f"spin{i}", images["spin"]) for i in range(3)]
    for spin in spins:
        node.start(spin)
    for spin in spins:
        node.wait_state(spin, RUNNING)
    node.call(node.runtime.StopContainer, cri.StopContainerRequest(container_id=spins[0], timeout=0))
    node.remove_container(spins[0])
    assert spins[0] not in [c.id for c in node.containers(pod_id)]
    began = time.monotonic()
    node.stop_pod(pod_id)
    assert time.monotonic() - began < 5
    for spin in spins[1:]:
        assert node.status(spin).state == EXITED
    node.remove_pod(pod_id)
    assert node.containers(pod_id) == []


# -- what the guest is given, and what it leaves -----------------------------------------------


def test_args_env_and_log_in_cri_format(node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    status, _ = run_to_exit(node, pod, "hello", images["hello"], args=["from", "kubernetes"], env={"GREETING": "hi"})
    assert status.exit_code == 0
    assert status.log_path == str(Path(pod[1].log_directory) / "hello" / "0.log")
    assert log_lines(status) == [
        ("stdout", "F", "Hello from wasm-oci!"),
        ("stdout", "F", "arg: /hello.wasm"),
        ("stdout", "F", "arg: from"),
        ("stdout", "F", "arg: kubernetes"),
        ("stdout", "F", "GREETING=hi"),
    ]
    both, _ = run_to_exit(node, pod, "out-err", images["out-err"])
    assert sorted(log_lines(both)) == [("stderr", "F", "to stderr"), ("stdout", "F", "to stdout")]


def test_host_path_mounts_read_write_and_read_only(
    node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "greeting.txt").write_text("from a hostPath\n")
    status, _ = run_to_exit(
        node, pod, "hello", images["hello"], mounts=[cri.Mount(container_path="/data", host_path=str(data), readonly=True)]
    )
    assert log_lines(status)[-1] == ("stdout", "F", "from a hostPath")
    writable, _ = run_to_exit(node, pod, "writer", images["writer"], mounts=[cri.Mount(container_path="/data", host_path=str(data))])
    assert writable.exit_code == 0
    assert (data / "new.txt").read_text() == "written"
    (data / "new.txt").unlink()
    refused, _ = run_to_exit(
        node, pod, "writer-ro", images["writer"], mounts=[cri.Mount(container_path="/data", host_path=str(data), readonly=True)]
    )
    assert refused.exit_code != 0
    assert not (data / "new.txt").exists()


def test_status_list_and_stats_of_a_running_container(node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    pod_id, config = pod
    spin = node.create(pod_id, config, "spin", images["spin"], memory=64 << 20)
    node.start(spin)
    status = node.wait_state(spin, RUNNING)
    assert status.image_ref.startswith(images["spin"].rsplit(":", 1)[0] + "@sha256:")
    assert status.resources.linux.memory_limit_in_bytes == 64 << 20
    assert [(c.id, c.state) for c in node.containers(pod_id)] == [(spin, RUNNING)]
    running = node.call(
        node.runtime.ListContainers,
        cri.ListContainersRequest(
            filter=cri.ContainerFilter(state=cri.ContainerStateValue(state=RUNNING), label_selector={"container": "spin"})
        ),
    )
    assert spin in [c.id for c in running.containers]
    time.sleep(0.5)
    stats = node.call(node.runtime.ContainerStats, cri.ContainerStatsRequest(container_id=spin)).stats
    assert stats.attributes.id == spin
    assert stats.cpu.usage_core_nano_seconds.value > 0.1e9
    listed = node.call(
        node.runtime.ListContainerStats, cri.ListContainerStatsRequest(filter=cri.ContainerStatsFilter(pod_sandbox_id=pod_id))
    )
    assert [s.attributes.id for s in listed.stats] == [spin]


def test_exec_sync_is_refused_with_a_reason(node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    pod_id, config = pod
    spin = node.create(pod_id, config, "spin", images["spin"])
    node.start(spin)
    node.wait_state(spin, RUNNING)
    with pytest.raises(grpc.RpcError) as refused:
        node.call(node.runtime.ExecSync, cri.ExecSyncRequest(container_id=spin, cmd=["/bin/sh"], timeout=5), timeout=15)
    assert "exec is not supported" in (refused.value.details() or "")
    assert node.status(spin).state == RUNNING


def test_a_restarted_container_runs_as_attempt_one(node: CriNode, images: Images, pod: tuple[str, cri.PodSandboxConfig]) -> None:
    """restartPolicy: Always, as the kubelet does it: a new container with the same name and
    the next attempt, next to the exited one."""
    first, _ = run_to_exit(node, pod, "again", images["hello"], env={"EXIT_CODE": "1"})
    second, _ = run_to_exit(node, pod, "again", images["hello"], attempt=1)
    assert (first.exit_code, second.exit_code) == (1, 0)
    assert (second.metadata.name, second.metadata.attempt) == ("again", 1)
    assert second.log_path.endswith("again/1.log") and Path(second.log_path).exists()
    assert {c.metadata.attempt for c in node.containers(pod[0])} == {0, 1}


# -- the pod network ---------------------------------------------------------------------------


def test_a_pod_gets_its_network_from_cni(node: CriNode, images: Images) -> None:
    config = node.pod_config("networked", network="pod")
    pod_id = node.run_pod(config)
    address = node.pod_status(pod_id).network.ip
    assert address.startswith(f"{SUBNET}.")
    netns_dir = Path(f"/proc/{node.containerd.proc.pid}/root/run/netns")  # containerd's private /run/netns
    assert len(os.listdir(netns_dir)) == 1
    status, _ = run_to_exit(node, (pod_id, config), "hello", images["hello"])
    assert status.exit_code == 0
    ipam = node.containerd.workdir / "cni-ipam" / "wasm-oci-test"
    assert (ipam / address).exists()
    node.stop_pod(pod_id)
    assert not (ipam / address).exists(), "CNI DEL released the address"
    assert os.listdir(netns_dir) == []
    node.remove_pod(pod_id)


# -- groupings ---------------------------------------------------------------------------------


def test_one_daemon_per_pod_or_per_namespace(node: CriNode, images: Images) -> None:
    pods = {}
    for handler in ("wasm-oci", "wasm-oci", "wasm-oci-ns", "wasm-oci-ns"):
        config = node.pod_config(f"group-{handler}-{len(pods)}")
        pods[node.run_pod(config, handler)] = (handler, config)
    daemons = {pod_id: verbose_pid(node, pod_id) for pod_id in pods}
    per_pod = [daemons[p] for p, (h, _) in pods.items() if h == "wasm-oci"]
    per_namespace = [daemons[p] for p, (h, _) in pods.items() if h == "wasm-oci-ns"]
    assert len(set(per_pod)) == 2 and len(set(per_namespace)) == 1
    assert not set(per_pod) & set(per_namespace)
    for pod_id, (_, config) in pods.items():
        status, _ = run_to_exit(node, (pod_id, config), "exit42", images["exit42"])
        assert status.exit_code == 42
        node.stop_pod(pod_id)
        node.remove_pod(pod_id)


# -- faults ------------------------------------------------------------------------------------


def test_a_containerd_restart_keeps_statuses_true(node: CriNode, images: Images) -> None:
    config = node.pod_config("survivor")
    pod_id = node.run_pod(config)
    spin = node.create(pod_id, config, "spin", images["spin"])
    node.start(spin)
    done, _ = run_to_exit(node, (pod_id, config), "done", images["exit42"])
    node.wait_state(spin, RUNNING)
    node.close()
    node.containerd.restart()
    node.connect()
    assert node.wait_state(spin, RUNNING, timeout=15)
    assert node.status(done.id).exit_code == 42
    assert node.pod_status(pod_id).state == cri.PodSandboxState.SANDBOX_READY
    node.stop_container(spin, grace=5)
    assert node.wait_state(spin, EXITED, timeout=2).exit_code == 143
    node.stop_pod(pod_id)
    node.remove_pod(pod_id)


def test_a_killed_shim_daemon_ends_its_containers_and_the_pod_can_go(node: CriNode, images: Images) -> None:
    config = node.pod_config("doomed")
    pod_id = node.run_pod(config)
    spin = node.create(pod_id, config, "spin", images["spin"])
    node.start(spin)
    node.wait_state(spin, RUNNING)
    daemon = verbose_pid(node, pod_id)
    os.kill(daemon, signal.SIGKILL)
    status = node.wait_state(spin, EXITED, timeout=15)
    # CRI's own Wait on the task fails with the connection ("ttrpc: closed"): it records
    # 255, its unknown exit status, as it does for any shim that dies.
    assert (status.exit_code, status.reason) == (255, "Error")
    began = time.monotonic()
    node.stop_pod(pod_id)
    node.remove_pod(pod_id)
    assert time.monotonic() - began < 15
    assert daemon not in node.daemons()


# -- nothing leaks -----------------------------------------------------------------------------

# Reads stdin once and exits with the number of bytes read.
STDIN_READER = module(
    '(import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))'
    ' (memory (export "memory") 1)'
    ' (func (export "_start") (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 100))'
    "  (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))"
    "  (call $exit (i32.load (i32.const 8))))"
)


def create_with_stdin(node: CriNode, pod_id: str, pod: cri.PodSandboxConfig, name: str, image: str) -> str:
    """A container whose stdin is open (CRI holds the FIFO's write end for an attach that never comes)."""
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name),
        image=cri.ImageSpec(image=image),
        log_path=f"{name}/0.log",
        stdin=True,
        linux=cri.LinuxContainerConfig(),
    )
    request = cri.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod)
    return node.call(node.runtime.CreateContainer, request).container_id


def guest_threads(pid: int) -> int:
    return daemon_usage(pid)[1][GUEST]


def test_killed_guests_blocked_in_host_calls_leave_no_thread_behind(node: CriNode, images: Images) -> None:
    """Guests sleeping in poll_oneoff and guests blocked reading stdin: each one's thread ends
    with its kill (the sleep is cut short, the stdin relay closes), so the daemon's wasm-guest
    threads are back to the baseline within a moment of the stops, not an hour later."""
    config = node.pod_config("blocked")
    pod_id = node.run_pod(config)
    daemon = verbose_pid(node, pod_id)
    reader = images.shim.push("stdin-reader", STDIN_READER, pull=False)
    node.pull(reader)
    baseline = guest_threads(daemon)
    containers = [node.create(pod_id, config, f"sleeper{i}", images["sleeper"]) for i in range(3)]
    containers += [create_with_stdin(node, pod_id, config, f"reader{i}", reader) for i in range(3)]
    for container_id in containers:
        node.start(container_id)
    time.sleep(0.5)
    for container_id in containers:
        assert node.status(container_id).state == RUNNING, "blocked in its host call"
    assert guest_threads(daemon) == baseline + len(containers)
    began = time.monotonic()
    for container_id in containers:
        node.stop_container(container_id, grace=0)
    for container_id in containers:
        assert node.wait_state(container_id, EXITED, timeout=PROMPT).exit_code == 137
    deadline = time.monotonic() + 5
    while guest_threads(daemon) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert guest_threads(daemon) == baseline
    assert time.monotonic() - began < 3
    for container_id in containers:
        node.remove_container(container_id)
    node.stop_pod(pod_id)
    node.remove_pod(pod_id)


def daemon_usage(pid: int) -> tuple[int, Counter[str]]:
    """A process's open descriptors, and its threads by kernel name."""
    names = Counter(Path(f"/proc/{pid}/task/{t}/comm").read_text().strip() for t in os.listdir(f"/proc/{pid}/task"))
    return len(os.listdir(f"/proc/{pid}/fd")), names


def settled(usage: tuple[int, Counter[str]], baseline: tuple[int, Counter[str]]) -> bool:
    """No more descriptors and threads than at the baseline, guests' threads gone. The
    daemon's two thread pools are bounded (32 RPC handlers, 4 for blocking I/O) and grow to
    the peak of concurrent calls, so they are counted apart; Wasmtime's tokio threads leave
    after their 10 s keep-alive."""
    (fds, threads), (base_fds, base_threads) = usage, baseline
    others = sum(n for name, n in threads.items() if name not in POOLS)
    base_others = sum(n for name, n in base_threads.items() if name not in POOLS)
    return fds <= base_fds and threads[GUEST] == 0 and others <= base_others and threads[RPC_HANDLER] <= 32 and threads[BLOCKING_IO] <= 4


MIXED_RUNS = 300
MIXED_AT_ONCE = 8


def test_hundreds_of_mixed_endings_leave_the_daemon_as_they_found_it(node: CriNode, images: Images) -> None:
    """Exit 0, exit 1, exit 42, trap, memory limit, SIGTERM and SIGKILL stops, a guest stopped
    while blocked in a host call, and a failed Create, over and over through one pod's daemon:
    its descriptors and threads return to where a warm-up left them."""
    config = node.pod_config("mixed")
    pod_id = node.run_pod(config)
    daemon = verbose_pid(node, pod_id)
    short_sleeper = images.shim.push("sleeper-1s", sleeper(1, 0), pull=False)
    node.pull(short_sleeper)
    kinds = [
        ("hello", {}, 0, None),
        ("hello", {"EXIT_CODE": "1"}, 0, None),
        ("exit42", {}, 0, None),
        ("trap", {}, 0, None),
        ("hog", {}, 8 << 20, None),
        ("spin", {}, 0, 30),
        ("spin", {}, 0, 0),
        (short_sleeper, {}, 0, 30),
        ("unlinkable", {}, 0, None),
        ("out-err", {}, 0, None),
    ]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def one(index: int) -> None:
        image, env, memory, stop_grace = kinds[index % len(kinds)]
        ref = image if "/" in image else images[image]
        container_id = node.create(pod_id, config, f"c{index}", ref, env=env, memory=memory)
        try:
            node.start(container_id)
        except grpc.RpcError:
            outcome = "start error"
        else:
            if stop_grace is not None:
                node.wait_state(container_id, RUNNING)
                node.stop_container(container_id, grace=stop_grace)
            outcome = str(node.wait_state(container_id, EXITED, timeout=PROMPT).exit_code)
        node.remove_container(container_id)
        with lock:
            outcomes[outcome] += 1

    def run(indexes: range) -> None:
        with ThreadPoolExecutor(MIXED_AT_ONCE) as pool:
            list(pool.map(one, indexes))

    run(range(-2 * len(kinds), 0))  # warm-up: every kind, at the same concurrency
    baseline = daemon_usage(daemon)
    outcomes.clear()
    began = time.monotonic()
    run(range(MIXED_RUNS))
    took = time.monotonic() - began
    deadline = time.monotonic() + 15  # Wasmtime's tokio threads leave after a 10 s keep-alive
    while not settled(after := daemon_usage(daemon), baseline) and time.monotonic() < deadline:
        time.sleep(0.1)
    print(
        f"\n{MIXED_RUNS} containers in {took:.1f} s; outcomes {sorted(outcomes.items())}; "
        f"daemon fds/threads: baseline {baseline}, after {after}"
    )
    each = MIXED_RUNS // len(kinds)
    assert outcomes == {"0": 2 * each, "1": each, "42": each, "134": each, "143": 2 * each, "137": 2 * each, "start error": each}
    assert settled(after, baseline), (baseline, after)
    assert node.containers(pod_id) == []
    node.stop_pod(pod_id)
    node.remove_pod(pod_id)
