"""`serve` against hostile clients and guests: raw-socket clients that break HTTP/1.1's rules
(framing, limits, slowloris), guests that write without end, get stuck in a host call or try
to split the response, and a real `wasm-oci serve` process's memory under large bodies."""

from __future__ import annotations

import http.client
import io
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import wasmtime
from test_engine_serve import engine as engine  # noqa: PLC0414 - the module's Engine fixture, shared
from test_engine_serve import live_servers

from wasm_oci.engine import Engine, RunSpec
from wasm_oci.engine.serve import ServeLimits
from wasm_oci.engine.spec import Preopen

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HTTP = (EXAMPLES / "http" / "http.wasm").read_bytes()
HELLO = EXAMPLES / "hello" / "hello.wasm"
WASM_OCI = Path(sys.executable).with_name("wasm-oci")


def module(body: str) -> bytes:
    """A WASI preview 1 module from WAT, with `fd_write` and `path_open` imported."""
    return bytes(
        wasmtime.wat2wasm(
            '(module (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))'
            ' (import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))'
            f' (memory (export "memory") 2) {body})'
        )
    )


def writer(output: bytes) -> bytes:
    """Writes `output` to stdout once and exits 0."""
    data = "".join(f"\\{byte:02x}" for byte in output)
    return module(
        f'(data (i32.const 64) "{data}")'
        f' (func (export "_start") (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const {len(output)}))'
        " (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))"
    )


def flood(fd: int) -> bytes:
    """Writes 64 KiB to `fd` again and again, forever (failed writes included)."""
    return module(
        f'(func (export "_start") (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 65536))'
        f" (loop $more (drop (call $write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8))) (br $more)))"
    )


# Opens ./fifo for reading: stuck in the host call (no stop reaches it) until a writer opens it.
FIFO_READER = module(
    '(data (i32.const 64) "fifo") (func (export "_start")'
    " (drop (call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 4) (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 16))))"
)

Serve = Callable[..., tuple[str, int]]


@pytest.fixture
def serve(engine: Engine) -> Iterator[Serve]:
    """serve(wasm=HTTP, spec=RunSpec(timeout=10), **limits) -> the address of a live CgiServer."""
    with live_servers(engine) as start:

        def address(wasm: bytes = HTTP, spec: RunSpec = RunSpec(timeout=10), **limits: float) -> tuple[str, int]:
            server = start(wasm, spec, ServeLimits(**limits))  # type: ignore[arg-type]
            return server.host, server.port

        yield address


def exchange(address: tuple[str, int], *pieces: bytes, pause: float = 0.0, timeout: float = 5.0) -> bytes:
    """Send the pieces (`pause` seconds apart), then read until the server closes; what it sent back."""
    with socket.create_connection(address, timeout=timeout) as conn:
        for piece in pieces:
            try:
                conn.sendall(piece)
            except ConnectionError:  # refused before the client was done: its answer is what it read
                break
            time.sleep(pause)
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = conn.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
        return received


class _Replay(io.BytesIO):
    """What a server sent, for http.client to read one response after another."""

    def makefile(self, mode: str) -> _Replay:
        return self

    def close(self) -> None:  # each response closes its "connection": the next one reads on
        pass


def responses(received: bytes) -> list[tuple[int, http.client.HTTPMessage, bytes]]:
    """Every response in what a server sent, framed as a client frames them (one, unless split or pipelined)."""
    replay, found = _Replay(received), []
    while replay.tell() < len(received):
        response = http.client.HTTPResponse(replay)  # type: ignore[arg-type]
        response.begin()
        found.append((response.status, response.msg, response.read()))
    return found


def status(received: bytes) -> int:
    found = responses(received)
    assert len(found) == 1, received[:500]
    return found[0][0]


