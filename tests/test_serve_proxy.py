"""`wasm-oci serve` of wasi:http proxy components through the real CLI, with the componentize-py
app (tests/fixtures/proxy/app.py) and the wasm-tools guest (fixed.wat): responses streamed as
the guest writes them (chunked; close-delimited for HTTP/1.0), bodies both ways from empty to
several MiB, failures before and after the head, outgoing requests, HEAD; then the same requests
against `wasmtime serve` on the same components, and where the two differ on purpose.

Differences from `wasmtime serve` 49 (each asserted in test_differences_from_wasmtime_serve):
- a body the guest does not finish: we cut the connection (a reset); wasmtime ends the chunked
  body with its last chunk, as if it were whole (for HTTP/1.0 it closes: the same to a client).
  Theirs to fix (a truncated response that looks complete).
- the guest's trailers: we send them in the chunked trailer section; wasmtime (hyper) drops them
  unless the response announced them in a `Trailer` header. Neither is wrong (RFC 9110 6.5).
- the guest's timeout: we answer 504, wasmtime 500. Ours on purpose (as for CGI guests).
- the host's 500/504: ours has an empty body, wasmtime's a small HTML page. Either is fine.
- HEAD: wasmtime drops the body unread, so a guest writing one traps on its closed stream (it
  logs a trap); we read and drop it, so the guest ends as for GET. Ours on purpose.
- an HTTP/1.0 request without Host: wasmtime answers 500 (no authority); we serve it with none.
- outgoing requests: wasmtime lets the guest send them anywhere; serve refuses each
  (HTTP-request-denied) unless --allow-outbound names its host. Ours on purpose.
- the server's own headers (`server`, `date`, `connection`) and the order of header names.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services import proxy_components
from wasm_oci.engine import Engine, RunSpec
from wasm_oci.engine.proxy import ProxyHost
from wasm_oci.engine.serve import CgiServer, ServeLimits

WASM_OCI = Path(sys.executable).with_name("wasm-oci")
PATTERN = bytes(range(256)) * 256  # what the app's /big repeats
MIB = 1 << 20
STARTUP = 120.0
"""Seconds a server may take to print its banner (a cold compile cache compiles the ~20 MB app)."""


def pattern(size: int) -> bytes:
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WASM_OCI_HOME for the servers: private, but its compile cache is the one the proxy tests
    share (.cache/proxy-components/compiled), so the app is compiled once, not per server."""
    path = tmp_path_factory.mktemp("home")
    (path / "cache").mkdir()
    shared = proxy_components.CACHE / "compiled"
    shared.mkdir(parents=True, exist_ok=True)
    (path / "cache" / "compiled").symlink_to(shared)
    return path


@dataclass
class Served:
    """A `wasm-oci serve` process: its port, and the lines it logged after its banner."""

    proc: subprocess.Popen[bytes]
    port: int
    lines: list[str] = field(default_factory=list)

    def logged(self, text: str, within: float = 10.0) -> str:
        """The first log line with `text` (waiting up to `within` seconds for it)."""
        deadline = time.monotonic() + within
        while True:
            found = next((line for line in list(self.lines) if text in line), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {within}s: {self.lines[-10:]}")
            time.sleep(0.02)


@pytest.fixture(scope="module")
def serve(home: Path) -> Iterator[Callable[..., Served]]:
    """serve(wasm, *options) -> a live `wasm-oci serve WASM --listen 127.0.0.1:0 --workers 1
    OPTIONS`, its banner read and its log collected (one per wasm and options); all stopped at the
    end of the module."""
    started: dict[tuple[Path, tuple[str, ...]], Served] = {}

    def start(wasm: Path, *options: str) -> Served:
        if (wasm, options) in started:
            return started[wasm, options]
        argv = [str(WASM_OCI), "serve", str(wasm), "--listen", "127.0.0.1:0", "--workers", "1", *options]
        proc = subprocess.Popen(argv, stderr=subprocess.PIPE, env={**os.environ, "WASM_OCI_HOME": str(home)})
        assert proc.stderr is not None
        readable, _, _ = select.select([proc.stderr], [], [], STARTUP)
        banner = proc.stderr.readline().decode() if readable else ""
        if " on http://127.0.0.1:" not in banner:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"{argv} did not start within {STARTUP}s: {banner!r}")
        served = Served(proc, int(banner.rsplit(":", 1)[1]))
        started[wasm, options] = served
        stream = proc.stderr

        def collect() -> None:
            for line in stream:
                served.lines.append(line.decode("utf-8", "replace"))

        threading.Thread(target=collect, daemon=True).start()
        return served

    yield start
    for served in started.values():
        served.proc.kill()
        served.proc.wait(10)


