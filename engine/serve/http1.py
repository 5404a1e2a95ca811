"""HTTP/1.1 connections for `wasm-oci serve`: a thread per connection, requests parsed
strictly, responses framed, and a proxy's body streamed as its guest writes it.

HTTP/1.1 is parsed here rather than by http.server, which accepts HTTP/0.9, obs-folded and
malformed fields, signed or conflicting Content-Lengths, and has no bound on how long a
client may take to send a request (RFC 9112's framing rules are applied strictly: a message
whose length two parsers could read differently is refused, never guessed).
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import io
import os
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wasm_oci import __version__
from wasm_oci.engine import cgi
from wasm_oci.engine.serve.watch import fd_path, memfd

if TYPE_CHECKING:
    from wasm_oci.engine.proxy import Response as ProxyResponse
    from wasm_oci.engine.serve.server import CgiServer

SERVER = f"wasm-oci/{__version__}"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_LINGER = 1.0
"""Seconds a refused client may go on sending what was left unread before the connection
closes (closing with unread data resets it, and the client might never read the refusal)."""
_CHUNK_LINE = 4096
_IN_MEMORY = 64 << 10
"""Bodies up to this size go to the guest as bytes; larger and chunked ones are spooled to a
memfd, 64 KiB at a time, that Wasmtime reads: a body-sized allocation here would, once freed,
stay in glibc's per-thread arenas (measured: +850 MiB of RSS after 40 bodies of 15 MiB)."""

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
_NAME = re.compile(_TOKEN)
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_LENGTH = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[\t\x20-\x7e\x80-\xff]*)?")
_ABSOLUTE = re.compile(r"https?://[^/?#]*(.*)", re.IGNORECASE)


@dataclass(frozen=True)
class Streamed(cgi.Response):
    """A wasi:http proxy's response whose body its guest is still writing (`body` is empty):
    `answer` is the host's (its body an iterator of chunks, its trailers once that ends, its
    run); `finish` gives back what the run held (the guest slot, the request body) once it ended."""

    answer: ProxyResponse
    finish: Callable[[], None]


_NOT_TRAILERS = {*cgi.HOP_BY_HOP, "authorization", "cache-control", "content-encoding", "content-range", "content-type", "host"}
_NOT_TRAILERS |= {"max-forwards", "set-cookie"}
"""Fields a trailer section may not carry (RFC 9110 6.5.1: framing, routing, authentication,
what the recipient must see before the content; hyper's list)."""


def _trailer_section(trailers: list[tuple[str, bytes]] | None) -> bytes:
    """A guest's trailers as the lines of a chunked body's trailer section (the host checked
    their names and values as it does headers; those no trailer may carry are left out)."""
    return b"".join(name.encode("ascii") + b": " + value + b"\r\n" for name, value in trailers or () if name.lower() not in _NOT_TRAILERS)


def stderr_of(stderr: bytes) -> str:
    """The start of a guest's stderr, for a line of the error log."""
    text = stderr[:2048].decode("utf-8", "replace").strip()
    return f"; guest stderr: {text!r}" if text else ""


def plain(code: HTTPStatus) -> cgi.Response:
    return cgi.Response(code, code.phrase, [("Content-Type", "text/plain; charset=utf-8")], f"{code} {code.phrase}\n".encode())


class _Refused(Exception):
    """A request answered with a bare 4xx/5xx status before any guest ran; the connection closes."""

    def __init__(self, code: HTTPStatus) -> None:
        super().__init__(code.phrase)
        self.code = code


class _Gone(Exception):
    """The client closed its side in the middle of a request: nobody to answer."""


@dataclass(frozen=True)
class _Head:
    method: str
    target: str
    version: str
    fields: list[tuple[str, str]]
    length: int
    """The body's Content-Length (0 when chunked)."""
    chunked: bool
    close: bool
    expect_continue: bool


