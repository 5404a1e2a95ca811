"""`wasm-oci serve`: an HTTP trigger that runs a fresh guest instance per request, CGI-style.

The standard library's ThreadingHTTPServer gives each connection a thread; the guest runs on
it without the GIL, so requests run in parallel up to `concurrency` guests at a time (each may
use up to the memory limit). Every request gets the run spec's limits and a clean 5xx
without guest details when its guest fails; what went wrong, with the guest's stderr, goes
to the server's log instead. The guest's stdout and stderr land in anonymous memory files
(memfd): no Python code runs per guest write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from wasm_oci import __version__
from wasm_oci.engine import cgi
from wasm_oci.engine.program import Program
from wasm_oci.engine.result import RunResult
from wasm_oci.engine.runner import Engine
from wasm_oci.engine.spec import RunSpec
from wasm_oci.errors import WasmOciError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeLimits:
    max_body: int = 16 << 20
    max_response: int = 64 << 20
    """Checked when the guest ends: a guest that never stops writing is bounded by the timeout."""
    concurrency: int = os.cpu_count() or 1


class CgiServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], engine: Engine, program: Program, spec: RunSpec,
                 limits: ServeLimits = ServeLimits()) -> None:
        """`spec` is the template for every request: args, env, preopens, memory limit, timeout."""
        super().__init__(address, _Handler)
        self.engine, self.program, self.spec, self.limits = engine, program, spec, limits
        self.host, self.port = self.socket.getsockname()[:2]
        self._slots = threading.BoundedSemaphore(limits.concurrency)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def respond(self, request: cgi.Request, body: bytes) -> cgi.Response:
        with _memfd("stdout") as (stdout, stdout_path), _memfd("stderr") as (stderr, stderr_path):
            spec = replace(
                self.spec,
                env={**self.spec.env, **cgi.environ(request)},
                stdin=body,
                stdout=stdout_path,
                stderr=stderr_path,
            )
            try:
                with self._slots:
                    result = self.engine.run(self.program, spec)
            except WasmOciError as exc:  # the guest could not even start (a missing import, a preopen gone)
                return _error(request, HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
            if result.reason != "exit" or result.status != 0:
                return self._failed(request, result, os.pread(stderr, 2048, 0))
            size = os.fstat(stdout).st_size
            if size > self.limits.max_response:
                return _error(request, HTTPStatus.BAD_GATEWAY, f"response of {size} bytes is over the {self.limits.max_response}-byte limit")
            try:
                return cgi.parse_response(os.pread(stdout, size, 0))
            except cgi.MalformedResponse as exc:
                return _error(request, HTTPStatus.BAD_GATEWAY, str(exc))

    def _failed(self, request: cgi.Request, result: RunResult, stderr: bytes) -> cgi.Response:
        what = result.message or f"guest exited with status {result.status}"
        if stderr:
            what += f"; guest stderr: {stderr.decode('utf-8', 'replace').strip()!r}"
        code = HTTPStatus.GATEWAY_TIMEOUT if result.reason == "timeout" else HTTPStatus.INTERNAL_SERVER_ERROR
        return _error(request, code, what)


def _error(request: cgi.Request, code: HTTPStatus, detail: str) -> cgi.Response:
    """Log the detail, answer with the bare status: the client learns nothing about the guest."""
    log.warning("%s %s -> %d: %s", request.method, request.target, code, detail)
    return _plain(code)


def _plain(code: HTTPStatus) -> cgi.Response:
    return cgi.Response(code, code.phrase, [("Content-Type", "text/plain; charset=utf-8")], f"{code} {code.phrase}\n".encode())


@contextlib.contextmanager
def _memfd(name: str) -> Iterator[tuple[int, Path]]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        yield fd, Path(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


class _BadRequest(Exception):
    def __init__(self, code: HTTPStatus) -> None:
        super().__init__(code.phrase)
        self.code = code


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"wasm-oci/{__version__}"
    sys_version = ""
    server: CgiServer
    timeout = 60  # an idle keep-alive connection gives its thread back after this
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle + delayed ACK cost 40 ms

    def _handle(self) -> None:
        try:
            body = self._body()
        except _BadRequest as exc:
            self.close_connection = True
            self._send(_plain(exc.code))
            return
        request = cgi.Request(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body_length=len(body),
            client=self.client_address[:2],
            server=(self.server.host, self.server.port),
            protocol=self.request_version,
        )
        self._send(self.server.respond(request, body))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def _body(self) -> bytes:
        limit = self.server.limits.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunked(limit)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BadRequest(HTTPStatus.BAD_REQUEST) from None
        if length < 0:
            raise _BadRequest(HTTPStatus.BAD_REQUEST)
        if length > limit:
            raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BadRequest(HTTPStatus.BAD_REQUEST)
        return body

    def _chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                size = int(self.rfile.readline(100).split(b";", 1)[0], 16)
            except ValueError:
                raise _BadRequest(HTTPStatus.BAD_REQUEST) from None
            if size == 0:
                break
            total += size
            if total > limit:
                raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def _send(self, response: cgi.Response) -> None:
        self.send_response(response.status, response.reason or None)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        """No access log: failures are logged by CgiServer with what went wrong."""
