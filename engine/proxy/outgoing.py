"""wasi:http/outgoing-handler: the requests a proxy guest makes, refused unless the host allows them.

By default a guest may reach nothing: `handle` answers the error-code `HTTP-request-denied`,
as Wasmtime's host does for a request its embedder refuses. An Outbound policy names the
hosts (or host:port pairs) a guest may reach; such a request is made with http.client on a
thread of its own, with timeouts (the guest's request-options, capped by the policy's), a cap
on the response body, and a cap on requests per guest request. Its response body reaches the
guest through a Pipe, so the guest waits for it in wasi:io/poll like for anything else; the
guest's run ending (or its dropping the future) closes the connection.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wasmtime.component import Variant

from wasm_oci.engine.proxy.fields import FORBIDDEN
from wasm_oci.engine.proxy.fields import Fields as FieldMap
from wasm_oci.engine.proxy.http_types import (
    Exchange,
    FutureIncomingResponse,
    IncomingBody,
    IncomingResponse,
    OutgoingRequest,
    RequestOptions,
    body_trailers,
    code,
    method_name,
    scheme_name,
)
from wasm_oci.engine.proxy.streams import InputStream, IoError, Pipe

_CHUNK = 64 * 1024
_WINDOW = 256 * 1024
"""Bytes of a response body read ahead of the guest."""


@dataclass(frozen=True)
class Outbound:
    """Which outgoing requests guests may make, and their bounds.

    allow: hosts a guest may reach: `name` (any port) or `name:port` (names as the guest
    writes them in the authority, IPv6 addresses in brackets); "*" allows any. Empty: none.
    """

    allow: frozenset[str] = field(default_factory=frozenset)
    connect_timeout: float = 10.0
    first_byte_timeout: float = 30.0
    between_bytes_timeout: float = 30.0
    max_response_body: int = 16 * 1024 * 1024
    max_requests: int = 16
    """Outgoing requests one guest request may make."""
    connect: Callable[[tuple[str, int], float], socket.socket] | None = None
    """Opens the TCP connection of an allowed request ((host, port), timeout); None: from this
    process's network. The shim opens them in the task's network namespace."""

    def allows(self, host: str, port: int) -> bool:
        host = host.lower()
        return "*" in self.allow or host in self.allow or f"{host}:{port}" in self.allow


def _split(authority: str, default_port: int) -> tuple[str, int] | None:
    """Host and port of an authority; None when it is not one (userinfo is refused)."""
    if "@" in authority or not authority:
        return None
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:]
        host = f"[{host}]"
    else:
        host, _, port_text = authority.partition(":")
    if not host:
        return None
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    return host, int(port_text)


class Sender:
    """The `send` of an Exchange: checks a guest's request against the policy and starts it."""

    def __init__(self, policy: Outbound) -> None:
        self.policy = policy

    def __call__(self, exchange: Exchange, request: OutgoingRequest, options: RequestOptions | None) -> FutureIncomingResponse | Variant:
        scheme = "https" if request.scheme is None else scheme_name(request.scheme)
        if scheme not in ("http", "https"):
            return code("HTTP-protocol-error")
        if request.authority is None:
            return code("HTTP-request-URI-invalid")
        target = _split(request.authority, 443 if scheme == "https" else 80)
        if target is None:
            return code("HTTP-request-URI-invalid")
        host, port = target
        if not self.policy.allows(host, port):
            return code("HTTP-request-denied")
        if exchange.outgoing >= self.policy.max_requests:
            return code("connection-limit-reached")
        exchange.outgoing += 1
        future = FutureIncomingResponse(exchange)
        call = _Call(self.policy, exchange, future, request, options, scheme, host.strip("[]"), port)
        exchange.closers.append(call.close)
        threading.Thread(target=call.run, name=f"wasm-oci outgoing {host}:{port}", daemon=True).start()
        return future


def _seconds(nanoseconds: int | None, cap: float) -> float:
    return cap if nanoseconds is None else min(cap, nanoseconds / 1e9)


