"""The CGI HTTP trigger with real guests: the example handler, traps, timeouts, concurrency;
and the CGI mapping itself."""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime
from test_engine import cli_component

from wasm_oci.engine import Engine, RunSpec, cgi, workers
from wasm_oci.engine.serve import CgiServer, ServeLimits
from wasm_oci.engine.spec import Preopen

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HTTP = (EXAMPLES / "http" / "http.wasm").read_bytes()
HELLO = (EXAMPLES / "hello" / "hello.wasm").read_bytes()
SPIN = (EXAMPLES / "spin" / "spin.wasm").read_bytes()
TRAP = cli_component('(func (export "run") (result i32) unreachable)')
MISSING_IMPORT = cli_component(
    '(func (export "run") (result i32) (i32.const 0))', '(import "acme:missing/thing@1.0.0" (instance (export "f" (func))))'
)

Serve = Callable[..., http.client.HTTPConnection]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine(cache_dir=tmp_path_factory.mktemp("compiled"))


@contextlib.contextmanager
def live_servers(engine: Engine) -> Iterator[Callable[[bytes, RunSpec, ServeLimits], CgiServer]]:
    """start(wasm, spec, limits) -> a CgiServer serving on loopback; all stopped on exit."""
    servers: list[CgiServer] = []

    def start(wasm: bytes, spec: RunSpec, limits: ServeLimits) -> CgiServer:
        server = CgiServer(("127.0.0.1", 0), engine, engine.load(wasm, name="handler.wasm"), spec, limits)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def serve(engine: Engine) -> Iterator[Serve]:
    """serve(wasm, spec=RunSpec(), limits=ServeLimits()) -> a connection to a live CgiServer."""
    with live_servers(engine) as start:

        def connect(wasm: bytes, spec: RunSpec = RunSpec(), limits: ServeLimits = ServeLimits()) -> http.client.HTTPConnection:
            return http.client.HTTPConnection(*start(wasm, spec, limits).server_address[:2], timeout=10)

        yield connect