class _Timed(io.RawIOBase):
    """A socket's reads against one deadline for a whole phase (an idle wait, a request head, a
    body), not a timeout per recv: a client trickling a byte at a time would restart that forever."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = 0.0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.sock.settimeout(left)
        return self.sock.recv_into(buffer)


class Handler(socketserver.BaseRequestHandler):
    server: CgiServer
    request: socket.socket

    def setup(self) -> None:
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)  # no Nagle + delayed-ACK stall on small responses
        self.clock = _Timed(self.request)
        self.rfile = io.BufferedReader(self.clock, 64 << 10)
        self.method = self.version = self.target = ""
        self.received, self.began = 0, 0.0
        if self.server.proxy is not None and self.server.on_guest_thread is not None:
            self.server.on_guest_thread()  # a proxy's guests run on their connection's thread

    def handle(self) -> None:
        try:
            while self._one():
                pass
        except (_Gone, ConnectionError, TimeoutError):  # the client went away or stopped reading: nobody to tell
            pass
        finally:
            self.server.done(self.request, closing=True)

    def _one(self) -> bool:
        """Serve one request; whether the connection stays open for the next."""
        limits = self.server.limits
        self.method = self.version = self.target = ""
        self.received = 0
        if not self.server.idle(self.request, between_requests=True):
            return False
        self.clock.deadline = time.monotonic() + limits.idle_timeout
        try:
            if not self.rfile.peek(1):
                return False
        except (TimeoutError, OSError):  # OSError: a drain shut the idle connection down
            return False
        self.server.idle(self.request, between_requests=False)
        self.began = time.monotonic()
        self.clock.deadline = self.began + limits.header_timeout
        try:
            head = self._head()
            self.method, self.version, self.target = head.method, head.version, head.target
            slot = self.server.slot()
            if slot is None:
                self.server.error_log(f"{head.method} {head.target} -> 503: no guest slot came free within {limits.queue_timeout}s")
                raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE)
            try:  # the body is read only now: at most `concurrency` bodies are in memory
                if head.expect_continue:
                    self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.clock.deadline = time.monotonic() + limits.body_timeout
                with self._body(head) as (body, length):
                    self.received = length
                    request = cgi.Request(
                        method=head.method,
                        target=head.target,
                        headers=head.fields,
                        body_length=length,
                        client=self.client_address[:2],
                        server=(self.server.host, self.server.port),
                        protocol=head.version,
                    )
                    response = self.server.respond(request, body, slot, rescue=self._rescue)
            finally:
                slot.release()
            if response is None:  # answered from another thread: its guest got stuck in a host call
                return False
        except _Refused as exc:
            self._send(plain(exc.code), close=True)
            self._linger()
            return False
        except TimeoutError:
            self._send(plain(HTTPStatus.REQUEST_TIMEOUT), close=True)
            return False
        return self._send(response, close=head.close or self.server.draining)

    def _head(self) -> _Head:
        limits = self.server.limits
        line = self._line(limits.max_request_line, HTTPStatus.REQUEST_URI_TOO_LONG)
        if not line:  # RFC 9112 2.2: one empty line before a request is tolerated
            line = self._line(limits.max_request_line, HTTPStatus.REQUEST_URI_TOO_LONG)
        match = _REQUEST_LINE.fullmatch(line)
        if match is None:  # HTTP/0.9 (no version), extra spaces, controls, garbage
            raise _Refused(HTTPStatus.BAD_REQUEST)
        if match[3] != b"1":
            raise _Refused(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
        method = match[1].decode()
        if method not in METHODS:
            raise _Refused(HTTPStatus.NOT_IMPLEMENTED)
        version = "HTTP/1.0" if match[4] == b"0" else "HTTP/1.1"
        fields = self._fields()
        return _framed(method, _origin_form(method, match[2].decode()), version, fields, limits.max_body)

    def _fields(self) -> list[tuple[str, str]]:
        """A header (or trailer) section, up to the empty line that ends it."""
        limits = self.server.limits
        fields: list[tuple[str, str]] = []
        budget = limits.max_header_bytes
        while True:
            if budget < 2:
                raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            line = self._line(budget, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            if not line:
                return fields
            budget -= len(line) + 2
            if len(fields) == limits.max_headers:
                raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            name, colon, value = line.partition(b":")
            value = value.strip(b" \t")
            # no space before the colon, no obs-fold, no CR, LF, NUL or other control in a value
            if not colon or not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
                raise _Refused(HTTPStatus.BAD_REQUEST)
            fields.append((name.decode("ascii"), value.decode("latin-1")))

    def _line(self, limit: int, too_long: HTTPStatus) -> bytes:
        """A line ending in CRLF (a bare LF or CR is refused), at most `limit` bytes with it."""
        line = self.rfile.readline(limit)
        if line.endswith(b"\r\n"):
            return line[:-2]
        if line.endswith(b"\n"):
            raise _Refused(HTTPStatus.BAD_REQUEST)
        if len(line) == limit:
            raise _Refused(too_long)
        raise _Gone

    @contextlib.contextmanager
    def _body(self, head: _Head) -> Iterator[tuple[bytes | Path, int]]:
        """The request body for the guest's stdin, and its length."""
        if not head.chunked and head.length <= _IN_MEMORY:
            yield self._read(head.length), head.length
            return
        with memfd("stdin") as spool:
            yield fd_path(spool), self._chunked(spool) if head.chunked else self._spool(spool, head.length)

    def _read(self, size: int) -> bytes:
        data = self.rfile.read(size) if size else b""
        if len(data) != size:
            raise _Gone
        return data

    def _spool(self, spool: int, size: int) -> int:
        left = size
        while left:
            data = self.rfile.read1(min(left, 64 << 10))
            if not data:
                raise _Gone
            os.write(spool, data)
            left -= len(data)
        return size

    def _chunked(self, spool: int) -> int:
        limit = self.server.limits.max_body
        total = 0
        while True:
            match = _CHUNK_SIZE.fullmatch(self._line(_CHUNK_LINE, HTTPStatus.BAD_REQUEST))
            if match is None:  # a sign, 0x, no digits, a control in an extension
                raise _Refused(HTTPStatus.BAD_REQUEST)
            size = int(match[1], 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            self._spool(spool, size)
            if self._read(2) != b"\r\n":
                raise _Refused(HTTPStatus.BAD_REQUEST)
        self._fields()  # trailers: bounded as headers are, and not passed on
        return total

    def _send(self, response: cgi.Response, close: bool) -> bool:
        """Send `response`; whether the connection stays open for the next request."""
        if isinstance(response, Streamed):
            return self._stream(response, close)
        body = response.body
        framing = []
        if response.status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            body = b""  # they end at their header section: a body would be read as the next response
        else:
            framing.append(f"Content-Length: {len(body)}")
        head = self._head_block(response, framing, close)
        if self.method == "HEAD":
            body = b""
        self.server.count(response.status, self.received, len(body))
        if self.server.access_log is not None:
            self._log(response.status, len(body))
        if len(body) <= 64 << 10:
            self._write(head + body)
        else:
            self._write(head)
            self._write(body)
        self.server.done(self.request, closing=close)
        return not close

    def _head_block(self, response: cgi.Response, framing: list[str], close: bool) -> bytes:
        """The status line and header section: the response's headers, then `framing` (how the body is delimited)."""
        lines = [f"HTTP/1.1 {response.status} {response.reason}", f"Server: {SERVER}", f"Date: {_date(int(time.time()))}"]
        lines += [f"{name}: {value}" for name, value in response.headers]
        lines += framing
        if close:
            lines.append("Connection: close")
        elif self.version == "HTTP/1.0":  # it asked to keep the connection; without this it would not know it may
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _stream(self, response: Streamed, close: bool) -> bool:
        """Send a proxy's response while its guest writes the body: the head at once, each chunk
        as it comes; chunked to an HTTP/1.1 client (with the guest's trailers, if it set any, in
        the trailer section), ended by the connection's close to an HTTP/1.0 one; no body at all
        for HEAD, 204 and 304 (what the guest writes is read and dropped, so that its run ends as
        it would for GET). The guest's writes wait while the client is behind (Limits.window);
        each send waits at most idle_timeout for the client to read. A body the guest does not
        finish (BodyAborted), or one past max_response, cuts the connection with a reset: the
        client sees an error, never a short body that looks whole. Once the guest's run has
        ended its slot and the request body are given back; whether the connection stays open."""
        from wasm_oci.engine.proxy import BodyAborted

        server, answer = self.server, response.answer
        cap = server.limits.max_response
        bodiless = self.method == "HEAD" or response.status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED)
        chunked = not bodiless and self.version == "HTTP/1.1"
        close = close or not (bodiless or chunked)
        chunks = iter((answer.body,)) if isinstance(answer.body, bytes) else answer.body
        sent = written = 0
        cut = ""
        """Why the body stopped short ("" while it has not)."""
        complete = False
        try:
            self._write(self._head_block(response, ["Transfer-Encoding: chunked"] if chunked else [], close))
            try:
                for chunk in chunks:
                    written += len(chunk)
                    if written > cap:
                        cut = f"the response body passed the {cap}-byte limit"
                        break
                    if not bodiless:
                        self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                        sent += len(chunk)
                else:
                    if chunked:
                        self._write(b"0\r\n" + _trailer_section(answer.trailers) + b"\r\n")
                    complete = True
            except BodyAborted as exc:
                cut = f"the guest did not finish its response body ({exc})"
        finally:
            if not complete:  # the guest is stopped: its body has nowhere to go
                answer.close()
            if isinstance(chunks, Generator):
                chunks.close()
            server.count(response.status, self.received, sent)
            if server.access_log is not None:
                self._log(response.status, sent)
            self._end_run(response, cut, bodiless, sent)
        if cut and not bodiless:
            self._reset()
            close = True
        server.done(self.request, closing=close)
        return not close

    def _end_run(self, response: Streamed, cut: str, bodiless: bool, sent: int) -> None:
        """Wait for the guest's run to end (within its timeout), log how it failed if it did,
        then give back what it held; a run still going then (stuck in a host call) keeps them
        until it ends, on a thread of its own."""
        answer = response.answer
        timeout = self.server.spec.timeout
        result = answer.result(None if timeout is None else timeout + 1.0)
        # "killed": stopped here, its body going nowhere (the client left, the cap); the why is logged as `cut`
        ended = "" if result is None or result.reason in ("exit", "killed") else result.message or result.reason
        if result is None:
            ended = "still running after its deadline; it keeps its slot until its run ends"

            def finish_at_the_end() -> None:
                answer.result(None)
                response.finish()

            threading.Thread(target=finish_at_the_end, name="wasm-oci proxy wait", daemon=True).start()
        else:
            response.finish()
        if cut and not bodiless:
            what = f"{cut}; the connection was cut after {sent} bytes of body"
        elif cut:
            what = f"{cut} (a {self.method if self.method == 'HEAD' else response.status} response sends no body)"
        elif ended:
            what = "the guest failed after its response was sent"
        else:
            return
        self.server.error_log(
            f"{self.method} {self.target} -> {response.status}: {what}" + (f"; {ended}" if ended else "") + stderr_of(answer.stderr)
        )

    def _reset(self) -> None:
        """Close the connection with a reset (SO_LINGER 0) rather than a FIN: to the client an
        error, not the end of a body."""
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.request.close()

    def _rescue(self, response: cgi.Response) -> None:
        """Answer from another thread while this one is held by a guest stuck in a host call; the
        connection ends there (this thread leaves it alone once the guest returns)."""
        with contextlib.suppress(OSError):
            self._send(response, close=True)
            self.request.shutdown(socket.SHUT_RDWR)

    def _log(self, status: int, size: int) -> None:
        """One access-log line: client, request line, status, body bytes, milliseconds taken."""
        assert self.server.access_log is not None
        took = (time.monotonic() - self.began) * 1e3 if self.began else 0.0
        request = f"{self.method} {self.target} {self.version}" if self.method else "-"
        self.server.access_log(f'{self.client_address[0]} "{_printable(request)}" {status} {size} {took:.1f}ms')

    def _write(self, data: bytes) -> None:
        self.request.settimeout(self.server.limits.idle_timeout)  # sendall's whole duration, not per send
        self.request.sendall(data)

    def _linger(self) -> None:
        """After a refusal: stop sending and read (and drop) what the client still sends for a moment."""
        with contextlib.suppress(OSError):
            self.request.shutdown(socket.SHUT_WR)
            self.clock.deadline = time.monotonic() + _LINGER
            while self.rfile.read1(64 << 10):
                pass


