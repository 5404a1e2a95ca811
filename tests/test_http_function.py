"""HTTP functions through a real containerd 2.1 and `ctr`: images pushed with `--trigger http`
are served by the shim in the task's network, on the host network (`--net-host`) or in a
network namespace of the test's own (`--with-ns network:...`)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.http_function import Function, free_port, request, served, wait_listening
from services.registry import RegistryServer
from services.shim import EXAMPLES, HTTP_PROBE, RUNTIME, ShimHarness, shim_harness

pytestmark = [pytest.mark.containerd, pytest.mark.registry]

HTTP = EXAMPLES / "http" / "http.wasm"
BODY = b"the quick brown fox"


@pytest.fixture(scope="module", params=["2.1", "1.7"])
def shim(registry: RegistryServer, request: pytest.FixtureRequest) -> Iterator[ShimHarness]:
    yield from shim_harness(registry, release=request.param)


@pytest.fixture(scope="module")
def upper(shim: ShimHarness) -> str:
    return shim.push("upper-http", HTTP, options=["--trigger", "http"])


@pytest.fixture(scope="module")
def probe(shim: ShimHarness) -> str:
    return shim.push("probe-http", HTTP_PROBE, options=["--trigger", "http"])


@pytest.fixture
def functions(shim: ShimHarness) -> Iterator[list[Function]]:
    started: list[Function] = []
    yield started
    for function in started:
        function.remove()


def test_an_http_function_answers_on_the_host_network_and_logs_each_request(
    shim: ShimHarness, upper: str, functions: list[Function]
) -> None:
    port = free_port()
    function = Function(shim, upper, "upper-host", {"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{port}"})
    functions.append(function)
    wait_listening(port)
    status, headers, body = request(port, "POST", "/some/path?x=1", BODY)
    assert (status, body) == (200, BODY.upper())
    assert headers["x-method"] == "POST" and headers["x-path"] == "/some/path" and headers["x-query"] == "x=1"
    for _ in range(5):
        assert request(port)[0] == 200
    assert served(shim, function.id) == {
        "name": b"http",
        "rx_bytes": len(BODY),
        "rx_packets": 6,
        "tx_bytes": len(BODY) + 5 * 0,
        "tx_packets": 6,
    }
    function.kill("SIGTERM")
    assert function.exit_status() == 0
    lines = function.log.read_text().splitlines()
    assert len(lines) == 6 and '"POST /some/path?x=1 HTTP/1.1" 200 19 ' in lines[0], lines
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_failing_request_answers_500_or_504_and_the_function_keeps_serving(
    shim: ShimHarness, probe: str, functions: list[Function]
) -> None:
    port = free_port()
    env = {"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{port}", "WASM_OCI_HTTP_TIMEOUT": "1"}
    function = Function(shim, probe, "probe-failures", env, ("--net-host", "--memory-limit", str(64 << 20)))
    functions.append(function)
    wait_listening(port)
    assert request(port, path="/trap")[0] == 500
    began = time.monotonic()
    assert request(port, path="/spin")[0] == 504
    assert time.monotonic() - began < 3
    assert request(port, path="/hog")[0] == 500
    assert request(port, path="/")[:3:2] == (200, b"ok\n")
    log = function.log.read_text()
    assert "GET /trap -> 500: wasm trap" in log and "GET /spin -> 504: timed out" in log and "out of memory" in log
    assert shim.task_status(function.id) == "RUNNING"


def test_sigterm_lets_the_request_in_flight_finish_and_sigkill_cuts_at_once(
    shim: ShimHarness, probe: str, functions: list[Function]
) -> None:
    port = free_port()
    function = Function(shim, probe, "probe-drain", {"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{port}"})
    functions.append(function)
    wait_listening(port)
    slow = subprocess.Popen(
        ["curl", "-s", "-o", "-", "-w", " %{http_code}", f"http://127.0.0.1:{port}/slow"], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.3)  # in flight: its guest sleeps 1 s
    function.kill("SIGTERM")
    time.sleep(0.1)
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    out, _ = slow.communicate(timeout=10)
    assert out == "ok\n 200"
    assert function.exit_status() == 0

    port = free_port()
    function = Function(shim, probe, "probe-kill", {"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{port}"})
    functions.append(function)
    wait_listening(port)
    spinning = subprocess.Popen(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/spin"], stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.3)
    began = time.monotonic()
    function.kill("SIGKILL")
    assert function.exit_status() == 137
    assert time.monotonic() - began < 5
    out, _ = spinning.communicate(timeout=10)
    assert out == "000"  # the connection was cut


def test_a_function_in_a_network_namespace_of_its_own(shim: ShimHarness, upper: str, functions: list[Function], tmp_path: Path) -> None:
    holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 300"])
    try:
        netns = f"/proc/{holder.pid}/ns/net"
        time.sleep(0.2)
        function = Function(shim, upper, "upper-netns", {"WASM_OCI_HTTP_ADDRESS": "127.0.0.1:8080"}, ("--with-ns", f"network:{netns}"))
        functions.append(function)
        # nothing on the host's loopback; inside the namespace, the function answers
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", 8080), timeout=1).close()
        inside = subprocess.run(
            [
                "nsenter",
                f"--net={netns}",
                "curl",
                "-s",
                "--retry",
                "20",
                "--retry-connrefused",
                "--retry-delay",
                "0",
                "-d",
                "abc",
                "http://127.0.0.1:8080/",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert inside.stdout == "ABC", inside.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_port_in_use_fails_create_with_a_message(shim: ShimHarness, upper: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = shim.containerd.ctr(
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            "--net-host",
            "--env",
            f"WASM_OCI_HTTP_ADDRESS=127.0.0.1:{port}",
            upper,
            "upper-taken",
            check=False,
        )
        shim.containerd.ctr("container", "rm", "upper-taken", check=False)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Address already in use" in result.stderr


def test_bad_settings_fail_create_naming_the_variable(shim: ShimHarness, upper: str) -> None:
    for name, value in (("WASM_OCI_HTTP_ADDRESS", "nowhere"), ("WASM_OCI_HTTP_CONCURRENCY", "0"), ("WASM_OCI_HTTP_TIMEOUT", "soon")):
        result = shim.containerd.ctr(
            "run", "-d", "--runtime", RUNTIME, "--net-host", "--env", f"{name}={value}", upper, "upper-bad", check=False
        )
        shim.containerd.ctr("container", "rm", "upper-bad", check=False)
        assert result.returncode != 0 and f"{name}='{value}'" in result.stderr, result.stderr


def test_many_functions_in_one_daemon_each_isolated(shim: ShimHarness, probe: str, upper: str, functions: list[Function]) -> None:
    ports = {}
    for index in range(4):
        ports[index] = free_port()
        env = {"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{ports[index]}", "WASM_OCI_HTTP_TIMEOUT": "2", "WASM_OCI_HTTP_CONCURRENCY": "2"}
        functions.append(Function(shim, probe if index else upper, f"many-{index}", env, ("--net-host", "--memory-limit", str(32 << 20))))
    for port in ports.values():
        wait_listening(port)
    assert len(shim.daemons()) == 1
    # one function's guests trap, spin to their timeout and exhaust their memory at once...
    hostile = [
        subprocess.Popen(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{ports[1]}{path}"], stdout=subprocess.PIPE, text=True
        )
        for path in ("/spin", "/spin", "/hog", "/trap")
    ]
    # ...and the others answer meanwhile, promptly
    for _ in range(10):
        began = time.monotonic()
        assert request(ports[0], "POST", "/", b"abc")[2] == b"ABC"
        assert request(ports[2])[0] == 200 and request(ports[3])[0] == 200
        assert time.monotonic() - began < 1.0
    codes = sorted(proc.communicate(timeout=20)[0] for proc in hostile)
    assert codes in (["500", "500", "504", "504"], ["500", "503", "504", "504"]), codes
    assert request(ports[1])[0] == 200


def test_an_update_of_the_memory_limit_is_shared_out_to_the_next_requests(tmp_path: Path) -> None:
    """What the Update RPC does to a running HTTP function (ctr has no `task update`), in process."""
    from wasm_oci.engine import Engine, RunSpec
    from wasm_oci.engine.acceptor import Acceptor
    from wasm_oci.shim.http_function import HttpFunction, HttpPlan, HttpSettings
    from wasm_oci.shim.netns import Network
    from wasm_oci.shim.stdio import Attachment, Stdio

    engine = Engine(cache_dir=tmp_path / "cache")
    program = engine.load(HTTP_PROBE)
    log = tmp_path / "log"
    settings = HttpSettings.from_env({"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{free_port()}", "WASM_OCI_HTTP_CONCURRENCY": "2"})
    function = HttpFunction(
        engine,
        program,
        RunSpec(args=("probe",), memory_limit=64 << 20),
        HttpPlan(settings, Network(), Acceptor()),
        Attachment(Stdio(stdout=str(log), stderr=str(log))),
        None,
    )
    try:
        function.start()
        port = function.server.port
        assert request(port, path="/hog")[0] == 500
        function.limit_memory(16 << 20)
        assert request(port, path="/hog")[0] == 500
        assert request(port)[0] == 200
    finally:
        function.close()
    text = log.read_text()
    assert f"its memory limit is {32 << 20} bytes" in text and f"its memory limit is {8 << 20} bytes" in text, text
    assert function.counters.requests == 3 and function.counters.failed == 2


def test_a_wasi_http_proxy_is_an_http_function_by_its_world(shim: ShimHarness, functions: list[Function]) -> None:
    from services import proxy_components

    ref = shim.push("proxy-fixed", proxy_components.fixed())  # no --trigger: its world says it
    port = free_port()
    function = Function(shim, ref, "proxy-fixed", {"WASM_OCI_HTTP_ADDRESS": f"127.0.0.1:{port}"})
    functions.append(function)
    wait_listening(port)
    status, headers, body = request(port, "GET", "/anything")
    assert (status, headers["x-guest"], body) == (200, "wat", b"hello from wat\n")
    result = shim.containerd.ctr(
        "run", "--rm", "--runtime", RUNTIME, "--net-host", "--env", "WASM_OCI_TRIGGER=command", ref, "proxy-as-command", check=False
    )
    shim.containerd.ctr("container", "rm", "proxy-as-command", check=False)
    assert result.returncode != 0 and "a wasi:http proxy component can only be served" in result.stderr
    function.kill("SIGTERM")
    assert function.exit_status() == 0
    assert '"GET /anything HTTP/1.1" 200' in function.log.read_text()
