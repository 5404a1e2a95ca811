"""HTTP to registries, with every operation bounded in time and every response in size.

requests alone bounds neither: its timeout is per socket operation, so a server that sends a
byte a second keeps a transfer alive for ever, and `Response.content` (which it also reads on
every redirect) takes whatever length it is sent. Here:
- one deadline covers a whole registry operation (a pull, a push): when it passes, the sockets
  of the operation's requests in flight are shut down, in whatever phase they are (sending,
  status line, headers, body); only a TLS handshake is left to the per-read timeout;
- redirects are followed here: at most MAX_REDIRECTS, to http(s) only, without reading the
  redirect's body, and the caller's Authorization header stays with the origin it was given for;
- bodies are read raw (Content-Encoding is never decoded: a compression bomb stays small, and
  what is hashed is what was sent), with a size cap where they are read whole;
- every failure of the layers below (requests, urllib3, http.client, sockets) becomes one
  project error here: callers see only `WasmOciError`s.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from wasm_oci.errors import MalformedContent, RegistryError, RegistryUnreachable, WasmOciError

MAX_REDIRECTS = 5
CHUNK = 1 << 20
_REDIRECTS = (301, 302, 303, 307, 308)
_current = threading.local()
"""The Cutoff of the request this thread is making: the connection classes register their
sockets with it (urllib3 gives no other way to reach the socket of a request in flight)."""


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


def _watched(sock: socket.socket | None) -> None:
    cutoff: Cutoff | None = getattr(_current, "cutoff", None)
    if cutoff is not None and sock is not None:
        cutoff.watch(sock)


class _Watched(HTTPConnection):
    """Registers the connection's socket with the request's Cutoff: a new one as it connects,
    a kept-alive one (or the TLS socket that wraps a new one) at each request."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watched(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watched(self.sock)
        super().request(*args, **kwargs)


class _Connection(_Watched):
    pass


class _TLSConnection(_Watched, HTTPSConnection):
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


def origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return parts.scheme, (parts.hostname or "").lower(), port or (443 if parts.scheme == "https" else 80)


class Transport:
    """The HTTP side of one registry operation: a session, its deadline, and the error boundary."""

    def __init__(self, session: requests.Session, host: str, verify: bool | str, timeout: float, deadline: float) -> None:
        self.session, self.host, self.verify, self.timeout = session, host, verify, timeout
        for prefix in ("http://", "https://"):
            session.mount(prefix, _Adapter())
        self.cutoff = Cutoff(deadline, f"the operation on {host}")
        weakref.finalize(self, self.cutoff.close)

    def request(
        self, method: str, url: str, headers: Mapping[str, str] | None = None, data: Any = None, follow: bool = True
    ) -> requests.Response:
        """Send one request, following redirects of GET and HEAD; the response's body is unread."""
        sent = {"Accept-Encoding": "identity", **(headers or {})}
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

    def _send(self, method: str, url: str, headers: dict[str, str], data: Any) -> requests.Response:
        self.cutoff.check()
        per_read = max(0.01, min(self.timeout, self.cutoff.remaining()))
        _current.cutoff = self.cutoff
        try:
            return self.session.request(
                method, url, headers=headers, data=data, verify=self.verify, timeout=per_read, stream=True, allow_redirects=False
            )
        except Exception as exc:
            raise self.error(exc) from None
        finally:
            _current.cutoff = None

    def chunks(self, response: requests.Response) -> Iterator[bytes]:
        """The body as it arrives (each read returns what one recv gave, so the deadline is
        checked between them even when bytes trickle in)."""
        try:
            while chunk := response.raw.read1(CHUNK, decode_content=False):
                self.cutoff.check()
                yield chunk
        except WasmOciError:
            raise
        except Exception as exc:
            raise self.error(exc, during="download") from None
        self.cutoff.check()  # a cut socket reads as the end of the body

    def read(self, response: requests.Response, limit: int, what: str) -> bytes:
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
        if isinstance(exc, requests.exceptions.SSLError):
            reason = str(exc.args[0].reason if exc.args and hasattr(exc.args[0], "reason") else exc)
            return RegistryUnreachable(
                f"TLS with {self.host} failed ({reason.splitlines()[0][:160]}); pass --ca-file for a private CA, "
                "or --plain-http for a loopback registry without TLS"
            )
        if isinstance(exc, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)):
            return RegistryUnreachable(f"registry {self.host} did not answer within {self.timeout:g}s")
        if isinstance(exc, requests.exceptions.ConnectionError) and during == "request":
            text = str(exc)
            if "Name or service not known" in text or "nodename nor servname" in text or "Temporary failure in name resolution" in text:
                return RegistryUnreachable(f"cannot reach registry {self.host}: unknown host")
            if "refused" in text.lower():
                return RegistryUnreachable(f"cannot reach registry {self.host}: connection refused")
        if isinstance(
            exc,
            (
                requests.exceptions.InvalidURL,
                requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema,
                requests.exceptions.InvalidHeader,
                urllib3.exceptions.LocationValueError,
                ValueError,
                UnicodeError,
            ),
        ):
            return RegistryError(f"{self.host}: unusable URL or header in the exchange ({name}: {str(exc)[:120]})")
        if isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)):
            return RegistryUnreachable(f"connection to {self.host} broke during the {during} ({name})")
        raise exc