GOOD = b"Host: x\r\nConnection: close\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        # chunked framing
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n5;" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n" + b"X-T: t\r\n" * 5000, 431),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % (17 << 20), 413),
        # Content-Length and Transfer-Encoding: RFC 9112 6.3
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: abc\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: -1\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: +3\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: 3, 4\r\n\r\nabcd", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: gzip\r\n\r\nabc", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: 99999999999999999999\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: 16777217\r\n\r\n", 413),
        # request line
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS ClientHello
        (b"GET  / HTTP/1.1\r\n" + GOOD + b"\r\n", 400),
        (b"GET / HTTP/1.1 \r\n" + GOOD + b"\r\n", 400),
        (b"GET / HTTP/2.0\r\n" + GOOD + b"\r\n", 505),
        (b"BREW / HTTP/1.1\r\n" + GOOD + b"\r\n", 501),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + GOOD + b"\r\n", 414),
        (b"GET /a%00.png HTTP/1.1\r\n" + GOOD + b"\r\n", 400),
        (b"GET a/b HTTP/1.1\r\n" + GOOD + b"\r\n", 400),
        (b"GET / HTTP/1.1\n" + GOOD + b"\r\n", 400),  # a bare LF
        # header fields
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\n" + GOOD + b"Host: y\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"X-A : 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"X-A: 1\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"X-A: a\rInjected: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"X-A: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"X(A): 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"no colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"X-A: 1\nX-B: 2\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"".join(b"X-%d: 1\r\n" % n for n in range(101)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + GOOD + b"X-Big: " + b"a" * (40 << 10) + b"\r\n\r\n", 431),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: 1\r\nExpect: magic\r\n\r\nx", 417),
        # what is accepted
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 200),
        (b"POST / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: t\r\n\r\n", 200),
        (b"GET http://x/y?q HTTP/1.1\r\n" + GOOD + b"\r\n", 200),
        (b"\r\nGET / HTTP/1.0\r\n\r\n", 200),
    ],
)
def test_malformed_requests_are_refused_with_a_status(serve: Serve, request_bytes: bytes, code: int) -> None:
    response = exchange(serve(), request_bytes)
    assert status(response) == code
    if code != 200:
        assert b"\r\nConnection: close\r\n" in response


def test_accepted_forms_reach_the_guest_as_sent(serve: Serve) -> None:
    address = serve()
    chunked = exchange(
        address, b"PUT / HTTP/1.1\r\n" + GOOD + b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: t\r\n\r\n"
    )
    assert chunked.endswith(b"\r\n\r\nABCDE")
    absolute = exchange(address, b"GET http://x/y?q=1 HTTP/1.1\r\n" + GOOD + b"\r\n")
    assert b"\r\nX-Path: /y\r\n" in absolute and b"\r\nX-Query: q=1\r\n" in absolute


