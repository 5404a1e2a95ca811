"""A wasi:http proxy component through a real containerd 2.1 and `ctr`: the componentize-py app
(tests/fixtures/proxy/app.py) pushed without --trigger is an HTTP function by its world, served
by the shim on the host network with its responses streamed (serve's HTTP trigger)."""

from __future__ import annotations

import http.client
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.http_function import Function, free_port, request, served, wait_listening
from services.registry import RegistryServer
from services.shim import ShimHarness, shim_harness

pytestmark = [pytest.mark.containerd, pytest.mark.registry]

CREATE = 180.0
"""Seconds for `ctr run -d`: the first Create compiles the ~20 MB component (~20 s on 2 cores)."""
PATTERN = bytes(range(256)) * 256


@pytest.fixture(scope="module")
def shim(registry: RegistryServer) -> Iterator[ShimHarness]:
    yield from shim_harness(registry, release="2.1")


@pytest.fixture(scope="module")
def app(shim: ShimHarness, app_wasm: Path) -> str:
    return shim.push("proxy-app", app_wasm)  # no --trigger: its world says it


@pytest.fixture(scope="module")
def function(shim: ShimHarness, app: str) -> Iterator[tuple[Function, int]]:
    """The app as a detached task on the host network; its port."""
    port = free_port()
    task = Function(shim, app, "proxy-app", {"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{port}"}, timeout=CREATE)
    try:
        wait_listening(port)
        yield task, port
    finally:
        task.remove()


def test_get(function: tuple[Function, int]) -> None:
    _, port = function
    status, headers, body = request(port)
    assert (status, body, headers["content-type"], headers["transfer-encoding"]) == (200, b"hello", "text/plain", "chunked")


def test_post_echo_of_one_mib(function: tuple[Function, int]) -> None:
    _, port = function
    data = PATTERN * 16
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/echo", body=data, headers={"X-Trace": "abc"})
        response = conn.getresponse()
        assert (response.status, response.getheader("x-trace"), response.read() == data) == (200, "abc", True)
    finally:
        conn.close()


def test_not_found(function: tuple[Function, int]) -> None:
    _, port = function
    assert request(port, path="/missing")[::2] == (404, b"not found: /missing")


def test_a_trap_is_a_500_and_the_function_keeps_serving(shim: ShimHarness, function: tuple[Function, int]) -> None:
    task, port = function
    assert request(port, path="/trap")[::2] == (500, b"")
    assert request(port)[::2] == (200, b"hello")
    assert shim.task_status(task.id) == "RUNNING"
    deadline = time.monotonic() + 10
    while "GET /trap -> 500: wasm trap" not in task.log.read_text():  # the task's stderr, through its log
        assert time.monotonic() < deadline, task.log.read_text()
        time.sleep(0.05)
    assert "the guest fails on purpose" in task.log.read_text()


def test_sigterm_lets_a_streaming_request_finish_then_exits_0(shim: ShimHarness, app: str) -> None:
    port = free_port()
    task = Function(shim, app, "proxy-drain", {"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{port}"}, timeout=CREATE)
    try:
        wait_listening(port)
        answers: list[tuple[int, dict[str, str], bytes]] = []
        slow = threading.Thread(target=lambda: answers.append(request(port, path="/sleep?s=2", timeout=30)))
        slow.start()
        time.sleep(0.3)  # in flight: its guest sleeps 2 s
        size = 3 << 20
        status, _, body = request(port, path=f"/big?n={size}", timeout=30)
        assert (status, len(body)) == (200, size)
        task.kill("SIGTERM")
        slow.join(30)
        assert [(status, body) for status, _, body in answers] == [(200, b"slept")]
        assert task.exit_status(30) == 0
        log = task.log.read_text()
        assert f'"GET /big?n={size} HTTP/1.1" 200 {size} ' in log and '"GET /sleep?s=2 HTTP/1.1" 200 5 ' in log, log
    finally:
        task.remove()


def test_the_served_counters_count_streamed_bodies(shim: ShimHarness, function: tuple[Function, int]) -> None:
    task, port = function
    before = served(shim, task.id)
    assert request(port, path="/big?n=100000")[::2] == (200, (PATTERN * 2)[:100_000])
    after = served(shim, task.id)
    assert (after["tx_bytes"] - before["tx_bytes"], after["tx_packets"] - before["tx_packets"]) == (100_000, 1)  # type: ignore[operator]


def test_outgoing_requests_are_refused_unless_allowed_and_leave_from_the_tasks_network(shim: ShimHarness, app: str, tmp_path: Path) -> None:
    """A network namespace of the test's own holds a file server; the node's loopback holds
    another on the same port. An allowed request reaches the one in the task's network."""
    port = free_port()
    (tmp_path / "pod").mkdir()
    (tmp_path / "pod" / "where").write_text("inside the task's network")
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / "where").write_text("on the node")
    file_server = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    node = subprocess.Popen(file_server, cwd=tmp_path / "node", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pod = subprocess.Popen(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *file_server],
        cwd=tmp_path / "pod",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    tasks: list[Function] = []
    try:
        netns = f"/proc/{pod.pid}/ns/net"
        wait_listening(port)
        url = f"http://127.0.0.1:{port}/where"
        for name, allow, answer in (
            ("proxy-out-denied", "", "HttpRequestDenied 502"),
            ("proxy-out-allowed", f"127.0.0.1:{port}", "200 inside the task's network 200"),
        ):
            env = {"WASM_OCI_HTTP_ADDRESS": "127.0.0.1:8080", **({"WASM_OCI_HTTP_ALLOW_OUTBOUND": allow} if allow else {})}
            task = Function(shim, app, name, env, flags=("--with-ns", f"network:{netns}"), timeout=CREATE)
            tasks.append(task)
            inside = ["nsenter", f"--net={netns}", "curl", "-s", "-m", "20", "-w", " %{http_code}"]
            ready = subprocess.run(
                [
                    *inside,
                    "--retry",
                    "100",
                    "--retry-connrefused",
                    "--retry-delay",
                    "0",
                    "--retry-max-time",
                    "30",
                    "http://127.0.0.1:8080/",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert ready.stdout == "hello 200", ready
            asked = subprocess.run(
                [*inside, f"http://127.0.0.1:8080/fetch?url={url}"], capture_output=True, text=True, timeout=60
            )  # no --retry: curl retries a 502
            assert answer in asked.stdout, (asked, task.log.read_text())
            task.kill("SIGTERM")
            assert task.exit_status(30) == 0
    finally:
        for task in tasks:
            task.remove()
        for server in (node, pod):
            server.kill()
            server.wait(10)