@pytest.fixture(scope="module")
def app(serve: Callable[..., Served], app_wasm: Path) -> Served:
    return serve(app_wasm)


@pytest.fixture(scope="module")
def fixed(serve: Callable[..., Served], fixed_wasm: Path) -> Served:
    return serve(fixed_wasm)


Answer = tuple[int, list[tuple[str, str]], bytes]


def fetch(
    port: int | str,
    method: str,
    path: str,
    body: bytes | Iterator[bytes] | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> Answer:
    """One request (on `conn` if given, else on a connection of its own): status, headers, body."""
    mine = conn or (
        http.client.HTTPConnection(port, timeout=60) if isinstance(port, str) else http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    )
    try:
        mine.request(method, path, body=body, headers=headers or {})
        response = mine.getresponse()
        return response.status, [(name.lower(), value) for name, value in response.getheaders()], response.read()
    finally:
        if conn is None:
            mine.close()


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key == name), None)


def raw(port: int, request: bytes, wait: float = 30.0) -> tuple[bytes, str]:
    """Send `request` on a socket of its own and read until the server closes it: what came,
    and how it ended ("close", "reset", or "timeout" when it did not within `wait` seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(request)
        received = bytearray()
        deadline = time.monotonic() + wait
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = sock.recv(1 << 20)
            except ConnectionResetError:
                return bytes(received), "reset"
            except TimeoutError:
                return bytes(received), "timeout"
            if not data:
                return bytes(received), "close"
            received += data


def split(response: bytes) -> tuple[str, dict[str, str], bytes]:
    """A raw response: its status line, headers (names lowercased) and the bytes after them."""
    head, _, rest = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return lines[0], {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}, rest


def dechunk(data: bytes) -> tuple[bytes, list[str], bool]:
    """A chunked body: its content, its trailer lines, and whether it was complete."""
    body = bytearray()
    while True:
        line, crlf, data = data.partition(b"\r\n")
        if not crlf:
            return bytes(body), [], False
        size = int(line, 16)
        if size == 0:
            trailers, end, _ = data.partition(b"\r\n\r\n")
            if data.startswith(b"\r\n"):
                return bytes(body), [], True
            return bytes(body), trailers.decode().split("\r\n"), bool(end)
        if len(data) < size + 2:
            return bytes(body) + data[:size], [], False
        body += data[:size]
        data = data[size + 2 :]


# -- through `wasm-oci serve` --------------------------------------------------------------------


def test_get_is_streamed_chunked_with_the_guest_headers(app: Served, fixed: Served) -> None:
    status, headers, body = fetch(app.port, "GET", "/")
    assert (status, body, header(headers, "content-type")) == (200, b"hello", "text/plain")
    assert header(headers, "transfer-encoding") == "chunked" and header(headers, "content-length") is None
    status, headers, body = fetch(fixed.port, "GET", "/anything?x=1")
    assert (status, body, header(headers, "x-guest")) == (200, b"hello from wat\n", "wat")


@pytest.mark.parametrize("size", [0, 1, 65_536 + 3, 3 * MIB + 7, 9 * MIB])
def test_post_echo_bodies_and_headers_both_ways(app: Served, size: int) -> None:
    data = pattern(size)
    sent = {"X-One": "1", "X-Multi": "a, b", "Accept": "*/*"}
    status, headers, body = fetch(app.port, "POST", "/echo", data, sent)
    assert status == 200 and len(body) == size and body == data
    assert [(name, value) for name, value in headers if name.startswith(("x-", "content-type"))] == [
        ("content-type", "application/octet-stream"),
        ("x-one", "1"),
        ("x-multi", "a, b"),
    ]


def test_a_chunked_request_body(app: Served) -> None:
    data = pattern(2 * MIB + 5)
    chunks = iter([data[at : at + 100_000] for at in range(0, len(data), 100_000)])  # http.client sends an iterator chunked
    status, _, body = fetch(app.port, "POST", "/echo", chunks)
    assert (status, body == data) == (200, True)


@pytest.mark.parametrize("size", [0, 3 * MIB + 7])
def test_the_fixed_guest_with_bodies_it_does_not_read(fixed: Served, size: int) -> None:
    assert fetch(fixed.port, "POST", "/", pattern(size))[::2] == (200, b"hello from wat\n")


def test_a_streamed_response_of_several_mib(app: Served) -> None:
    size = 7 * MIB + 11
    response, end = raw(app.port, f"GET /big?n={size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status, headers, rest = split(response)
    body, trailers, complete = dechunk(rest)
    assert (status, headers["transfer-encoding"], "content-length" in headers, end) == ("HTTP/1.1 200 OK", "chunked", False, "close")
    assert (complete, trailers, len(body), body == pattern(size)) == (True, [], size, True)


def test_the_head_goes_out_before_the_guest_finishes(serve: Callable[..., Served], app_wasm: Path) -> None:
    """With a 1 s timeout, a client that reads the head of a long body and then stops reading:
    the guest waits for it (back-pressure) until its deadline, then is stopped. The head came
    first (200, not the 504 of a buffered answer) and the body is cut, never ended as if whole."""
    served = serve(app_wasm, "--timeout", "1")
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    conn.request("GET", f"/big?n={60 * MIB}")
    response = conn.getresponse()
    assert (response.status, response.getheader("transfer-encoding")) == (200, "chunked")
    first = response.read1(65_536)
    assert first == PATTERN[: len(first)]
    time.sleep(2)  # the guest is blocked by the window, then stopped at its deadline
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        response.read()
    conn.close()
    assert "the connection was cut after" in served.logged(f"GET /big?n={60 * MIB} -> 200: the guest did not finish its response body")
    assert fetch(served.port, "GET", "/")[::2] == (200, b"hello")  # and it carries on


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_a_trap_halfway_through_the_body_cuts_the_connection(app: Served, version: str) -> None:
    response, end = raw(app.port, f"GET /abort HTTP/{version}\r\nHost: x\r\n\r\n".encode())
    status, headers, rest = split(response)
    assert (status, end) == ("HTTP/1.1 200 OK", "reset")
    if version == "1.1":
        assert headers["transfer-encoding"] == "chunked" and dechunk(rest) == (b"partial", [], False)
    else:  # close-delimited: only the reset tells the client the body is not whole
        assert ("transfer-encoding" in headers, "content-length" in headers, rest) == (False, False, b"partial")
    assert "the guest fails halfway through its body" in app.logged("GET /abort -> 200: the guest did not finish its response body")


def test_not_found_from_the_guest(app: Served) -> None:
    assert fetch(app.port, "GET", "/missing?q=1")[::2] == (404, b"not found: /missing")


def test_a_trap_is_a_bare_500_and_the_server_carries_on(app: Served) -> None:
    status, headers, body = fetch(app.port, "GET", "/trap")
    assert (status, body, header(headers, "content-length")) == (500, b"", "0")
    assert "the guest fails on purpose" in app.logged("GET /trap -> 500: wasm trap")
    assert fetch(app.port, "GET", "/")[::2] == (200, b"hello")


def test_the_timeout_is_a_504(serve: Callable[..., Served], app_wasm: Path) -> None:
    served = serve(app_wasm, "--timeout", "1")
    began = time.monotonic()
    assert fetch(served.port, "GET", "/sleep?s=30")[::2] == (504, b"")
    assert time.monotonic() - began < 5
    served.logged("GET /sleep?s=30 -> 504: timed out after 1.0s")


class _Origin(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        payload = b"from the origin"
        self.send_response(203)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """A loopback HTTP server of the test's own; its authority."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_outgoing_requests_refused_by_default_and_allowed_by_option(
    app: Served, serve: Callable[..., Served], app_wasm: Path, origin: str
) -> None:
    assert fetch(app.port, "GET", f"/fetch?url=http://{origin}/data")[::2] == (502, b"HttpRequestDenied")
    allowed = serve(app_wasm, "--allow-outbound", origin)
    assert fetch(allowed.port, "GET", f"/fetch?url=http://{origin}/data")[::2] == (200, b"203 from the origin")
    assert fetch(allowed.port, "GET", "/fetch?url=http://127.0.0.1:1/")[::2] == (502, b"HttpRequestDenied")  # another port


