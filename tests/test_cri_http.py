"""HTTP functions under Kubernetes' path: the pod of examples/http-function/deployment.yaml, made
with the CRI calls a kubelet makes (tests/services/cri.py) on a CNI pod network, answers on its
pod IP; StopContainer drains it within the grace period, StopPodSandbox ends it, a failing
request leaves it serving, its access log is the container log, ContainerStats reads it.

The container configs are built from deployment.yaml itself (a kubelet's conversions of its
env, resources, grace period and readiness probe), so the example and the tests cannot drift;
service.yaml and runtimeclass.yaml are checked against it. PyYAML is not a dependency: `load_yaml`
reads the block-style subset the examples use and refuses anything else. Every wait has a
deadline; every pod is removed afterwards, also when a test fails.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from services import http_function as http_client
from services.cri import HANDLERS, SUBNET, CriNode, cri_node, example_runtime
from services.registry import RegistryServer
from services.shim import EXAMPLES, HTTP_PROBE, ShimHarness
from wasm_oci.proto import cri_pb2 as cri
from wasm_oci.shim import http_function

pytestmark = [pytest.mark.containerd, pytest.mark.registry]

EXAMPLE = EXAMPLES / "http-function"
EXITED, RUNNING = cri.ContainerState.CONTAINER_EXITED, cri.ContainerState.CONTAINER_RUNNING
BODY = b"the quick brown fox"
PROMPT = 5.0
"""Seconds within which an ended function's container must read EXITED."""


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# -- what a kubelet makes of deployment.yaml ---------------------------------------------------


def quantity(text: str | int) -> float:
    """A Kubernetes resource quantity ("500m", "128Mi", "1", "1G") as a number."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(text))
    assert match and match[2] in units, text
    return float(match[1]) * units[match[2]]


@dataclass(frozen=True)
class Deployment:
    """The pod template of deployment.yaml, as a kubelet turns it into CRI requests."""

    doc: dict[str, Any]

    @classmethod
    def load(cls) -> Deployment:
        (doc,) = load_yaml(EXAMPLE / "deployment.yaml")
        assert (doc["apiVersion"], doc["kind"]) == ("apps/v1", "Deployment")
        return cls(doc)

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.doc["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["containers"]
        return dict(container)

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.doc["spec"]["template"]["metadata"]["labels"])

    @property
    def env(self) -> dict[str, str]:
        return {item["name"]: item["value"] for item in self.container["env"]}

    def port(self, name_or_number: str | int = "http") -> int:
        for port in self.container["ports"]:
            if name_or_number in (port.get("name"), port["containerPort"]):
                return int(port["containerPort"])
        raise AssertionError(f"no container port {name_or_number!r}")

    @property
    def grace(self) -> int:
        return int(self.pod["terminationGracePeriodSeconds"])

    @property
    def memory(self) -> int:
        return int(quantity(self.container["resources"]["limits"]["memory"]))

    @property
    def cpu(self) -> cri.LinuxContainerResources:
        """The kubelet's CPU fields: shares from the request, a CFS quota from the limit."""
        resources = self.container["resources"]
        period = 100_000
        return cri.LinuxContainerResources(
            cpu_period=period,
            cpu_quota=round(quantity(resources["limits"]["cpu"]) * period),
            cpu_shares=max(2, int(quantity(resources["requests"]["cpu"]) * 1024)),
        )

    @property
    def probe(self) -> tuple[str, int]:
        get = self.container["readinessProbe"]["httpGet"]
        return get["path"], self.port(get["port"])


DEPLOYMENT = Deployment.load()