def fetch(
    conn: http.client.HTTPConnection, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, target, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_example_handler_gets_the_request_as_cgi(serve: Serve) -> None:
    conn = serve(HTTP)
    status, headers, body = fetch(conn, "POST", "/some/path?q=1&r=2", b"hello wasm", {"X-Echo": "echoed"})
    assert (status, body) == (200, b"HELLO WASM")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert (headers["X-Method"], headers["X-Path"], headers["X-Query"], headers["X-Echo"]) == ("POST", "/some/path", "q=1&r=2", "echoed")
    assert headers["Content-Length"] == "10"
    # keep-alive: the same connection serves the next request, each in a fresh instance
    assert fetch(conn, "GET", "/")[2] == b""
    status, headers, body = fetch(conn, "HEAD", "/")
    assert (status, body, headers["Content-Length"]) == (200, b"", "0")


def test_chunked_and_large_bodies(serve: Serve) -> None:
    conn = serve(HTTP, limits=ServeLimits(max_body=1 << 20))
    assert fetch(conn, "PUT", "/", iter([b"abc", b"def"]))[2] == b"ABCDEF"  # http.client sends an iterable chunked
    big = b"x" * 300_000
    assert fetch(conn, "POST", "/", big)[2] == big.upper()
    # refused on the declared length, before reading the body (what the client still sends is read and dropped for a moment)
    assert fetch(conn, "POST", "/", b"x", {"Content-Length": str((1 << 20) + 1)})[0] == 413


def test_output_without_a_header_block_is_the_body(serve: Serve) -> None:
    status, headers, body = fetch(serve(HELLO, RunSpec(args=["hello.wasm", "x"])), "GET", "/")
    assert (status, headers["Content-Type"]) == (200, "application/octet-stream")
    assert body == b"Hello from wasm-oci!\narg: hello.wasm\narg: x\n"


def test_concurrent_requests_each_get_their_own_instance(serve: Serve) -> None:
    conn = serve(HTTP)
    host, port = conn.host, conn.port
    failures: list[str] = []

    def client(n: int) -> None:
        mine = http.client.HTTPConnection(host, port, timeout=10)
        for i in range(5):
            text = f"client {n} request {i}".encode()
            status, _, body = fetch(mine, "POST", f"/{n}", text)
            if (status, body) != (200, text.upper()):
                failures.append(f"{n}/{i}: {status} {body!r}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []


@pytest.mark.parametrize(
    ("wasm", "spec", "code", "logged"),
    [
        (TRAP, RunSpec(), 500, "wasm trap: wasm `unreachable` instruction executed"),
        (SPIN, RunSpec(timeout=0.2), 504, "timed out after"),
        (HELLO, RunSpec(env={"EXIT_CODE": "1"}), 500, "guest exited with status 1"),
        (MISSING_IMPORT, RunSpec(), 500, "imports `acme:missing/thing@1.0.0`"),
    ],
    ids=["trap", "timeout", "exit-status", "missing-import"],
)
def test_failing_guest_gives_a_bare_5xx_and_logs_why(
    serve: Serve, caplog: pytest.LogCaptureFixture, wasm: bytes, spec: RunSpec, code: int, logged: str
) -> None:
    conn = serve(wasm, spec)
    status, _headers, body = fetch(conn, "GET", "/x")
    assert status == code
    assert body == f"{code} {http.client.responses[code]}\n".encode()  # nothing about the guest
    assert logged in caplog.text
    assert fetch(conn, "GET", "/x")[0] == code  # the server carries on


def test_memory_limit_applies_per_request(serve: Serve) -> None:
    conn = serve(HTTP, RunSpec(memory_limit=64 << 10))  # the handler's one page; its realloc cannot grow
    assert fetch(conn, "POST", "/", b"small")[0] == 200
    assert fetch(conn, "POST", "/", b"x" * 100_000)[0] == 500


# -- where guests run: their request's thread, or a guest thread -----------------------------------

# Opens ./fifo for reading: stuck in the host call (no stop reaches it) until a writer opens it.
FIFO_READER = wasmtime.wat2wasm("""(module
  (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (memory (export "memory") 1) (data (i32.const 64) "fifo")
  (func (export "_start")
    (drop (call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 4) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16)))))""")
# Writes 64 KiB to stdout again and again, forever.
FLOOD = wasmtime.wat2wasm("""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 65536))
    (loop $more (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))) (br $more))))""")


@contextlib.contextmanager
def placed_server(
    engine: Engine, wasm: bytes, spec: RunSpec, limits: ServeLimits, guest_threads: bool
) -> Iterator[tuple[CgiServer, list[str]]]:
    """A live server whose guests run on guest threads (an on_guest_thread hook, as the shim's)
    or on their request's thread; and the names of the threads the hook ran on."""
    placed: list[str] = []
    hook = (lambda: placed.append(threading.current_thread().name)) if guest_threads else None
    server = CgiServer(("127.0.0.1", 0), engine, engine.load(wasm, name="guest.wasm"), spec, limits, on_guest_thread=hook)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server, placed
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("guest_threads", [False, True], ids=["request-thread", "guest-thread"])
def test_a_stuck_guest_is_answered_at_its_deadline_on_either_thread(
    engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture, guest_threads: bool
) -> None:
    os.mkfifo(tmp_path / "fifo")
    spec = RunSpec(preopens=[Preopen(tmp_path, "/")], timeout=0.3)
    with placed_server(engine, FIFO_READER, spec, ServeLimits(concurrency=1, queue_timeout=0.3), guest_threads) as (server, placed):
        began = time.monotonic()
        assert fetch(http.client.HTTPConnection(server.host, server.port, timeout=10), "GET", "/")[0] == 504
        assert time.monotonic() - began < 1.0
        assert "timed out after 0.3s; stuck in a host call" in caplog.text
        assert fetch(http.client.HTTPConnection(server.host, server.port, timeout=10), "GET", "/")[0] == 503  # its slot is still held
        writer = os.open(tmp_path / "fifo", os.O_WRONLY | os.O_NONBLOCK)  # the stuck open returns; the guest ends
        try:
            deadline = time.monotonic() + 5
            while (code := fetch(http.client.HTTPConnection(server.host, server.port, timeout=10), "GET", "/")[0]) == 503:
                assert time.monotonic() < deadline
        finally:
            os.close(writer)
        assert code == 200  # its slot came back; the next guest's open found the writer
        assert bool(placed) == guest_threads


@pytest.mark.parametrize("guest_threads", [False, True], ids=["request-thread", "guest-thread"])
def test_a_flooding_guest_is_stopped_at_the_cap_on_either_thread(
    engine: Engine, caplog: pytest.LogCaptureFixture, guest_threads: bool
) -> None:
    limits = ServeLimits(max_response=1 << 20)
    with placed_server(engine, FLOOD, RunSpec(timeout=30), limits, guest_threads) as (server, _):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        began = time.monotonic()
        assert fetch(conn, "GET", "/")[0] == 502
        assert time.monotonic() - began < 2  # not its 30 s timeout
        assert "stdout passed the 1048576-byte limit" in caplog.text
        assert fetch(conn, "GET", "/")[0] == 502  # a fresh pair of outputs: the sealed one is not reused


def test_outputs_are_reused_empty_and_guest_cpu_is_counted(engine: Engine) -> None:
    with placed_server(engine, HTTP, RunSpec(), ServeLimits(), guest_threads=False) as (server, _):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
        assert fetch(conn, "POST", "/", b"a longer first body")[2] == b"A LONGER FIRST BODY"
        assert fetch(conn, "POST", "/", b"short")[2] == b"SHORT"  # nothing left of the first response
        assert fetch(conn, "GET", "/")[2] == b""
        assert len(server._spare) == 1  # one pair served all three
        assert server.counters.guest_cpu_ns > 0


# -- the CGI mapping -----------------------------------------------------------------------------


def request(headers: list[tuple[str, str]], target: str = "/a%20b/c?x=1") -> cgi.Request:
    return cgi.Request("POST", target, headers, 5, ("10.0.0.1", 5555), ("127.0.0.1", 8080))


def test_environ_maps_request_to_cgi_variables() -> None:
    env = cgi.environ(
        request([("Content-Type", "text/plain"), ("Content-Length", "5"), ("Accept", "a"), ("Accept", "b"), ("X-Thing", "t")])
    )
    assert env["REQUEST_METHOD"] == "POST"
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["SCRIPT_NAME"]) == ("/a b/c", "x=1", "")
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("text/plain", "5")
    assert (env["HTTP_ACCEPT"], env["HTTP_X_THING"]) == ("a, b", "t")
    assert (env["REMOTE_ADDR"], env["SERVER_PORT"], env["GATEWAY_INTERFACE"]) == ("10.0.0.1", "8080", "CGI/1.1")
    assert "HTTP_CONTENT_LENGTH" not in env


def test_environ_drops_headers_that_could_pose_as_others() -> None:
    env = cgi.environ(request([("Proxy", "http://evil"), ("X_Forwarded_For", "spoof")]))
    assert "HTTP_PROXY" not in env and "HTTP_X_FORWARDED_FOR" not in env
    env = cgi.environ(request([("X.Path", "1"), ("Path-Info", "/x"), ("Content-Length", "9")]))
    assert {name for name in env if name.startswith("HTTP_")} == {"HTTP_PATH_INFO"}  # a client sets nothing else
    assert (env["PATH_INFO"], env["CONTENT_LENGTH"]) == ("/a b/c", "5")


def test_parse_response_status_headers_and_body() -> None:
    parsed = cgi.parse_response(b"Status: 404 Not Here\r\nContent-Type: text/html\r\nX-A: 1\r\nConnection: close\r\n\r\n<p>gone</p>")
    assert (parsed.status, parsed.reason, parsed.body) == (404, "Not Here", b"<p>gone</p>")
    assert parsed.headers == [("Content-Type", "text/html"), ("X-A", "1")]  # hop-by-hop dropped
    redirect = cgi.parse_response(b"Location: /elsewhere\n\n")
    assert (redirect.status, redirect.headers) == (302, [("Location", "/elsewhere"), ("Content-Type", "application/octet-stream")])
    plain = cgi.parse_response(b"just text\n\nwith a blank line")
    assert (plain.status, plain.body) == (200, b"just text\n\nwith a blank line")
    with pytest.raises(cgi.MalformedResponse):
        cgi.parse_response(b"Status: teapot\n\n")
    with pytest.raises(cgi.MalformedResponse):  # an interim status: the body would be read as the next response
        cgi.parse_response(b"Status: 100 Continue\n\n")
    # a control character anywhere in the block (CR, NUL): no header block, all body
    for output in (b"X-A: a\rSet-Cookie: b\n\nbody", b"X-A: a\x00b\n\nbody", b"Status: 200 OK\rX: y\r\n\r\nbody"):
        assert cgi.parse_response(output) == cgi.Response(200, "OK", [("Content-Type", "application/octet-stream")], output)


# -- worker processes (`wasm-oci serve --workers`) ------------------------------------------------

WASM_OCI = str(Path(sys.executable).with_name("wasm-oci"))
# Sleeps 1 s in a clock wait (poll_oneoff on the monotonic clock), then prints "slept".
SLEEPER = wasmtime.wat2wasm("""(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 256) "slept\\n")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 1000000000))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (i32.store (i32.const 192) (i32.const 256))
    (i32.store (i32.const 196) (i32.const 6))
    (drop (call $write (i32.const 1) (i32.const 192) (i32.const 1) (i32.const 200)))))""")
STARTUP = 60.0
"""Seconds a server may take to print its banner on a busy CI machine (a cold compile cache)."""


class Served:
    """A `wasm-oci serve` process and what its banner said."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port

    def workers(self) -> list[int]:
        return children(self.proc.pid)

    def stderr(self) -> str:
        """What it wrote after its banner (once it has ended)."""
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()


@pytest.fixture
def wasm_oci_serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    """wasm_oci_serve(wasm, *options) -> a live `wasm-oci serve` (with a private compile cache),
    started and its banner read; killed, with its workers, at the end."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(wasm: bytes, *options: str) -> Served:
        path = tmp_path / f"guest{len(procs)}.wasm"
        path.write_bytes(wasm)
        env = {**os.environ, "WASM_OCI_HOME": str(tmp_path / "home")}
        argv = [WASM_OCI, "serve", str(path), "--listen", "127.0.0.1:0", *options]
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, env=env)
        procs.append(proc)
        assert proc.stderr is not None
        readable, _, _ = select.select([proc.stderr], [], [], STARTUP)
        banner = proc.stderr.readline().decode() if readable else ""
        assert banner.startswith(f"Serving {path} on http://127.0.0.1:"), banner
        return Served(proc, int(banner.rsplit(":", 1)[1]))

    try:
        yield start
    finally:
        for proc in procs:
            pids = children(proc.pid)
            proc.kill()
            proc.wait(10)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def gone(pid: int, within: float) -> bool:
    """Whether process `pid` has ended (a zombie counts) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.02)
    return False


def test_worker_shares_of_the_guest_slots() -> None:
    assert workers.shares(5, 2) == [3, 2]
    assert workers.shares(2, 2) == [1, 1]
    with pytest.raises(ValueError, match="concurrency of at least 3"):
        workers.shares(2, 3)


def test_workers_serve_requests_in_parallel(wasm_oci_serve: Callable[..., Served]) -> None:
    """Two workers with one guest slot each: a request that arrives while the first worker's
    guest sleeps is taken by the second worker (not queued behind the first) and both answer
    after about one sleep, not two."""
    served = wasm_oci_serve(SLEEPER, "--workers", "2", "--concurrency", "2")
    assert len(served.workers()) == 2
    answers: list[tuple[int, bytes, float]] = []
    began = time.monotonic()

    def client() -> None:
        status, _, body = fetch(http.client.HTTPConnection("127.0.0.1", served.port, timeout=10), "GET", "/")
        answers.append((status, body, time.monotonic() - began))

    first = threading.Thread(target=client)
    first.start()
    time.sleep(0.3)  # the first worker's only slot is taken by now
    second = threading.Thread(target=client)
    second.start()
    first.join(10)
    second.join(10)
    assert [(status, body) for status, body, _ in answers] == [(200, b"slept\n")] * 2
    assert max(took for _, _, took in answers) < 1.9, answers  # one after the other: 2 s or more


def test_sigterm_stops_the_parent_and_its_workers(wasm_oci_serve: Callable[..., Served]) -> None:
    served = wasm_oci_serve(HTTP, "--workers", "2")
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    assert fetch(conn, "POST", "/", b"kept alive")[2] == b"KEPT ALIVE"  # an idle keep-alive connection: the drain closes it
    pids = served.workers()
    assert len(pids) == 2
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(15) == 0
    assert all(gone(pid, 5) for pid in pids)
    assert served.stderr() == ""


def test_workers_do_not_outlive_a_killed_parent(wasm_oci_serve: Callable[..., Served]) -> None:
    served = wasm_oci_serve(HTTP, "--workers", "2")
    pids = served.workers()
    assert len(pids) == 2
    served.proc.kill()
    served.proc.wait(10)
    assert all(gone(pid, 5) for pid in pids)  # PR_SET_PDEATHSIG


def test_a_worker_that_dies_stops_the_server_with_an_error(wasm_oci_serve: Callable[..., Served]) -> None:
    """No respawn: the other workers stop, and the server fails naming the worker that died."""
    served = wasm_oci_serve(HTTP, "--workers", "2")
    victim, survivor = served.workers()
    os.kill(victim, signal.SIGKILL)
    assert served.proc.wait(15) == 1
    assert gone(survivor, 5)
    stderr = served.stderr()
    assert f"worker 0 (pid {victim}) was killed by SIGKILL: stopping the others" in stderr
    assert stderr.endswith(f"wasm-oci: error: worker 0 (pid {victim}) was killed by SIGKILL: the server stopped\n")


def test_a_program_that_cannot_load_is_reported_once(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"\0asm\x01\0\0\0\xff\xff")  # the magic, then no valid section
    env = {**os.environ, "WASM_OCI_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [WASM_OCI, "serve", str(bad), "--listen", "127.0.0.1:0", "--workers", "2"], capture_output=True, env=env, timeout=60
    )
    assert done.returncode == 4
    assert done.stderr.decode().splitlines() == [
        "wasm-oci: error: bad.wasm: invalid WebAssembly module: malformed section id (at offset 0x8)"
    ]


def test_more_workers_than_guest_slots_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [WASM_OCI, "serve", str(EXAMPLES / "http" / "http.wasm"), "--workers", "3", "--concurrency", "2"], capture_output=True, timeout=60
    )
    assert (done.returncode, done.stderr.decode()) == (
        2,
        "wasm-oci: error: --workers 3 needs --concurrency 3 or more: each worker runs at least one guest at a time\n",
    )
