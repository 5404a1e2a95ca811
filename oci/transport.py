"""HTTP to registries, with every operation bounded in time and every response in size.

Built on http.client: requests and urllib3 cost ~70 ms to import, more than a whole small push
takes on loopback, and what they add (cookies, content decoding, retries) is what a registry
client must not do anyway. Here:
- one deadline covers a whole registry operation (a pull, a push, and each parallel transfer of
  it): when it passes, the sockets of the operation's connections are shut down, in whatever
  phase they are (TLS handshake, sending, status line, headers, body);
- redirects are followed here: at most MAX_REDIRECTS, to http(s) only, without reading the
  redirect's body, and the caller's Authorization header stays with the origin it was given for;
- bodies are read raw (Content-Encoding is never decoded: a compression bomb stays small, and
  what is hashed is what was sent), with a size cap where they are read whole; a body that ends
  before its Content-Length is an error, not a short body;
- connections are kept alive per origin and reused, one request at a time each (parallel
  transfers take one each); HTTP(S)_PROXY and NO_PROXY are honoured, as requests did;
- every failure of the layers below (http.client, ssl, sockets) becomes one project error
  here: callers see only `WasmOciError`s.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import re
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from wasm_oci import __version__
from wasm_oci.errors import MalformedContent, RegistryError, RegistryUnreachable, WasmOciError

MAX_REDIRECTS = 5
USER_AGENT = f"wasm-oci/{__version__}"
"""Sent with every request: registries log and rate-limit by client (http.client sends none)."""
CHUNK = 1 << 20
"""The most one read returns, and the size of the pieces an upload is sent in."""
_REDIRECTS = (301, 302, 303, 307, 308)
_Origin = tuple[str, str, int]


class Cutoff:
    """One operation's deadline, and the sockets it cuts when the deadline passes."""

    def __init__(self, seconds: float, what: str) -> None:
        self.seconds, self.what = seconds, what
        self.expires = time.monotonic() + seconds
        self.expired = False
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
            if self._timer is None and not self.expired:
                self._timer = threading.Timer(max(0.0, self.remaining()), self._cut)
                self._timer.daemon = True
                self._timer.start()
        if self.expired:  # the timer fired before this socket was added
            self._cut()

    def _cut(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # closed meanwhile
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()

    def check(self) -> None:
        if self.expired or self.remaining() <= 0:
            raise self.error()

    def error(self) -> RegistryUnreachable:
        return RegistryUnreachable(f"{self.what} did not finish within {self.seconds:g}s (--registry-timeout)")


@dataclass(frozen=True)
class Body:
    """A request body streamed from chunks, of a size known up front (sent as Content-Length)."""

    chunks: Iterable[bytes]
    size: int


def origin(url: str) -> _Origin:
    """(scheme, host, port) with the scheme's default port; port -1 when the URL's is not a number."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port or (443 if parts.scheme == "https" else 80)


def parse_links(value: str) -> dict[str, dict[str, str]]:
    """RFC 8288 Link header values -> {rel (or the URL): {"url": ..., param: value}}, as requests' `Response.links`."""
    links: dict[str, dict[str, str]] = {}
    value = value.strip(" '\"")
    for item in re.split(", *<", value) if value else []:
        url, _, params = item.partition(";")
        link = {"url": url.strip("<> '\"")}
        for param in params.split(";"):
            key, sep, val = param.partition("=")
            if not sep:
                break
            link[key.strip(" '\"")] = val.strip(" '\"")
        links[link.get("rel") or link["url"]] = link
    return links


class Response:
    """One response, its body unread: status, headers (case-insensitive), and the raw stream."""

    def __init__(self, raw: http.client.HTTPResponse, url: str, method: str, release: Any) -> None:
        self.raw = raw
        self.url = url
        self.method = method
        self.status_code = raw.status
        self.reason = raw.reason
        self.headers = raw.headers
        self._release = release

    @property
    def links(self) -> dict[str, dict[str, str]]:
        return parse_links(", ".join(self.headers.get_all("Link") or []))

    def complete(self) -> bool:
        """Whether the body was read to its end (a bodiless answer is), leaving the connection reusable."""
        raw = self.raw
        if not raw.isclosed() and (self.method == "HEAD" or raw.length == 0):
            with contextlib.suppress(Exception):
                raw.read()  # nothing left to read: this only ends the response
        return raw.isclosed()

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(self)

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class _Dropped(Exception):
    def __init__(self, cause: Exception) -> None:
        self.cause = cause


class _Connection(http.client.HTTPConnection):
    pass


class _TLSConnection(http.client.HTTPSConnection):
    cutoff: Cutoff

    def connect(self) -> None:
        super().connect()
        self.cutoff.watch(self.sock)  # the TLS socket; the TCP one under it was watched as it connected


def _proxies() -> tuple[dict[str, str], Any]:
    """The proxy environment: {scheme: proxy URL} and the NO_PROXY test, or nothing when unset."""
    if not any(key.lower().endswith("_proxy") for key in os.environ):
        return {}, None
    import urllib.request  # ~18 ms to import: only when a proxy is configured at all

    return urllib.request.getproxies_environment(), getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 - untyped in typeshed


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    bundle = verify if isinstance(verify, str) else os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        return ssl.create_default_context(cafile=bundle)
    defaults = ssl.get_default_verify_paths()
    if (defaults.cafile and os.path.isfile(defaults.cafile)) or (defaults.capath and os.path.isdir(defaults.capath)):
        return ssl.create_default_context()
    try:
        import certifi  # ~11 ms to import: only on a system without a CA store of its own
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class Transport:
    """The HTTP side of one registry operation: its connections, its deadline, and the error boundary."""

    def __init__(self, host: str, verify: bool | str, timeout: float, deadline: float) -> None:
        self.host, self.verify, self.timeout = host, verify, timeout
        self.cutoff = Cutoff(deadline, f"the operation on {host}")
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._proxies, self._bypass = _proxies()
        weakref.finalize(self, _close_all, self._idle, self.cutoff)

    def close(self) -> None:
        _close_all(self._idle, self.cutoff)

    def request(self, method: str, url: str, headers: Mapping[str, str] | None = None, data: Any = None, follow: bool = True) -> Response:
        """Send one request, following redirects of GET and HEAD; the response's body is unread."""
        sent = {"Accept-Encoding": "identity", "User-Agent": USER_AGENT, **(headers or {})}
        for _ in range(MAX_REDIRECTS + 1):
            scheme = urlsplit(url).scheme
            if scheme not in ("http", "https"):
                raise RegistryError(f"{self.host} sent a request to {url[:120]!r}, which is not http(s)")
            response = self._send(method, url, sent, data)
            location = response.headers.get("Location")
            if not (follow and method in ("GET", "HEAD") and response.status_code in _REDIRECTS):
                return response
            response.close()
            if not location:
                raise RegistryError(f"{self.host} answered HTTP {response.status_code} without a Location")
            target = urljoin(url, location)
            if origin(target) != origin(url):
                sent = {k: v for k, v in sent.items() if k.lower() != "authorization"}
            url = target
        raise RegistryError(f"{self.host} redirected more than {MAX_REDIRECTS} times")

    # -- connections ---------------------------------------------------------------------------
    def _connection(self, key: _Origin, per_read: float, reuse: bool) -> tuple[http.client.HTTPConnection, bool]:
        """An idle kept-alive connection to `key` if `reuse` (one the server closed meanwhile is
        dropped), else a new one; and whether it goes through an HTTP proxy (requests then name
        the whole URL)."""
        with self._lock:
            idle = self._idle.get(key) or []
            conn = idle.pop() if idle and reuse else None
        if conn is not None and conn.sock is not None and select.select([conn.sock], [], [], 0)[0]:
            conn.close()  # readable while idle: the server closed it (or sent what nobody asked for)
        scheme, host, port = key
        proxy = self._proxy_for(scheme, host, port)
        if conn is None:
            conn = self._new_connection(scheme, host, port, proxy)
        conn.timeout = per_read
        if conn.sock is not None:
            conn.sock.settimeout(per_read)
        return conn, proxy is not None and scheme == "http"

    def _proxy_for(self, scheme: str, host: str, port: int) -> tuple[str, int, dict[str, str]] | None:
        url = self._proxies.get(scheme)
        if not url or self._bypass(f"{host}:{port}"):
            return None
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise RegistryError(f"proxy {parts.scheme}://{parts.hostname} for {self.host}: only http:// proxies are supported")
        auth = {}
        if parts.username:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            auth["Proxy-Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return parts.hostname, parts.port or 80, auth

    def _new_connection(
        self, scheme: str, host: str, port: int, proxy: tuple[str, int, dict[str, str]] | None
    ) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        address = (proxy[0], proxy[1]) if proxy else (host, port)
        if scheme == "https":
            if self._context is None:
                self._context = _tls_context(self.verify)
            conn = _TLSConnection(*address, context=self._context)
            conn.cutoff = self.cutoff
            if proxy:
                conn.set_tunnel(host, port, headers=proxy[2])
        else:
            conn = _Connection(*address)
        cutoff = self.cutoff

        def connect(address: tuple[str, int], timeout: float | None = None, source: Any = None) -> socket.socket:
            sock = socket.create_connection(address, timeout, source)
            cutoff.watch(sock)
            return sock

        setattr(conn, "_create_connection", connect)  # noqa: B010 - http.client's (untyped) hook for making the socket
        setattr(conn, "proxy_headers", proxy[2] if proxy and scheme == "http" else {})  # noqa: B010 - sent with each request
        return conn

    def _release(self, key: _Origin, conn: http.client.HTTPConnection) -> Any:
        def release(response: Response) -> None:
            # Kept only if the body was read whole and the server did not announce the close
            # (Connection: close, HTTP/1.0): tinyproxy, for one, closes after every response,
            # and a request sent meanwhile on that connection would be lost with it.
            if response.complete() and not response.raw.will_close and not self.cutoff.expired:
                with self._lock:
                    self._idle.setdefault(key, []).append(conn)
            else:
                conn.close()

        return release

    def _drop_idle(self, key: _Origin) -> None:
        with self._lock:
            conns = self._idle.pop(key, [])
        for conn in conns:
            conn.close()

    # -- one exchange --------------------------------------------------------------------------
    def _send(self, method: str, url: str, headers: dict[str, str], data: Any) -> Response:
        replayable = data is None or isinstance(data, (bytes, str))
        try:
            return self._exchange(method, url, headers, data, reuse=replayable)
        except _Dropped as dropped:
            if not replayable:
                raise self.error(dropped.cause) from None
            return self._exchange(method, url, headers, data, reuse=True)  # on a new connection: the idle ones of this origin are gone

    def _exchange(self, method: str, url: str, headers: dict[str, str], data: Any, reuse: bool) -> Response:
        """One request and its response head. `reuse`: it may go on an idle kept-alive connection; a
        streamed body, which cannot be sent twice, always gets a new one (a server may close an
        idle connection at any moment, after the check that it is still open)."""
        self.cutoff.check()
        per_read = max(0.01, min(self.timeout, self.cutoff.remaining()))
        conn: http.client.HTTPConnection | None = None
        reused = False
        try:
            parts = urlsplit(url)
            key = origin(url)
            if not key[1] or key[2] == -1:
                raise ValueError(f"no host or an unusable port in {url[:120]!r}")
            conn, absolute = self._connection(key, per_read, reuse)
            reused = conn.sock is not None
            target = url.split("#", 1)[0] if absolute else (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in {**getattr(conn, "proxy_headers", {}), **headers}.items():
                conn.putheader(name, value)
            chunks, size = _body(method, data)
            if size is not None and not any(name.lower() == "content-length" for name in headers):
                conn.putheader("Content-Length", str(size))
            conn.endheaders()
            for chunk in chunks:
                self.cutoff.check()
                conn.send(chunk)
            raw = conn.getresponse()
            if absolute and raw.status == 407:  # the proxy's answer, not the registry's: no login would help
                raise RegistryError(
                    f"the HTTP proxy refused to forward to {self.host} (407 Proxy Authentication Required): "
                    "give its credentials in the proxy URL (http://USER:PASSWORD@HOST:PORT)"
                )
        except BaseException as exc:
            if conn is not None:
                conn.close()
            if reused and isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected)):
                self._drop_idle(key)
                raise _Dropped(exc) from None  # a kept-alive connection the server had closed: not this request's failure
            if isinstance(exc, Exception):
                raise self.error(exc) from None
            raise
        return Response(raw, url, method, self._release(key, conn))

    def chunks(self, response: Response) -> Iterator[bytes]:
        """The body as it arrives (each read returns what one recv gave, so the deadline is
        checked between them even when bytes trickle in)."""
        raw = response.raw
        try:
            while chunk := raw.read1(CHUNK):
                self.cutoff.check()
                yield chunk
        except WasmOciError:
            raise
        except Exception as exc:
            raise self.error(exc, during="download") from None
        self.cutoff.check()  # a cut socket reads as the end of the body
        if raw.length:  # http.client ends a body that stops short of its Content-Length quietly
            raise RegistryUnreachable(f"connection to {self.host} broke during the download (IncompleteRead)")

    def read(self, response: Response, limit: int, what: str) -> bytes:
        """The whole body, refused as soon as it passes `limit` bytes."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise MalformedContent(f"{what} from {self.host} is {declared} bytes, over the {limit}-byte limit")
        body = bytearray()
        for chunk in self.chunks(response):
            body += chunk
            if len(body) > limit:
                response.close()
                raise MalformedContent(f"{what} from {self.host} is over the {limit}-byte limit")
        return bytes(body)

    def error(self, exc: BaseException, during: str = "request") -> WasmOciError:
        if isinstance(exc, WasmOciError):
            return exc
        if self.cutoff.expired:
            return self.cutoff.error()
        name = exc.__class__.__name__
        if isinstance(exc, ssl.SSLError):
            reason = str(getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc)
            return RegistryUnreachable(
                f"TLS with {self.host} failed ({reason.splitlines()[0][:160]}); pass --ca-file for a private CA, "
                "or --plain-http for a loopback registry without TLS"
            )
        if isinstance(exc, TimeoutError):
            return RegistryUnreachable(f"registry {self.host} did not answer within {self.timeout:g}s")
        if during == "request":
            if isinstance(exc, socket.gaierror):
                return RegistryUnreachable(f"cannot reach registry {self.host}: unknown host")
            if isinstance(exc, ConnectionRefusedError):
                return RegistryUnreachable(f"cannot reach registry {self.host}: connection refused")
        if isinstance(exc, (http.client.InvalidURL, ValueError, UnicodeError)):
            return RegistryError(f"{self.host}: unusable URL or header in the exchange ({name}: {str(exc)[:120]})")
        if isinstance(exc, OSError) and str(exc).startswith("Tunnel connection failed"):  # http.client's CONNECT refused
            return RegistryUnreachable(f"the HTTP proxy would not open a tunnel to {self.host} ({str(exc)[26:][:120]})")
        if isinstance(exc, (http.client.HTTPException, OSError)):
            return RegistryUnreachable(f"connection to {self.host} broke during the {during} ({name})")
        raise exc


def _body(method: str, data: Any) -> tuple[Iterable[bytes], int | None]:
    """A request body as chunks to send, and its length (None: no Content-Length, as for GET and HEAD)."""
    if data is None:
        return (), None if method in ("GET", "HEAD") else 0
    if isinstance(data, Body):
        return data.chunks, data.size
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return ([bytes(data)] if data else []), len(data)
    if hasattr(data, "read"):  # a file (oras-py's callers): its length must be known up front
        size = len(data) if hasattr(data, "__len__") else os.fstat(data.fileno()).st_size - data.tell()
        return iter(lambda: data.read(CHUNK), b""), size
    raise TypeError(f"cannot send a {type(data).__name__} as a request body")


def _close_all(idle: dict[_Origin, list[http.client.HTTPConnection]], cutoff: Cutoff) -> None:
    cutoff.close()
    for conns in list(idle.values()):
        while conns:
            conns.pop().close()