def test_the_examples_agree_with_each_other_and_with_the_shim() -> None:
    (runtime_class,) = load_yaml(EXAMPLE / "runtimeclass.yaml")
    assert runtime_class in load_yaml(EXAMPLES / "containerd" / "runtimeclass.yaml")  # the same RuntimeClass
    assert runtime_class["handler"] in HANDLERS  # the runtime the node configures from containerd-config.toml
    assert DEPLOYMENT.pod["runtimeClassName"] == runtime_class["metadata"]["name"]
    (service,) = load_yaml(EXAMPLE / "service.yaml")
    assert (service["kind"], service["spec"]["type"]) == ("Service", "ClusterIP")
    assert service["spec"]["selector"].items() <= DEPLOYMENT.labels.items()
    assert DEPLOYMENT.doc["spec"]["selector"]["matchLabels"].items() <= DEPLOYMENT.labels.items()
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80 and DEPLOYMENT.port(port["targetPort"]) == 8080
    # The shim listens where the container port says, the env is valid, the grace covers a drain.
    settings = http_function.HttpSettings.from_env(DEPLOYMENT.env)
    assert http_function.ADDRESS not in DEPLOYMENT.env and settings.port == DEPLOYMENT.port()
    assert DEPLOYMENT.grace > settings.timeout + http_function.DRAIN_SLACK
    assert DEPLOYMENT.memory // settings.concurrency >= 16 << 20
    # The README's CRI snippet is containerd-config.toml's runtime.
    readme = (EXAMPLE / "README.md").read_text()
    snippet = re.search(r"```toml\n(.*?)```", readme, re.S)
    assert snippet is not None
    runtimes = tomllib.loads(snippet[1])["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    assert runtimes == {"wasm-oci": example_runtime()}
    assert "--trigger http" in readme and "kubectl apply -f runtimeclass.yaml -f deployment.yaml -f service.yaml" in readme


# -- the node and its functions ----------------------------------------------------------------


@pytest.fixture(scope="module")
def node(registry: RegistryServer) -> Iterator[CriNode]:
    yield from cri_node(registry)


@pytest.fixture(scope="module")
def images(node: CriNode) -> dict[str, str]:
    """`upper`: examples/http pushed with --trigger http, as the README does; `probe`: the probe
    pushed as a command, made a function by the pod's env (WASM_OCI_TRIGGER=http)."""
    shim = ShimHarness(node.containerd, node.registry, node.home)
    refs = {
        "upper": shim.push("upper-http", EXAMPLES / "http" / "http.wasm", pull=False, options=["--trigger", "http"]),
        "probe": shim.push("probe-command", HTTP_PROBE, pull=False),
    }
    for ref in refs.values():
        node.pull(ref)
    return refs


@dataclass
class Function:
    pod_id: str
    config: cri.PodSandboxConfig
    container_id: str
    ip: str
    port: int
    daemon: int


@dataclass
class Functions:
    """Pods of deployment.yaml's template on the CNI network; all removed at the end."""

    node: CriNode
    pods: list[str] = field(default_factory=list)

    def run(self, image: str, name: str, env: dict[str, str] | None = None) -> Function:
        node = self.node
        config = node.pod_config(
            f"{DEPLOYMENT.doc['metadata']['name']}-{name}", network="pod", cgroups=True, cpu_shares=DEPLOYMENT.cpu.cpu_shares
        )
        config.labels.clear()
        config.labels.update(DEPLOYMENT.labels)
        pod_id = node.run_pod(config, DEPLOYMENT.pod["runtimeClassName"])
        self.pods.append(pod_id)
        container = DEPLOYMENT.container
        container_id = node.create(
            pod_id, config, container["name"], image, env={**DEPLOYMENT.env, **(env or {})}, memory=DEPLOYMENT.memory, cpu=DEPLOYMENT.cpu
        )
        node.start(container_id)
        node.wait_state(container_id, RUNNING)
        ip = node.pod_status(pod_id).network.ip
        assert ip.startswith(f"{SUBNET}."), ip
        return Function(pod_id, config, container_id, ip, DEPLOYMENT.port(), verbose_pid(node, pod_id))

    def remove(self) -> None:
        """Stop and remove every pod (one a test removed already is fine); the first error after all."""
        errors = []
        for pod_id in self.pods:
            try:
                self.node.stop_pod(pod_id)
                self.node.remove_pod(pod_id)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def functions(node: CriNode) -> Iterator[Functions]:
    made = Functions(node)
    try:
        yield made
    finally:
        made.remove()


def pod_info(node: CriNode, pod_id: str) -> dict[str, Any]:
    """The verbose info CRI keeps of a pod sandbox."""
    response = node.call(node.runtime.PodSandboxStatus, cri.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    info: dict[str, Any] = json.loads(response.info["info"])
    return info


def verbose_pid(node: CriNode, pod_id: str) -> int:
    """The pid CRI recorded for the pod's sandbox task: its shim daemon's."""
    return int(pod_info(node, pod_id)["pid"])


def request(host: str, port: int, method: str = "GET", path: str = "/", body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    return http_client.request(port, method, path, body, host=host)


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return True
    return False


def listening_in_host_network(pid: int, port: int) -> bool:
    """Whether process `pid` (a shim daemon, in the host's network namespace) holds a socket
    listening on `port` there: /proc/PID/net/tcp{,6} list the sockets of its namespace, its
    fds say which are its own."""
    listening = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                listening.add(f"socket:[{fields[9]}]")
    owned = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            owned.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return bool(listening & owned)


def log_lines(path: str) -> list[tuple[str, str, str]]:
    """The container log in CRI's format, `TIMESTAMP STREAM TAG CONTENT`: (stream, tag, content)."""
    lines = []
    for line in Path(path).read_text().splitlines():
        stamp, stream, tag, content = line.split(" ", 3)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d)", stamp), line
        lines.append((stream, tag, content))
    return lines


# -- the cases ---------------------------------------------------------------------------------


def test_the_deployments_pod_answers_on_its_pod_ip(node: CriNode, images: dict[str, str], functions: Functions) -> None:
    """The pod of deployment.yaml (image pushed with --trigger http) on the CNI network: the
    readiness probe's GET and requests from the host, as a Service's would come, reach the
    function on pod IP:8080; the container stays RUNNING with the deployment's limits."""
    function = functions.run(images["upper"], "serves")
    path, port = DEPLOYMENT.probe
    assert request(function.ip, port, path=path)[0] == 200  # what the kubelet's readinessProbe does
    status, headers, body = request(function.ip, function.port, "POST", "/greet?lang=en", BODY)
    assert (status, body) == (200, BODY.upper())
    assert (headers["x-method"], headers["x-path"], headers["x-query"]) == ("POST", "/greet", "lang=en")
    # As many at once as the deployment's concurrency, and more (they wait for a slot).
    bodies = [f"request {i}".encode() for i in range(3 * int(DEPLOYMENT.env[http_function.CONCURRENCY]))]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: request(function.ip, function.port, "POST", "/", b), bodies))
    assert [(s, b) for s, _, b in answers] == [(200, b.upper()) for b in bodies]
    status_now = node.status(function.container_id)
    assert status_now.state == RUNNING and [c.state for c in node.containers(function.pod_id)] == [RUNNING]
    assert status_now.resources.linux.memory_limit_in_bytes == DEPLOYMENT.memory
    assert status_now.resources.linux.cpu_quota == DEPLOYMENT.cpu.cpu_quota
    assert not listening_in_host_network(function.daemon, function.port), "the function listens on the node's network too"


