"""A registry of our own that speaks the distribution API honestly, except in the one way its `mode` names.

The real registry (services.registry) only ever misbehaves by accident; this one misbehaves on
purpose, so the client's handling of hostile answers can be tested: wrong document shapes,
broken HTTP, answers that are slow or never end, decompression bombs, pagination loops and
redirects to other hosts. Everything it is asked is recorded in `log` (with headers), so a test
can tell what a *second* server (`HostileRegistry` as a bystander or token service) received.

Honest part: `/v2/`, HEAD/GET `manifests/<tag|digest>`, GET `blobs/<digest>`, the referrers API,
`tags/list` (paged as distribution 3 pages it: `n` and `last`, and a `Link` to the next page;
`params['tags_page']` pages without `n`, as Docker Hub does), blob uploads (POST + PUT) and manifest PUT; optional Basic auth (`basic=(user, pw)`)
or Bearer auth against `token_realm` (any server's `/token` path issues tokens).
Faults: `mode` is "CLASS.NAME" (see `FAULTS`); `params` carries a fault's knobs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
GOOD_TOKEN = "good-token"
HELLO_WASM = Path(__file__).resolve().parents[2] / "examples" / "hello" / "hello.wasm"
MiB = 1 << 20
_ROUTE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>manifests|blobs|referrers|tags)/(?P<ref>[^?]*)$")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass(frozen=True)
class WasmArtifact:
    """The real hello.wasm packaged by the product's own packager: what honest answers serve."""

    manifest: bytes
    manifest_digest: str
    config: bytes
    config_media_type: str
    layer: bytes
    layer_desc: dict[str, Any]


_ARTIFACT: WasmArtifact | None = None


