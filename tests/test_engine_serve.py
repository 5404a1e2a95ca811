"""The CGI HTTP trigger with real guests: the example handler, traps, timeouts, concurrency;
and the CGI mapping itself."""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_engine import cli_component

from wasm_oci.engine import Engine, RunSpec, cgi
from wasm_oci.engine.serve import CgiServer, ServeLimits

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
