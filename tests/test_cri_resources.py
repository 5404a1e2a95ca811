"""Kubernetes resource limits and usage figures under CRI, with runc as the baseline: CPU quotas
and shares hold for guests that are threads of a shared daemon, usage figures match what the
node measures from outside, and memory is counted and limited (docs/shim.md, Resources).

Pods get a cgroup parent of their own, as a kubelet gives them (tests/services/cri.py); both
shim groupings a cluster would use run every case (`wasm-oci`: a daemon per pod,
`wasm-oci-ns`: one per namespace).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from services.cri import CriNode, cri_node
from services.images import push_busybox
from services.registry import RegistryServer
from services.shim import EXAMPLES, ShimHarness, module
from wasm_oci.proto import cri_pb2 as cri
from wasm_oci.shim import cgroups

pytestmark = [pytest.mark.containerd, pytest.mark.registry]

RUNNING, EXITED = cri.ContainerState.CONTAINER_RUNNING, cri.ContainerState.CONTAINER_EXITED
HANDLERS = ["wasm-oci", "wasm-oci-ns"]
WINDOW = 3.0
"""Seconds each CPU figure is measured over."""
LIMIT_100M = cri.LinuxContainerResources(cpu_period=100_000, cpu_quota=10_000, cpu_shares=102)
HOLD_MIB = 40
# Grows its memory by 40 MiB, writes to every page of it, then sleeps an hour in poll_oneoff.
HOLDER = module(
    '(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))'
    ' (memory (export "memory") 1)'
    ' (func (export "_start") (local $at i32)'
    f"  (drop (memory.grow (i32.const {HOLD_MIB * 16})))"
    "  (local.set $at (i32.const 65536))"
    f"  (loop $touch (i32.store (local.get $at) (i32.const 1)) (local.set $at (i32.add (local.get $at) (i32.const 4096)))"
    f"    (br_if $touch (i32.lt_u (local.get $at) (i32.const {(HOLD_MIB * 16 + 1) * 65536}))))"
    "  (i32.store (i32.const 16) (i32.const 1)) (i64.store (i32.const 24) (i64.const 3600000000000))"
    "  (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128))) (call $exit (i32.const 0)))"
)


@pytest.fixture(scope="module")
def node(registry: RegistryServer) -> Iterator[CriNode]:
    yield from cri_node(registry)


@pytest.fixture(scope="module")
def images(node: CriNode) -> dict[str, str]:
    shim = ShimHarness(node.containerd, node.registry, node.home)
    refs = {
        "spin": shim.push("spin", EXAMPLES / "spin" / "spin.wasm", pull=False),
        "holder": shim.push("holder", HOLDER, pull=False),
        "busybox": push_busybox(node.registry.host, "k8s/busybox", ["/bin/sh"]),
    }
    for name in ("spin", "holder"):
        node.pull(refs[name])
    return refs


def container_cpu_ns(node: CriNode, container_id: str) -> int:
    stats = node.call(node.runtime.ContainerStats, cri.ContainerStatsRequest(container_id=container_id)).stats
    return stats.cpu.usage_core_nano_seconds.value


def measure(node: CriNode, containers: list[str]) -> tuple[float, list[float]]:
    """Cores used over WINDOW seconds: by containerd and its shims from outside, and by each
    container according to ContainerStats."""
    outside, inside = node.cpu_seconds(), [container_cpu_ns(node, c) for c in containers]
    began = time.monotonic()
    time.sleep(WINDOW)
    elapsed = time.monotonic() - began
    outside_after, inside_after = node.cpu_seconds(), [container_cpu_ns(node, c) for c in containers]
    # A process that left meanwhile (an idle daemon lingering out) takes its time with it: count
    # what each process still there used in the window.
    spent = sum(seconds - outside.get(pid, 0.0) for pid, seconds in outside_after.items())
    return spent / elapsed, [(b - a) / 1e9 / elapsed for a, b in zip(inside, inside_after, strict=False)]


def runc_cores(node: CriNode, busybox: str) -> float:
    """The baseline, measured the same way: a runc container spinning a shell loop under
    `ctr run --cpus 0.1` in the same containerd (its own namespace)."""
    ctr = node.containerd
    ctr.ctr("images", "pull", "--plain-http", busybox, namespace="runc-baseline", timeout=120)
    ctr.ctr(
        "run",
        "-d",
        "--cpus",
        "0.1",
        "--runtime",
        "io.containerd.runc.v2",
        busybox,
        "runc-spin",
        "/bin/sh",
        "-c",
        "while :; do :; done",
        namespace="runc-baseline",
    )
    try:
        time.sleep(0.3)
        cores, _ = measure(node, [])
    finally:
        ctr.ctr("task", "kill", "--signal", "SIGKILL", "runc-spin", namespace="runc-baseline", check=False)
        deadline = time.monotonic() + 10
        while ctr.ctr("task", "delete", "runc-spin", namespace="runc-baseline", check=False).returncode and time.monotonic() < deadline:
            time.sleep(0.1)
        ctr.ctr("container", "rm", "runc-spin", namespace="runc-baseline", check=False)
    return cores


def start_pod(
    node: CriNode, name: str, handler: str, image: str, cpu: cri.LinuxContainerResources | None = None, memory: int = 0
) -> tuple[str, str]:
    config = node.pod_config(name, cgroups=True, cpu_shares=cpu.cpu_shares if cpu is not None else 0)
    pod_id = node.run_pod(config, handler)
    container_id = node.create(pod_id, config, name, image, cpu=cpu, memory=memory)
    node.start(container_id)
    node.wait_state(container_id, RUNNING)
    return pod_id, container_id


def end_pod(node: CriNode, pod_id: str) -> None:
    node.stop_pod(pod_id)
    node.remove_pod(pod_id)


PER_CONTAINER_CPU = pytest.mark.skipif(
    cgroups.VERSION != 1, reason="per-container CPU limits need cgroup v1 (v2 holds them per pod: docs/shim.md)"
)


@PER_CONTAINER_CPU
@pytest.mark.parametrize("handler", HANDLERS)
def test_a_100m_limit_holds_and_stats_match_the_outside(node: CriNode, images: dict[str, str], handler: str) -> None:
    pod_id, spin = start_pod(node, "limited", handler, images["spin"], cpu=LIMIT_100M)
    time.sleep(0.3)
    outside, (inside,) = measure(node, [spin])
    began = time.monotonic()
    node.stop_container(spin, grace=10)
    assert node.wait_state(spin, EXITED, timeout=2).exit_code == 143
    stopped_in = time.monotonic() - began
    end_pod(node, pod_id)
    runc_outside = runc_cores(node, images["busybox"])
    print(
        f"\n100m spinning guest ({handler}): {outside:.3f} cores from outside, ContainerStats {inside:.3f}, "
        f"stopped in {stopped_in * 1e3:.0f} ms; runc: {runc_outside:.3f} from outside"
    )
    assert outside <= 0.15
    assert abs(inside - outside) <= 0.25 * outside
    assert stopped_in < 1.0
    assert runc_outside <= 0.15


@PER_CONTAINER_CPU
@pytest.mark.parametrize("handler", HANDLERS)
def test_shares_split_one_cpu_by_requests(node: CriNode, images: dict[str, str], handler: str) -> None:
    """Two pods' guests pinned to CPU 0 with requests 1:4 (shares 256 and 1024)."""
    small = start_pod(node, "small", handler, images["spin"], cpu=cri.LinuxContainerResources(cpu_shares=256, cpuset_cpus="0"))
    big = start_pod(node, "big", handler, images["spin"], cpu=cri.LinuxContainerResources(cpu_shares=1024, cpuset_cpus="0"))
    time.sleep(0.3)
    _, (small_cores, big_cores) = measure(node, [small[1], big[1]])
    for pod_id, _ in (small, big):
        end_pod(node, pod_id)
    share = small_cores / (small_cores + big_cores)
    print(f"\nshares 1:4 on one CPU ({handler}): {small_cores:.3f} and {big_cores:.3f} cores, small share {share:.3f}")
    assert 0.8 <= small_cores + big_cores <= 1.1
    assert abs(share - 0.2) <= 0.2 * 0.2