def _printable(text: str) -> str:
    """A request line for a log line: its controls and quotes escaped (it came from a client)."""
    return text.encode("unicode_escape").decode("ascii").replace('"', "\\x22")


@functools.lru_cache(maxsize=1)
def _date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


def _origin_form(method: str, target: str) -> str:
    """The path and query of a request target (RFC 9112 3.2); a path starting with '//' is cut to
    one '/' (clients would take it for a host: an open redirect). A %00 is refused: the guest's
    PATH_INFO would end there (C strings), and "/admin%00.png" would pass for "/admin"."""
    if "%00" in target:
        raise _Refused(HTTPStatus.BAD_REQUEST)
    if target == "*" and method == "OPTIONS":
        return target
    if not target.startswith("/"):
        absolute = _ABSOLUTE.fullmatch(target)
        if absolute is None:
            raise _Refused(HTTPStatus.BAD_REQUEST)
        target = "/" + absolute[1].lstrip("/")
    return "/" + target.lstrip("/") if target.startswith("//") else target


def _framed(method: str, target: str, version: str, fields: list[tuple[str, str]], max_body: int) -> _Head:
    """How the body is framed, by RFC 9112 6.3's rules; any message whose length could be read
    two ways (the root of request smuggling) is refused with a 400."""
    lengths: list[str] = []
    codings: list[str] = []
    connection: list[str] = []
    expect: list[str] = []
    transfer_encoding = False
    hosts = 0
    for name, value in fields:
        key = name.lower()
        if key == "content-length":
            lengths += [item.strip(" \t") for item in value.split(",")]
        elif key == "transfer-encoding":
            transfer_encoding = True
            codings += [item for item in (item.strip(" \t").lower() for item in value.split(",")) if item]
        elif key == "connection":
            connection += [item.strip(" \t").lower() for item in value.split(",")]
        elif key == "expect":
            expect.append(value.lower())
        elif key == "host":
            hosts += 1
    if version == "HTTP/1.1" and hosts != 1:  # RFC 9112 3.2
        raise _Refused(HTTPStatus.BAD_REQUEST)
    length = 0
    if transfer_encoding:
        if lengths or version == "HTTP/1.0" or not codings or codings[-1] != "chunked" or "chunked" in codings[:-1]:
            raise _Refused(HTTPStatus.BAD_REQUEST)
        if len(codings) > 1:  # gzip, chunked: a coding this server does not undo
            raise _Refused(HTTPStatus.NOT_IMPLEMENTED)
    elif lengths:
        if not all(_LENGTH.fullmatch(item) for item in lengths) or len({int(item) for item in lengths}) != 1:
            raise _Refused(HTTPStatus.BAD_REQUEST)
        length = int(lengths[0])
        if length > max_body:
            raise _Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    if expect and expect != ["100-continue"]:
        raise _Refused(HTTPStatus.EXPECTATION_FAILED)
    close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
    expect_continue = bool(expect) and version == "HTTP/1.1" and (transfer_encoding or length > 0)
    return _Head(method, target, version, fields, length, transfer_encoding, close, expect_continue)
