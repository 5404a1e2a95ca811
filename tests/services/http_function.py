"""Helpers for tests of HTTP functions through containerd and `ctr` (tests/test_http_function.py,
tests/test_shim_proxy.py): a detached function task, plain requests to it, its served counters."""

from __future__ import annotations

import http.client
import re
import socket
import time

from services.shim import RUNTIME, ShimHarness


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(
    port: int, method: str = "GET", path: str = "/", body: bytes = b"", host: str = "127.0.0.1", timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None)
        response = conn.getresponse()
        return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()
    finally:
        conn.close()


def served(shim: ShimHarness, task_id: str) -> dict[str, object]:
    """The task's "http" network entry in the metrics its shim reports (cgroups v3.1's
    NetworkStat), read through containerd's Tasks.Metrics: ctr 2.1 vendors an older cgroups
    Metrics without the field and prints nothing of it."""
    import grpc

    from wasm_oci.proto import tasks_pb2, tasks_pb2_grpc
    from wasm_oci.shim import wire

    with grpc.insecure_channel(f"unix://{shim.containerd.address}") as channel:
        response = tasks_pb2_grpc.TasksStub(channel).Metrics(
            tasks_pb2.MetricsRequest(filters=[f"id=={task_id}"]), metadata=[("containerd-namespace", shim.containerd.namespace)], timeout=10
        )
    (metric,) = response.metrics
    names = {1: "name", 2: "rx_bytes", 3: "rx_packets", 6: "tx_bytes", 7: "tx_packets", 8: "tx_errors"}
    for number, value in wire.fields(metric.data.value):
        if number == 9:  # Metrics.network
            assert isinstance(value, bytes)
            return {names[field]: item for field, item in wire.fields(value)}
    raise AssertionError("no network entry in the task's metrics")


def wait_listening(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


class Function:
    """A detached HTTP function task (`ctr run -d`), its log in a file; removed at the end."""

    def __init__(
        self,
        shim: ShimHarness,
        ref: str,
        task_id: str,
        env: dict[str, str],
        flags: tuple[str, ...] = ("--net-host",),
        timeout: float = 60.0,
    ) -> None:
        """`timeout`: seconds for `ctr run -d` (its Create loads, maybe compiles, the guest) and then to be RUNNING."""
        self.shim, self.id = shim, task_id
        self.log = shim.home / f"{task_id}.log"
        envs = [arg for name, value in env.items() for arg in ("--env", f"{name}={value}")]
        shim.containerd.ctr(
            "run", "-d", "--runtime", RUNTIME, "--log-uri", f"file://{self.log}", *flags, *envs, ref, task_id, timeout=timeout
        )
        shim.wait_status(task_id, "RUNNING", timeout)

    def kill(self, signal: str) -> None:
        self.shim.containerd.ctr("task", "kill", "--signal", signal, self.id)

    def exit_status(self, timeout: float = 20.0) -> int:
        self.shim.wait_status(self.id, "STOPPED", timeout)
        deleted = self.shim.containerd.ctr("task", "delete", self.id).stderr
        self.shim.containerd.ctr("container", "rm", self.id)
        code = re.search(r"exit code (\d+)", deleted)
        return int(code[1]) if code else 0

    def remove(self) -> None:
        ctr = self.shim.containerd.ctr
        ctr("task", "kill", "--signal", "SIGKILL", self.id, check=False)
        ctr("task", "delete", "--force", self.id, check=False)
        ctr("container", "rm", self.id, check=False)