def test_stop_container_lets_the_request_in_flight_finish_then_exits_0(node: CriNode, images: dict[str, str], functions: Functions) -> None:
    """StopContainer with the deployment's grace period while /slow (1 s) is in flight: the
    function stops accepting at once, the request completes 200, the container is EXITED 0
    (Completed) as soon as it has, long before the grace period runs out."""
    function = functions.run(images["probe"], "drains", {http_function.TRIGGER: "http"})
    slow = http.client.HTTPConnection(function.ip, function.port, timeout=10)
    try:
        slow.request("GET", "/slow")
        time.sleep(0.3)  # in flight: its guest sleeps 1 s

        def stop() -> float:
            began = time.monotonic()
            node.stop_container(function.container_id, grace=DEPLOYMENT.grace)
            return time.monotonic() - began

        with ThreadPoolExecutor(1) as pool:
            stopping = pool.submit(stop)
            time.sleep(0.2)
            assert refused(function.ip, function.port), "still accepting after the SIGTERM"
            response = slow.getresponse()
            assert (response.status, response.read()) == (200, b"ok\n")
            took = stopping.result(timeout=DEPLOYMENT.grace + 30)
    finally:
        slow.close()
    status = node.wait_state(function.container_id, EXITED, timeout=PROMPT)
    assert (status.exit_code, status.reason) == (0, "Completed")
    assert 0.3 < took < 3, took  # it waited for the request, not for the grace period
    assert status.finished_at > status.started_at


def test_stop_pod_sandbox_ends_a_serving_function_and_leaves_nothing(node: CriNode, images: dict[str, str], functions: Functions) -> None:
    """StopPodSandbox with the function serving (an idle keep-alive connection open): the
    container is EXITED, the pod IP no longer answers, its address and network namespace are
    released, RemovePodSandbox works, and the pod's shim daemon leaves."""
    function = functions.run(images["upper"], "pod-stop")
    keep_alive = http.client.HTTPConnection(function.ip, function.port, timeout=10)
    keep_alive.request("POST", "/", body=b"kept")
    assert keep_alive.getresponse().read() == b"KEPT"
    netns_dir = Path(f"/proc/{node.containerd.proc.pid}/root/run/netns")  # type: ignore[union-attr]
    ipam = node.containerd.workdir / "cni-ipam" / "wasm-oci-test"
    assert (ipam / function.ip).exists()
    netns = Path(pod_info(node, function.pod_id)["sandboxMetadata"]["Metadata"]["NetNSPath"]).name
    assert netns in os.listdir(netns_dir)
    began = time.monotonic()
    node.stop_pod(function.pod_id)
    assert time.monotonic() - began < PROMPT
    status = node.status(function.container_id)
    # CRI's StopPodSandbox kills what still runs without a grace period (a kubelet stops each
    # container with its own first): SIGKILL, 137.
    assert (status.state, status.exit_code, status.reason) == (EXITED, 137, "Error")
    assert node.pod_status(function.pod_id).state == cri.PodSandboxState.SANDBOX_NOTREADY
    assert refused(function.ip, function.port)
    assert not (ipam / function.ip).exists(), "CNI DEL released the address"
    assert netns not in os.listdir(netns_dir), "the pod's network namespace is gone"

    def again() -> bytes:
        keep_alive.request("POST", "/", body=b"again")
        return keep_alive.getresponse().read()

    with pytest.raises((OSError, http.client.HTTPException)):  # the kept connection was closed
        again()
    keep_alive.close()
    node.remove_pod(function.pod_id)
    assert node.containers(function.pod_id) == []
    with pytest.raises(grpc.RpcError) as gone:
        node.pod_status(function.pod_id)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    deadline = time.monotonic() + 15  # the daemon lingers 2 s (the node's shim.toml), then leaves
    while function.daemon in node.daemons() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert function.daemon not in node.daemons()