@PER_CONTAINER_CPU
@pytest.mark.parametrize("handler", HANDLERS)
def test_a_limited_hog_leaves_another_pod_its_cpu(node: CriNode, images: dict[str, str], handler: str) -> None:
    hog = start_pod(
        node,
        "hog",
        handler,
        images["spin"],
        cpu=cri.LinuxContainerResources(cpu_period=100_000, cpu_quota=10_000, cpu_shares=102, cpuset_cpus="0"),
    )
    other = start_pod(node, "other", handler, images["spin"], cpu=cri.LinuxContainerResources(cpu_shares=102, cpuset_cpus="0"))
    time.sleep(0.3)
    _, (hog_cores, other_cores) = measure(node, [hog[1], other[1]])
    for pod_id, _ in (hog, other):
        end_pod(node, pod_id)
    print(f"\nlimited hog and a neighbour on one CPU ({handler}): {hog_cores:.3f} and {other_cores:.3f} cores")
    assert hog_cores <= 0.15
    assert other_cores >= 0.8


@pytest.mark.parametrize("handler", HANDLERS)
def test_memory_held_shows_in_container_and_pod_stats(node: CriNode, images: dict[str, str], handler: str) -> None:
    """The guest's touched pages are its working set; under a daemon of its own the pod's cgroup
    holds them too. A daemon shared by several pods is charged to none of them: the pod's figure
    there is only what its cgroup holds (docs/shim.md, Resources)."""
    pod_id, holder = start_pod(node, "holder", handler, images["holder"], memory=128 << 20)
    deadline = time.monotonic() + 10
    while True:
        stats = node.call(node.runtime.ContainerStats, cri.ContainerStatsRequest(container_id=holder)).stats
        pod = node.call(node.runtime.PodSandboxStats, cri.PodSandboxStatsRequest(pod_sandbox_id=pod_id)).stats
        enough = stats.memory.working_set_bytes.value >= HOLD_MIB << 20
        if handler == "wasm-oci":
            enough = enough and pod.linux.memory.working_set_bytes.value >= HOLD_MIB << 20
        if enough or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    pods = node.call(node.runtime.ListPodSandboxStats, cri.ListPodSandboxStatsRequest(filter=cri.PodSandboxStatsFilter(id=pod_id))).stats
    # The task Stats RPC itself, as `ctr task metrics` asks it: the container's figures, and
    # for the sandbox task its pod's.
    metrics = {task: json.loads(node.containerd.ctr("task", "metrics", "--format", "json", task).stdout) for task in (holder, pod_id)}
    end_pod(node, pod_id)
    print(
        f"\nholding {HOLD_MIB} MiB ({handler}): container working set {stats.memory.working_set_bytes.value >> 20} MiB, "
        f"pod {pod.linux.memory.working_set_bytes.value >> 20} MiB"
    )
    assert (HOLD_MIB << 20) <= stats.memory.working_set_bytes.value <= (HOLD_MIB + 1) << 20
    assert [p.attributes.id for p in pods] == [pod_id]
    assert metrics[holder]["memory"]["usage"] == stats.memory.working_set_bytes.value
    assert metrics[holder]["memory"]["usage_limit"] == 128 << 20
    assert metrics[pod_id]["memory"]["usage"] >= HOLD_MIB << 20  # the pod's kernel count, or its guests' sum
    if handler == "wasm-oci":
        assert pods[0].linux.memory.working_set_bytes.value >= HOLD_MIB << 20
        assert pod.linux.memory.working_set_bytes.value >= HOLD_MIB << 20