def test_pipelined_requests_on_one_connection(serve: Serve) -> None:
    one = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
    response = exchange(serve(), one + one + b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n")
    assert [(code, body) for code, _, body in responses(response)] == [(200, b"AB"), (200, b"AB"), (200, b"")]


def test_slowloris_head_and_body_get_408_at_their_deadline(serve: Serve) -> None:
    address = serve(header_timeout=0.5, body_timeout=0.5)
    started = time.monotonic()  # one byte every 0.1 s: a per-recv timeout would never fire
    head = exchange(address, *[bytes([byte]) for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100], pause=0.1)
    assert status(head) == 408
    assert time.monotonic() - started < 2
    started = time.monotonic()
    body = exchange(address, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", *[b"x"] * 50, pause=0.1)
    assert status(body) == 408
    assert time.monotonic() - started < 2


def test_idle_connection_is_closed(serve: Serve) -> None:
    address = serve(idle_timeout=0.3)
    started = time.monotonic()
    assert exchange(address) == b""  # never sent a request: closed without a word
    kept_alive = exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # after one request: closed when idle
    assert status(kept_alive) == 200
    assert time.monotonic() - started < 2


def test_clients_that_hang_up_leave_no_traceback(serve: Serve, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    address = serve(max_body=1000)
    for _ in range(20):
        with socket.create_connection(address, timeout=5) as conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
    for _ in range(5):
        with socket.create_connection(address, timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HT")  # gone in the middle of the next request
    assert status(exchange(address, b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n")) == 200  # the last: all are done
    assert "Traceback" not in capfd.readouterr().err
    assert [record for record in caplog.records if record.levelname != "DEBUG"] == []


def test_a_refused_client_still_reads_its_answer(serve: Serve) -> None:
    """A 413 on the declared length while the client goes on sending its 2 MiB: the server reads
    and drops the rest for a moment instead of resetting the connection under the answer."""
    conn = http.client.HTTPConnection(*serve(max_body=1 << 20), timeout=10)
    conn.request("POST", "/", body=b"x" * (2 << 20))
    assert conn.getresponse().status == 413


def test_bodies_wait_for_a_guest_slot_and_get_503_after_the_queue_timeout(serve: Serve, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    address = serve(FIFO_READER, RunSpec(preopens=[Preopen(tmp_path, "/")], timeout=5), concurrency=1, queue_timeout=0.3)
    holder = threading.Thread(target=exchange, args=(address, b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n"), kwargs={"timeout": 10})
    holder.start()
    time.sleep(0.2)  # the slot is taken
    # Expect: 100-continue is answered only with a slot: this client never gets to send its body
    waiting = exchange(address, b"POST / HTTP/1.1\r\n" + GOOD + b"Content-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    assert status(waiting) == 503
    assert b"100 Continue" not in waiting
    writer_end = os.open(tmp_path / "fifo", os.O_WRONLY)  # lets the guest go: its open returns, it exits
    try:
        holder.join(10)
        assert not holder.is_alive()
        assert status(exchange(address, b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n")) == 200
    finally:
        os.close(writer_end)


def test_a_guest_stuck_in_a_host_call_gets_504_on_time_and_keeps_its_slot(
    serve: Serve, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.mkfifo(tmp_path / "fifo")
    address = serve(FIFO_READER, RunSpec(preopens=[Preopen(tmp_path, "/")], timeout=0.3), concurrency=1, queue_timeout=0.3)
    started = time.monotonic()
    assert status(exchange(address, b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n")) == 504
    assert time.monotonic() - started < 1.0
    assert "stuck in a host call" in caplog.text
    assert status(exchange(address, b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n")) == 503  # its slot is still taken
    writer_end = os.open(tmp_path / "fifo", os.O_WRONLY | os.O_NONBLOCK)  # the stuck open returns; the guest ends
    try:
        deadline = time.monotonic() + 5
        while status(answer := exchange(address, b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n")) == 503 and time.monotonic() < deadline:
            pass
        assert status(answer) == 200
    finally:
        os.close(writer_end)


@pytest.mark.parametrize("fd", [1, 2], ids=["stdout", "stderr"])
def test_a_guest_that_writes_without_end_is_stopped_at_the_cap(serve: Serve, caplog: pytest.LogCaptureFixture, fd: int) -> None:
    address = serve(flood(fd), RunSpec(timeout=30), max_response=1 << 20)
    started = time.monotonic()
    assert status(exchange(address, b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n")) == 502
    assert time.monotonic() - started < 2  # not its 30 s timeout
    assert f"{'stdout' if fd == 1 else 'stderr'} passed the 1048576-byte limit" in caplog.text


@pytest.mark.parametrize(
    ("output", "code", "forbidden"),
    [
        (b"Status: 200 OK\r\nX-A: a\rSet-Cookie: evil=1\r\n\r\nbody", 200, "Set-Cookie"),  # a CR: no header block at all
        (b"Status: 200 OK\rSet-Cookie: evil=1\n\nbody", 200, "Set-Cookie"),
        (b"Content-Type: text/html\nX-A: a\x00b\n\nbody", 200, "X-A"),
        (b"Content-Type: text/html\nBad Name: x\n\nbody", 200, "Bad Name"),
        (b"Status: 100 Continue\n\nHTTP/1.1 200 OK\r\nSet-Cookie: evil=1\r\n\r\n", 502, "Set-Cookie"),
        (b"Status: 204 No Content\n\nHTTP/1.1 200 OK\r\nSet-Cookie: evil=1\r\n\r\n", 204, "Set-Cookie"),
        (b"Content-Length: 0\nTransfer-Encoding: chunked\n\nHTTP/1.1 200 OK\r\nSet-Cookie: evil=1\r\n\r\n", 200, "Set-Cookie"),
    ],
)
def test_a_guest_cannot_split_the_response(serve: Serve, output: bytes, code: int, forbidden: str) -> None:
    ask = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    received = exchange(serve(writer(output)), ask, ask + b"GET / HTTP/1.1\r\n" + GOOD + b"\r\n", pause=0.2)
    answers = responses(received)
    assert [answer[0] for answer in answers] == [code] * 3  # three asked, three answered: nothing smuggled in between
    assert all(forbidden not in headers for _, headers, _ in answers)


def test_cgi_environment_takes_only_http_variables_from_the_client(serve: Serve) -> None:
    """The example handler echoes X-Echo; the operator's HTTP_X_ECHO wins over a client's."""
    address = serve(HTTP, RunSpec(env={"HTTP_X_ECHO": "operator"}))
    response = exchange(address, b"GET / HTTP/1.1\r\n" + GOOD + b"X-Echo: client\r\n\r\n")
    assert b"\r\nX-Echo: operator\r\n" in response


def test_large_bodies_are_read_only_with_a_guest_slot() -> None:
    """40 clients send 15 MiB each to a `wasm-oci serve` with 2 guest slots: its peak memory grows
    by about 2 bodies' worth, not 40."""
    server = subprocess.Popen(
        [WASM_OCI, "serve", str(HELLO), "--listen", "127.0.0.1:0", "--concurrency", "2", "--workers", "1"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        banner = server.stderr.readline()
        port = int(banner.rsplit(":", 1)[1])
        body = b"x" * (15 << 20)
        codes: list[int] = []

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/", body=body)
            codes.append(conn.getresponse().status)

        client()  # warm: code, threads, the first guest
        before = _kib(server.pid, "VmHWM")
        clients = [threading.Thread(target=client) for _ in range(40)]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(30)
        grown = (_kib(server.pid, "VmHWM") - before) >> 10
        print(f"serve's peak RSS grew by {grown} MiB for 40 x 15 MiB bodies at concurrency 2")
        assert codes == [200] * 41
        assert grown < 150
    finally:
        server.terminate()
        server.wait(10)


def _kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match[1])