def hello_artifact() -> WasmArtifact:
    """Packaged once per process, at a fixed creation time so digests are stable."""
    global _ARTIFACT
    if _ARTIFACT is None:
        from wasm_oci.oci import distribution as api

        opts = api.PackageOptions(created=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
        packaged, wasm = api.package_file(HELLO_WASM, opts)
        _ARTIFACT = WasmArtifact(
            manifest=packaged.manifest_bytes,
            manifest_digest=packaged.manifest.digest,
            config=packaged.config_bytes,
            config_media_type=packaged.config.media_type,
            layer=wasm,
            layer_desc=packaged.layer.to_json(),
        )
    return _ARTIFACT


_BOMB: bytes | None = None


def gzip_bomb() -> bytes:
    """~0.5 MiB of gzip that inflates to 512 MiB of zeros, over any sane memory bound (built once: ~0.5 s)."""
    global _BOMB
    if _BOMB is None:
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(MiB)
        parts = [comp.compress(zeros) for _ in range(512)]
        _BOMB = b"".join(parts) + comp.flush()
    return _BOMB


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    owner: HostileRegistry


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + the client's delayed
        # ACK stall every response ~40 ms, and fan-out cases would measure the harness, not wasm-oci
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _go(self) -> None:
        try:
            self.server.owner._dispatch(self)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
            self.close_connection = True

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _go


# -- response helpers (used by the honest part and by faults) -------------------------------------
def send(h: _Handler, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    headers = dict(headers or {})
    headers.setdefault("Content-Length", str(len(body)))
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()
    if h.command != "HEAD" and body:
        h.wfile.write(body)


def send_raw(h: _Handler, raw: bytes) -> None:
    """Bytes straight onto the socket (status line and all), then close."""
    h.wfile.write(raw)
    h.wfile.flush()
    h.close_connection = True


def reset(h: _Handler) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN: the client sees 'connection reset'."""
    h.wfile.flush()
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.connection.close()
    h.close_connection = True


def send_error_json(h: _Handler, status: int, code: str) -> None:
    body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
    send(h, status, body, {"Content-Type": "application/json"})


def stream(h: _Handler, owner: HostileRegistry, total: int, chunk: bytes = b" " * MiB, interval: float = 0.0) -> None:
    """Write `chunk` repeatedly until `total` bytes, the client leaves, or the server stops."""
    sent = 0
    while sent < total and not owner.stopping.is_set():
        piece = chunk[: total - sent]
        h.wfile.write(piece)
        h.wfile.flush()
        sent += len(piece)
        if interval:
            owner.stopping.wait(interval)
    h.close_connection = True


Fault = Callable[[_Handler, "HostileRegistry", "Route"], bool]
FAULTS: dict[str, Fault] = {}
"""mode name -> handler; returns True when it answered the request itself."""


def fault(name: str) -> Callable[[Fault], Fault]:
    def register(fn: Fault) -> Fault:
        FAULTS[name] = fn
        return fn

    return register


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    query: dict[str, list[str]]
    name: str | None = None
    kind: str | None = None  # manifests, blobs, referrers, tags, v2, token, uploads
    ref: str | None = None


@dataclass
class HostileRegistry:
    """One server; `start()`/`stop()` or a context manager. `host` is `127.0.0.1:PORT`."""

    mode: str = "honest"
    basic: tuple[str, str] | None = None
    token_realm: str | None = None  # Bearer auth: 401 with this realm until `Bearer GOOD_TOKEN`
    challenge: str | None = None  # a WWW-Authenticate header to send instead of the above
    referrers_api: bool = True
    params: dict[str, Any] = field(default_factory=dict)
    log: list[Seen] = field(default_factory=list)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # digest -> (media type, bytes)
    blobs: dict[str, bytes] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    referrers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)
    _server: _Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> HostileRegistry:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> HostileRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.server_address[1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- content -----------------------------------------------------------------------------
    def put_manifest(self, data: bytes, tag: str | None = None, media_type: str = OCI_MANIFEST) -> str:
        digest = sha256(data)
        self.manifests[digest] = (media_type, data)
        if tag:
            self.tags[tag] = digest
        return digest

    def put_blob(self, data: bytes) -> str:
        digest = sha256(data)
        self.blobs[digest] = data
        return digest

    def seed_hello(self, tag: str = "1.0") -> WasmArtifact:
        """The honest Wasm artifact under `tag`."""
        art = hello_artifact()
        self.put_blob(art.layer)
        self.put_blob(art.config)
        self.put_manifest(art.manifest, tag)
        return art

    def requests_seen(self) -> list[Seen]:
        with self._lock:
            return list(self.log)

    # -- request handling --------------------------------------------------------------------
    def _route(self, h: _Handler) -> Route:
        parts = urlsplit(h.path)
        query = parse_qs(parts.query)
        path = parts.path
        if path in ("/v2", "/v2/"):
            return Route(h.command, path, query, kind="v2")
        if path == "/token":
            return Route(h.command, path, query, kind="token")
        if "/blobs/uploads/" in path:
            name, _, rest = path[4:].partition("/blobs/uploads/")
            return Route(h.command, path, query, name=name, kind="uploads", ref=rest)
        m = _ROUTE.match(path)
        if m:
            return Route(h.command, path, query, m["name"], m["kind"], m["ref"])
        return Route(h.command, path, query)

    def _read_body(self, h: _Handler) -> bytes:
        length = h.headers.get("Content-Length")
        if length and length.isdigit():
            return h.rfile.read(int(length))
        return b""

    def _authorized(self, h: _Handler, route: Route) -> bool:
        got = h.headers.get("Authorization") or ""
        if route.kind == "token":
            return True
        if self.challenge is not None:
            if got != f"Bearer {GOOD_TOKEN}":
                send(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": self.challenge})
                return False
            return True
        if self.basic:
            expected = "Basic " + base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            if got != expected:
                send(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": 'Basic realm="hostile"'})
                return False
        if self.token_realm and got != f"Bearer {GOOD_TOKEN}":
            challenge = f'Bearer realm="{self.token_realm}",service="hostile",scope="repository:{route.name}:pull"'
            send(h, 401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
            return False
        return True

    def _dispatch(self, h: _Handler) -> None:
        with self._lock:
            self.log.append(Seen(h.command, h.path, {k.lower(): v for k, v in h.headers.items()}))
        body = self._read_body(h) if h.command in ("PUT", "POST", "PATCH") else b""
        route = self._route(h)
        if self.params.get("head_no_digest") and route.kind == "manifests" and route.method == "HEAD":
            if route.kind == "token" or self._authorized(h, route):
                _head_no_digest(h, self, route) or send_error_json(h, 404, "MANIFEST_UNKNOWN")
            return
        handler = FAULTS.get(self.mode)
        if self.mode != "honest" and handler is None:
            raise RuntimeError(f"unknown hostile mode {self.mode!r}")
        if route.kind == "token" or self._authorized(h, route):
            if handler is not None and handler(h, self, route):
                return
            self._honest(h, route, body)

    def _honest(self, h: _Handler, route: Route, body: bytes) -> None:
        if route.kind == "v2":
            return send(h, 200, b"{}", {"Content-Type": "application/json"})
        if route.kind == "token":
            return send(h, 200, json.dumps({"token": GOOD_TOKEN}).encode(), {"Content-Type": "application/json"})
        if route.kind == "manifests":
            if h.command == "PUT":
                media_type = h.headers.get("Content-Type", OCI_MANIFEST)
                digest = self.put_manifest(body, None if route.ref.startswith("sha256:") else route.ref, media_type)
                return send(h, 201, b"", {"Docker-Content-Digest": digest, "Location": f"/v2/{route.name}/manifests/{digest}"})
            digest = self.tags.get(route.ref, route.ref)
            if digest not in self.manifests:
                return send_error_json(h, 404, "MANIFEST_UNKNOWN")
            media_type, data = self.manifests[digest]
            return send(h, 200, data, {"Content-Type": media_type, "Docker-Content-Digest": digest})
        if route.kind == "blobs":
            data = self.blobs.get(route.ref)
            if data is None:
                return send_error_json(h, 404, "BLOB_UNKNOWN")
            return send(h, 200, data, {"Content-Type": "application/octet-stream", "Docker-Content-Digest": route.ref})
        if route.kind == "referrers":
            if not self.referrers_api:
                return send(h, 404, b"404 page not found\n", {"Content-Type": "text/plain"})
            doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.referrers.get(route.ref, [])}
            return send(h, 200, json.dumps(doc).encode(), {"Content-Type": OCI_INDEX})
        if route.kind == "tags":
            return _tag_page(h, self, route)
        if route.kind == "uploads":
            if h.command == "POST":
                return send(h, 202, b"", {"Location": f"/v2/{route.name}/blobs/uploads/u{len(self.log)}", "Range": "0-0"})
            if h.command == "PUT":
                digest = (route.query.get("digest") or [""])[0]
                if sha256(body) != digest:
                    return send_error_json(h, 400, "DIGEST_INVALID")
                self.blobs[digest] = body
                return send(h, 201, b"", {"Docker-Content-Digest": digest})
            return send(h, 204)
        return send(h, 404, b"404 page not found\n", {"Content-Type": "text/plain"})


def _tag_page(h: _Handler, owner: HostileRegistry, route: Route) -> None:
    """The tags after `last`, at most `n` (else `params['tags_page']`, else all) of them, and a `Link` to the rest."""
    names = sorted(owner.tags)
    last = (route.query.get("last") or [""])[0]
    size = int((route.query.get("n") or [owner.params.get("tags_page", 0)])[0]) or len(names)
    rest = [name for name in names if name > last]
    page = rest[:size]
    headers = {"Content-Type": "application/json"}
    if len(rest) > size:
        headers["Link"] = f'</v2/{route.name}/tags/list?n={size}&last={page[-1]}>; rel="next"'
    send(h, 200, json.dumps({"name": route.name, "tags": page}).encode(), headers)


# == faults ======================================================================================
# Each answers the routes it is about and lets the honest part answer the rest. Knobs in `params`.


def _is_manifest(route: Route) -> bool:
    return route.kind == "manifests" and route.method in ("GET", "HEAD")


def _is_blob_get(route: Route) -> bool:
    return route.kind == "blobs" and route.method == "GET"


# -- shapes (the hostile documents themselves are seeded as content; these bend the headers) --
@fault("shapes.head_no_digest")
def _head_no_digest(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """HEAD answers without Docker-Content-Digest, so the client must GET and hash the body."""
    if _is_manifest(route) and route.method == "HEAD":
        digest = owner.tags.get(route.ref, route.ref)
        if digest in owner.manifests:
            media_type, data = owner.manifests[digest]
            send(h, 200, b"", {"Content-Type": media_type, "Content-Length": str(len(data))})
            return True
    return False


@fault("shapes.get_swapped")
def _get_swapped(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """HEAD gives no digest, and GET by digest serves a different (valid) manifest: a wrong acceptance bait."""
    if _is_manifest(route):
        media_type, data = owner.params["swap"]
        if route.method == "HEAD":
            send(h, 200, b"", {"Content-Type": media_type, "Content-Length": str(len(data))})
        else:
            send(h, 200, data, {"Content-Type": media_type})
        return True
    return False


@fault("shapes.head_headers")
def _head_headers(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """HEAD and GET of the manifest answer with `params['headers']` (bad Content-Length, digest, type)."""
    if _is_manifest(route):
        digest = owner.tags.get(route.ref, route.ref)
        media_type, data = owner.manifests.get(digest, (OCI_MANIFEST, b"{}"))
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest, **owner.params["headers"]}
        h.send_response(200)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if route.method == "GET":
            h.wfile.write(data)
        h.close_connection = True
        return True
    return False


@fault("shapes.referrers_body")
def _referrers_body(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """The referrers API answers 200 with `params['body']`."""
    if route.kind == "referrers":
        send(h, 200, owner.params["body"], {"Content-Type": OCI_INDEX})
        return True
    return False


# -- transport ----------------------------------------------------------------------------------
def _target(owner: HostileRegistry, route: Route) -> bool:
    """Which requests a transport fault hits: `params['on']` is manifest, blob, v2, referrers, token or tags."""
    on = owner.params.get("on", "manifest")
    return {
        "manifest": _is_manifest(route),
        "manifest-get": _is_manifest(route) and route.method == "GET",
        "blob": _is_blob_get(route),
        "v2": route.kind == "v2",
        "referrers": route.kind == "referrers",
        "token": route.kind == "token",
        "tags": route.kind == "tags",
    }[on]


@fault("transport.redirect")
def _redirect(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """302 to `params['location']` ('self' means the same URL: a loop)."""
    if not _target(owner, route):
        return False
    location = owner.params["location"]
    send(h, 302, b"", {"Location": h.path if location == "self" else location})
    return True


@fault("transport.raw")
def _raw(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """Raw bytes (bad status line, bad chunking, bad Content-Length) and close; 'reset' adds an RST."""
    if not _target(owner, route):
        return False
    send_raw(h, owner.params["raw"])
    if owner.params.get("reset"):
        reset(h)
    return True


@fault("transport.status")
def _status(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """A fixed status code with a short body (500 forever, 429 forever)."""
    if not _target(owner, route):
        return False
    send(h, owner.params["status"], b'{"errors":[{"code":"UNKNOWN","message":"hostile"}]}', {"Content-Type": "application/json"})
    return True


# -- slow ---------------------------------------------------------------------------------------
@fault("slow.trickle")
def _trickle(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """Honest headers (Content-Length of a huge body), then 1 byte per second forever; 'headers' trickles the status line too."""
    if not _target(owner, route):
        return False
    if owner.params.get("headers"):
        stream(h, owner, 1 << 40, b"H", interval=1.0)
        return True
    headers = {"Content-Type": OCI_MANIFEST if route.kind == "manifests" else "application/octet-stream", "Content-Length": str(1 << 30)}
    if route.kind == "manifests" and route.method == "HEAD":
        return False  # let HEAD be honest so the trickle is on the GET
    h.send_response(200)
    for k, v in headers.items():
        h.send_header(k, v)
    h.end_headers()
    stream(h, owner, 1 << 30, b"{", interval=1.0)
    return True


# -- endless / bomb -----------------------------------------------------------------------------
@fault("bomb.endless")
def _endless(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """A 200 whose body never ends (no Content-Length, close-delimited), capped at `params['total']`."""
    if not _target(owner, route):
        return False
    if route.method == "HEAD":
        digest = owner.tags.get(route.ref or "", route.ref)
        send(
            h,
            200,
            b"",
            {"Content-Type": OCI_MANIFEST}
            | ({} if owner.params.get("head_no_digest") else {"Docker-Content-Digest": str(digest), "Content-Length": "400"}),
        )
        return True
    h.send_response(owner.params.get("status", 200))
    h.send_header("Content-Type", owner.params.get("content_type", OCI_MANIFEST))
    h.send_header("Connection", "close")
    h.end_headers()
    stream(h, owner, owner.params.get("total", 512 * MiB))
    return True


@fault("bomb.gzip")
def _gzip(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """Content-Encoding: gzip, 1 MiB on the wire, 1 GiB inflated."""
    if not _target(owner, route):
        return False
    if route.method == "HEAD":
        return False
    bomb = gzip_bomb()
    send(
        h,
        owner.params.get("status", 200),
        bomb,
        {"Content-Type": owner.params.get("content_type", OCI_MANIFEST), "Content-Encoding": "gzip"},
    )
    return True


# -- pagination ---------------------------------------------------------------------------------
@fault("pagination.link")
def _link(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """Referrers pages, each with one entry and `Link: <next>; rel="next"`.

    params['next'] is 'self' (the same URL: a loop), 'chain' (a new page forever), or a URL
    (another server: the next page is that server's business).
    """
    if route.kind != "referrers":
        return False
    page = int((route.query.get("page") or ["0"])[0])
    nxt = owner.params["next"]
    if nxt == "self":
        link = h.path
    elif nxt == "chain":
        link = f"/v2/{route.name}/referrers/{route.ref}?page={page + 1}"
    else:
        link = nxt
    entry = descriptor(OCI_MANIFEST, f"referrer page {page}".encode(), artifactType="application/vnd.example.sbom")
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    send(h, 200, json.dumps(doc).encode(), {"Content-Type": OCI_INDEX, "Link": f'<{link}>; rel="next"'})
    return True


@fault("pagination.tags")
def _tags_pages(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """Tag list pages: `params['body']` (default: one tag per page, named after the page) as
    `params['content_type']` (default JSON), with a `Link` to `params['next']`, as for referrers
    ('self', 'chain', or a URL), or none."""
    if route.kind != "tags":
        return False
    page = int((route.query.get("page") or ["0"])[0])
    body = owner.params.get("body", json.dumps({"name": route.name, "tags": [f"page-{page}"]}).encode())
    headers = {"Content-Type": owner.params.get("content_type", "application/json")}
    nxt = owner.params.get("next")
    if nxt:
        link = h.path if nxt == "self" else f"/v2/{route.name}/tags/list?page={page + 1}" if nxt == "chain" else nxt
        headers["Link"] = f'<{link}>; rel="next"'
    send(h, 200, body, headers)
    return True


# -- auth ---------------------------------------------------------------------------------------
@fault("auth.token_body")
def _token_body(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """The token service answers `params['token_status']` (200) with `params['token_body']`; 'token_total' streams that many bytes."""
    if route.kind != "token":
        return False
    total = owner.params.get("token_total")
    if total:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(total))
        h.end_headers()
        h.wfile.write(b'{"token":"')
        stream(h, owner, total - 10, b"a" * MiB)
        return True
    send(h, owner.params.get("token_status", 200), owner.params["token_body"], {"Content-Type": "application/json"})
    return True


@fault("auth.error_body")
def _error_body(h: _Handler, owner: HostileRegistry, route: Route) -> bool:
    """Every targeted request gets `params['status']` with an error body of `params['total']` bytes."""
    if not _target(owner, route):
        return False
    total = owner.params.get("total", 100 * MiB)
    h.send_response(owner.params.get("status", 500))
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(total))
    h.end_headers()
    if route.method != "HEAD":
        h.wfile.write(b'{"errors":[{"code":"UNKNOWN","message":"')
        stream(h, owner, total - 40, b"x" * MiB)
    h.close_connection = True
    return True


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    """Poll `predicate` until true or `seconds` passed."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