def test_a_failing_request_answers_500_or_504_and_the_log_has_every_request(
    node: CriNode, images: dict[str, str], functions: Functions
) -> None:
    """A trap answers 500 and a guest past its timeout 504 (the pod overrides the deployment's
    WASM_OCI_HTTP_TIMEOUT with 1 s); the function keeps serving, stays RUNNING, and the
    container log (what `kubectl logs` reads) has an access line per request on stdout and
    what went wrong on stderr, in CRI's format, while it runs."""
    function = functions.run(images["probe"], "failures", {http_function.TRIGGER: "http", http_function.TIMEOUT: "1"})
    assert request(function.ip, function.port, path="/trap")[0] == 500
    began = time.monotonic()
    assert request(function.ip, function.port, path="/spin")[0] == 504
    assert time.monotonic() - began < 3
    assert request(function.ip, function.port, path="/after")[::2] == (200, b"ok\n")
    assert node.status(function.container_id).state == RUNNING
    log_path = node.status(function.container_id).log_path
    assert log_path == str(Path(function.config.log_directory) / DEPLOYMENT.container["name"] / "0.log")
    deadline = time.monotonic() + PROMPT
    while True:
        lines = log_lines(log_path) if Path(log_path).exists() else []
        access = [content for stream, _, content in lines if stream == "stdout"]
        if len(access) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    gateway = f"{SUBNET}.1"  # the host reaches the pod through the bridge
    assert [re.sub(r" \d+ [\d.]+ms$", "", line) for line in access] == [
        f'{gateway} "GET /trap HTTP/1.1" 500',
        f'{gateway} "GET /spin HTTP/1.1" 504',
        f'{gateway} "GET /after HTTP/1.1" 200',
    ], lines
    assert access[2].split()[-2] == "3"  # "ok\n"
    errors = "\n".join(content for stream, _, content in lines if stream == "stderr")
    assert "GET /trap -> 500: wasm trap" in errors and "GET /spin -> 504: timed out" in errors, errors
    assert {tag for _, tag, _ in lines} == {"F"}
    node.stop_container(function.container_id, grace=DEPLOYMENT.grace)
    assert node.wait_state(function.container_id, EXITED, timeout=PROMPT).exit_code == 0


def test_container_stats_of_a_serving_function(node: CriNode, images: dict[str, str], functions: Functions) -> None:
    """ContainerStats and ListContainerStats answer for a function while it serves: its guests'
    CPU time grows with the requests; the pod's stats count the traffic on its interface."""
    function = functions.run(images["upper"], "stats")

    def stats() -> cri.ContainerStats:
        return node.call(node.runtime.ContainerStats, cri.ContainerStatsRequest(container_id=function.container_id)).stats

    before = stats()
    assert before.attributes.id == function.container_id
    assert before.attributes.metadata.name == DEPLOYMENT.container["name"]
    big = b"x" * (1 << 20)
    for _ in range(5):
        status, _, body = request(function.ip, function.port, "POST", "/", big)
        assert (status, len(body)) == (200, len(big))
    after = stats()
    assert after.cpu.usage_core_nano_seconds.value > before.cpu.usage_core_nano_seconds.value
    assert after.cpu.timestamp > before.cpu.timestamp
    assert after.memory.HasField("working_set_bytes")
    listed = node.call(
        node.runtime.ListContainerStats, cri.ListContainerStatsRequest(filter=cri.ContainerStatsFilter(pod_sandbox_id=function.pod_id))
    )
    assert [s.attributes.id for s in listed.stats] == [function.container_id]
    pod = node.call(node.runtime.PodSandboxStats, cri.PodSandboxStatsRequest(pod_sandbox_id=function.pod_id)).stats
    network = pod.linux.network.default_interface
    assert network.rx_bytes.value > 5 * len(big) and network.tx_bytes.value > 5 * len(big), network
    assert node.status(function.container_id).state == RUNNING
