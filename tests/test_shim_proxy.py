"""A wasi:http proxy component through a real containerd 2.1 and `ctr`: the componentize-py app
(tests/fixtures/proxy/app.py) pushed without --trigger is an HTTP function by its world, served
by the shim on the host network with its responses streamed (serve's HTTP trigger)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator

import pytest

from services import proxy_components
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
def app(shim: ShimHarness) -> str:
    try:
        wasm = proxy_components.python_app()
    except proxy_components.BuildUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    return shim.push("proxy-app", wasm)  # no --trigger: its world says it


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