class _Call:
    """One outgoing request, on its own thread."""

    def __init__(
        self,
        policy: Outbound,
        exchange: Exchange,
        future: FutureIncomingResponse,
        request: OutgoingRequest,
        options: RequestOptions | None,
        scheme: str,
        host: str,
        port: int,
    ) -> None:
        self.policy, self.exchange, self.future, self.request = policy, exchange, future, request
        self.scheme, self.host, self.port = scheme, host, port
        timeouts = options.timeouts if options is not None else {}
        self.connect = _seconds(timeouts.get("connect"), policy.connect_timeout)
        self.first_byte = _seconds(timeouts.get("first-byte"), policy.first_byte_timeout)
        self.between = _seconds(timeouts.get("between-bytes"), policy.between_bytes_timeout)
        self.connection: http.client.HTTPConnection | None = None
        self.body: Pipe | None = None
        self.closed = False
        future.on_drop = self._dropped

    def _dropped(self) -> None:
        """The guest dropped the future: a response it already took lives on (its body too)."""
        if not self.future.taken:
            self.close()

    def close(self) -> None:
        """Stop: the guest's run ended or it dropped the future."""
        self.closed = True
        if self.request.body is not None:
            self.request.body.pipe.finish(IoError("the guest's request ended"))
        if self.body is not None:
            self.body.abandon()
        connection = self.connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a bug of ours: the guest sees an internal-error, never a hang
            message = f"{type(exc).__name__}: {exc}"
            if self.future.outcome is None:
                self.future.complete(Variant("err", code("internal-error", message)))
            if self.body is not None:
                self.body.finish(IoError(message, code("internal-error", message)))
        finally:
            if self.connection is not None:
                self.connection.close()

    def _run(self) -> None:
        if self.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.connect, context=ssl.create_default_context()
            )
        else:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=self.connect)
        opener = self.policy.connect
        if opener is not None:  # http.client's own hook, which HTTPSConnection wraps in TLS after
            connection._create_connection = lambda address, timeout, _source=None: opener(address, timeout)  # type: ignore[attr-defined]
        self.connection = connection
        failed = self._exchange_head(connection)
        if failed is not None:
            self.future.complete(Variant("err", failed))
            return
        try:
            assert connection.sock is not None
            connection.sock.settimeout(self.first_byte)
            response = connection.getresponse()
        except TimeoutError:
            self.future.complete(Variant("err", code("HTTP-response-timeout")))
            return
        except (http.client.HTTPException, OSError) as exc:
            self.future.complete(Variant("err", _failure(exc, "HTTP-protocol-error")))
            return
        headers = FieldMap(
            [(name, value.encode("latin-1")) for name, value in response.getheaders() if name.lower() not in FORBIDDEN],
            mutable=False,
            guest=False,
        )
        pipe = self.body = Pipe(self.exchange, _WINDOW, self.policy.max_response_body)
        if self.closed:
            pipe.abandon()
        incoming = IncomingResponse(response.status, headers, IncomingBody(InputStream(pipe), body_trailers(pipe)))
        self.future.complete(Variant("ok", incoming))
        self._read_body(response, pipe)

    def _exchange_head(self, connection: http.client.HTTPConnection) -> Variant | None:
        """Connect, send the request and its body: the error-code if that failed."""
        request = self.request
        try:
            connection.connect()
        except TimeoutError:
            return code("connection-timeout")
        except OSError as exc:
            return _failure(exc, "destination-unavailable")
        if self.closed:
            return code("internal-error", "the guest's request ended")
        assert connection.sock is not None
        connection.sock.settimeout(self.between)
        try:
            connection.putrequest(method_name(request.method), request.path or "/", skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", request.authority or "")
            for name, value in request.headers.entries:
                connection.putheader(name, value)
            body = request.body
            chunked = body is not None and body.expected is None
            if chunked:
                connection.putheader("Transfer-Encoding", "chunked")
            connection.endheaders()
            if body is not None:
                failed = self._send_body(connection, body.pipe, chunked)
                if failed is not None:
                    return failed
        except TimeoutError:
            return code("connection-write-timeout")
        except (http.client.HTTPException, OSError) as exc:
            return _failure(exc, "connection-terminated")
        return None

    def _send_body(self, connection: http.client.HTTPConnection, pipe: Pipe, chunked: bool) -> Variant | None:
        while True:
            data = pipe.take_waiting(_CHUNK, self.between)
            if data is None:
                return code("HTTP-request-body-size", pipe.total)  # the guest stopped writing
            if data:
                connection.send(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
                continue
            if pipe.error is not None:
                return pipe.error.http_code or code("internal-error", pipe.error.message)
            if pipe.at_end():
                if chunked:
                    connection.send(b"0\r\n\r\n")
                return None

    def _read_body(self, response: http.client.HTTPResponse, pipe: Pipe) -> None:
        try:
            while not self.closed:
                chunk = response.read1(_CHUNK)
                if not chunk:
                    pipe.finish()
                    return
                if not pipe.put_waiting(chunk):
                    if pipe.over_limit:
                        message = f"the response body passed {self.policy.max_response_body} bytes"
                        pipe.finish(IoError(message, code("HTTP-response-body-size", None)))
                    return
        except TimeoutError:
            pipe.finish(IoError("the response body stalled", code("connection-read-timeout")))
        except (http.client.HTTPException, OSError) as exc:
            pipe.finish(IoError(f"reading the response body: {exc}", _failure(exc, "HTTP-response-incomplete")))


def _failure(exc: BaseException, default: str) -> Variant:
    """The error-code for an exception of http.client, a socket or TLS."""
    if isinstance(exc, socket.gaierror):
        return code("DNS-error", {"rcode": str(exc.strerror or exc), "info-code": None})
    if isinstance(exc, ConnectionRefusedError):
        return code("connection-refused")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return code("TLS-certificate-error")
    if isinstance(exc, ssl.SSLError):
        return code("TLS-protocol-error")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
        return code("connection-terminated")
    if isinstance(exc, http.client.HTTPException):
        return code("HTTP-protocol-error")
    return code(default, str(exc)) if default == "internal-error" else code(default)


def denied(_exchange: Exchange, _request: OutgoingRequest, _options: RequestOptions | None) -> Any:
    """The `send` of a host that allows no outgoing request."""
    return code("HTTP-request-denied")