def test_head_gets_no_body_and_the_connection_goes_on(app: Served, fixed: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    status, headers, body = fetch(app.port, "HEAD", "/big?n=300000", conn=conn)
    assert (status, body, header(headers, "transfer-encoding"), header(headers, "content-length")) == (200, b"", None, None)
    assert fetch(app.port, "GET", "/", conn=conn)[::2] == (200, b"hello")  # the same connection: no body was left in it
    conn.close()
    response, end = raw(fixed.port, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status_line, fields, rest = split(response)
    assert (status_line, fields["x-guest"], rest, end) == ("HTTP/1.1 200 OK", "wat", b"", "close")


def test_an_http_1_0_client_gets_a_close_delimited_body(app: Served) -> None:
    for keep_alive in ("", "Connection: keep-alive\r\n"):
        response, end = raw(app.port, f"GET /big?n=100000 HTTP/1.0\r\nHost: x\r\n{keep_alive}\r\n".encode())
        status, headers, body = split(response)
        assert (status, headers.get("connection"), "transfer-encoding" in headers, "content-length" in headers) == (
            "HTTP/1.1 200 OK",
            "close",
            False,
            False,
        )
        assert (end, body == pattern(100_000)) == ("close", True)
    response, end = raw(app.port, b"GET / HTTP/1.0\r\n\r\n")  # no Host: the guest sees no authority
    assert (split(response)[0], split(response)[2], end) == ("HTTP/1.1 200 OK", b"hello", "close")


def test_trailers_go_in_the_trailer_section(app: Served) -> None:
    response, _ = raw(app.port, b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
    status, headers, rest = split(response)
    assert (status, headers["transfer-encoding"], dechunk(rest)) == (
        "HTTP/1.1 200 OK",
        "chunked",
        (b"with trailers", ["x-checksum: abc"], True),
    )
    # http.client reads past them
    assert fetch(app.port, "GET", "/trailers")[::2] == (200, b"with trailers")


def test_a_body_past_max_response_is_cut(serve: Callable[..., Served], app_wasm: Path) -> None:
    served = serve(app_wasm, "--max-response", "1M")
    response, end = raw(served.port, b"GET /big?n=2000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, rest = split(response)
    body, _, complete = dechunk(rest)
    assert (status, end, complete) == ("HTTP/1.1 200 OK", "reset", False)
    assert len(body) <= MIB
    served.logged("GET /big?n=2000000 -> 200: the response body passed the 1048576-byte limit; the connection was cut")
    assert fetch(served.port, "GET", "/big?n=1000000")[::2] == (200, pattern(1_000_000))


# -- in process: what the CLI does not show ------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(cache_dir=proxy_components.CACHE / "compiled")


@contextlib.contextmanager
def in_process(engine: Engine, wasm: Path, limits: ServeLimits) -> Iterator[tuple[CgiServer, list[str], list[str]]]:
    """A CgiServer serving `wasm` as a proxy: it, its access log and its error log."""
    access: list[str] = []
    errors: list[str] = []
    host = ProxyHost(engine, wasm.read_bytes(), wasm.name)
    server = CgiServer(("127.0.0.1", 0), engine, host, RunSpec(timeout=30), limits, access_log=access.append, error_log=errors.append)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server, access, errors
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not so within {within}s")
        time.sleep(0.01)


def test_counters_and_access_log_count_the_body_bytes_sent(engine: Engine, app_wasm: Path) -> None:
    with in_process(engine, app_wasm, ServeLimits(max_response=MIB)) as (server, access, errors):
        assert fetch(server.port, "GET", "/big?n=300000")[::2] == (200, pattern(300_000))
        assert fetch(server.port, "HEAD", "/big?n=300000")[::2] == (200, b"")
        assert fetch(server.port, "POST", "/echo", b"x" * 1000)[::2] == (200, b"x" * 1000)
        assert raw(server.port, b"GET /big?n=2000000 HTTP/1.1\r\nHost: x\r\n\r\n")[1] == "reset"
        wait_for(lambda: server.counters.requests == 4)
        counters = server.counters
        assert (counters.failed, counters.bytes_in) == (0, 1000)
        cut = counters.bytes_out - 300_000 - 1000  # what went out of the cut body
        assert 0 < cut <= MIB, counters
        # logged once the guest's run ends: the HEAD's (its body read and dropped) may come after the POST's
        assert sorted(re.sub(r" [0-9.]+ms$", "", line) for line in access) == [
            f'127.0.0.1 "GET /big?n=2000000 HTTP/1.1" 200 {cut}',
            '127.0.0.1 "GET /big?n=300000 HTTP/1.1" 200 300000',
            '127.0.0.1 "HEAD /big?n=300000 HTTP/1.1" 200 0',
            '127.0.0.1 "POST /echo HTTP/1.1" 200 1000',
        ]
        assert errors == [
            f"GET /big?n=2000000 -> 200: the response body passed the {MIB}-byte limit; the connection was cut after {cut} bytes of body"
        ]


def test_the_slot_is_held_until_the_guest_is_done(engine: Engine, app_wasm: Path) -> None:
    """One guest slot: while a client stalls on a streamed body, its guest still runs (waiting
    for the client) and keeps the slot; the next request waits for it, then gets a 503."""
    with in_process(engine, app_wasm, ServeLimits(concurrency=1, queue_timeout=0.5)) as (server, _, _):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("GET", f"/big?n={20 * MIB}")
        stalled = conn.getresponse()
        first = stalled.read1(1000)
        assert stalled.status == 200 and first
        assert fetch(server.port, "GET", "/")[0] == 503
        assert len(first) + len(stalled.read()) == 20 * MIB
        conn.close()
        wait_for(lambda: server._busy == 0)
        assert fetch(server.port, "GET", "/")[::2] == (200, b"hello")


# -- against `wasmtime serve` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def wasmtime(app_wasm: Path, fixed_wasm: Path) -> Iterator[dict[str, str]]:
    """`wasmtime serve -Scli` on each guest (and on the app with a 1 s timeout): their authorities."""
    started: list[subprocess.Popen[str]] = []
    authorities: dict[str, str] = {}
    try:
        for name, wasm, flags in (("app", app_wasm, ()), ("fixed", fixed_wasm, ()), ("app-timeout", app_wasm, ("-Wtimeout=1s",))):
            process, authorities[name] = proxy_components.wasmtime_serve(wasm, "-Scli", *flags)
            started.append(process)
        yield authorities
    except proxy_components.BuildUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    finally:
        for process in started:
            process.kill()
            process.wait(10)


SERVERS_OWN = {"server", "date", "connection", "transfer-encoding", "content-length"}
"""Headers each server sets itself (framing, its name, the time), not the guest's."""


def guest_part(answer: Answer, authority: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """What the guest answered: the status, its own headers (in order), its body with the
    server's authority replaced (/request shows it)."""
    status, headers, body = answer
    return status, [(name, value) for name, value in headers if name not in SERVERS_OWN], body.replace(authority.encode(), b"AUTHORITY")


REQUESTS = [
    ("app", "GET", "/", b""),
    ("app", "GET", "/missing?q=1", b""),
    ("app", "GET", "/request?a=b&c=%20", b""),
    ("app", "GET", "/fields", b""),
    ("app", "GET", "/trailers", b""),
    ("app", "GET", f"/big?n={5 * MIB + 3}", b""),
    ("app", "POST", "/echo", b""),
    ("app", "POST", "/echo", pattern(100_000)),
    ("app", "POST", "/echo", pattern(4 * MIB + 1)),
    ("app", "PUT", "/request", b"body"),
    ("fixed", "GET", "/", b""),
    # a body the guest never reads: small enough for the socket buffers, since `wasmtime serve`
    # may answer and close before a larger one is sent (the client then sees EPIPE, by chance)
    ("fixed", "POST", "/x", pattern(64 * 1024)),
]


@pytest.mark.parametrize(("guest", "method", "path", "payload"), REQUESTS, ids=[f"{g}-{m}-{p[:20]}-{len(b)}" for g, m, p, b in REQUESTS])
def test_answers_match_wasmtime_serve(
    app: Served, fixed: Served, wasmtime: dict[str, str], guest: str, method: str, path: str, payload: bytes
) -> None:
    ours_port = {"app": app.port, "fixed": fixed.port}[guest]
    theirs = wasmtime[guest]
    sent = {"X-Compare": "yes", "User-Agent": "test", "Accept": "*/*"}
    ours = guest_part(fetch(ours_port, method, path, payload or None, sent), f"127.0.0.1:{ours_port}")
    reference = guest_part(fetch(theirs, method, path, payload or None, sent), theirs)
    if path.startswith("/request"):  # hyper may list the request's headers in another order than they came
        ours, reference = ((status, headers, b"\n".join(sorted(body.split(b"\n")))) for status, headers, body in (ours, reference))
    assert ours == reference


@pytest.mark.parametrize("path", ["/trap", "/noresponse"])
def test_failures_match_wasmtime_serve(app: Served, wasmtime: dict[str, str], path: str) -> None:
    assert fetch(app.port, "GET", path)[0] == fetch(wasmtime["app"], "GET", path)[0] == 500


def test_outgoing_requests_match_wasmtime_serve_once_allowed(
    app: Served, serve: Callable[..., Served], app_wasm: Path, wasmtime: dict[str, str], origin: str
) -> None:
    """wasmtime serve lets a guest send requests anywhere; serve only where --allow-outbound says."""
    path = f"/fetch?url=http://{origin}/data"
    assert fetch(wasmtime["app"], "GET", path)[::2] == (200, b"203 from the origin")
    assert fetch(app.port, "GET", path)[::2] == (502, b"HttpRequestDenied")
    allowed = serve(app_wasm, "--allow-outbound", origin)
    assert fetch(allowed.port, "GET", path)[::2] == (200, b"203 from the origin")


def test_differences_from_wasmtime_serve(app: Served, serve: Callable[..., Served], app_wasm: Path, wasmtime: dict[str, str]) -> None:
    """What the module docstring lists, as each server answers it."""
    port = int(wasmtime["app"].rsplit(":", 1)[1])
    # An unfinished body: cut by us, ended as if whole by wasmtime.
    theirs, end = raw(port, b"GET /abort HTTP/1.1\r\nHost: x\r\n\r\n", wait=3)
    assert (dechunk(split(theirs)[2]), end) == ((b"partial", [], True), "timeout")  # complete, and the connection kept
    assert raw(app.port, b"GET /abort HTTP/1.1\r\nHost: x\r\n\r\n")[1] == "reset"
    # Trailers: sent by us, dropped by wasmtime.
    request = b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n"
    assert dechunk(split(raw(port, request)[0])[2]) == (b"with trailers", [], True)
    assert dechunk(split(raw(app.port, request)[0])[2]) == (b"with trailers", ["x-checksum: abc"], True)
    # The timeout: 504 from us, 500 from wasmtime; the host's 500 pages.
    timed = serve(app_wasm, "--timeout", "1")
    assert fetch(timed.port, "GET", "/sleep?s=30")[0] == 504
    assert fetch(wasmtime["app-timeout"], "GET", "/sleep?s=30")[0] == 500
    ours, reference = fetch(app.port, "GET", "/trap"), fetch(wasmtime["app"], "GET", "/trap")
    assert (ours[2], reference[2].startswith(b"<!doctype html>")) == (b"", True)
    # HTTP/1.0 without a Host: served by us, refused by wasmtime.
    assert split(raw(port, b"GET / HTTP/1.0\r\n\r\n")[0])[0] == "HTTP/1.0 500 Internal Server Error"
    assert split(raw(app.port, b"GET / HTTP/1.0\r\n\r\n")[0])[::2] == ("HTTP/1.1 200 OK", b"hello")
