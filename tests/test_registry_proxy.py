"""Registries reached through an HTTP forward proxy (tinyproxy), as behind a corporate proxy:
HTTP_PROXY for plain-HTTP registries (absolute-form requests), HTTPS_PROXY for TLS ones (a
CONNECT tunnel: the proxy sees neither the requests nor the registry's credentials), NO_PROXY,
proxy credentials, and a proxy that is down or refuses."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.forward_proxy import ForwardProxy
from services.registry import RegistryServer
from services.tools import ToolRunner
from services.wasmgen import HELLO


@pytest.fixture
def proxy(tmp_path: Path, secure_registry: RegistryServer) -> Iterator[ForwardProxy]:
    """A proxy that may tunnel to the TLS registry's port (tinyproxy refuses other CONNECT ports)."""
    with ForwardProxy(tmp_path / "proxy", connect_ports=(int(secure_registry.host.rsplit(":", 1)[1]),)) as started:
        yield started


def _through(cli: ToolRunner, proxy_url: str, no_proxy: str = "") -> ToolRunner:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY", "all_proxy"):
        cli.env.pop(name, None)
    cli.env.update({"HTTP_PROXY": proxy_url, "HTTPS_PROXY": proxy_url, "NO_PROXY": no_proxy})
    return cli


def test_a_plain_http_registry_through_the_proxy(
    wasm_oci: ToolRunner, registry: RegistryServer, proxy: ForwardProxy, tmp_path: Path
) -> None:
    cli = _through(wasm_oci, proxy.url)
    ref = f"{registry.host}/proxied/hello:1"
    cli("push", HELLO, ref, "--plain-http")
    cli("pull", ref, "--plain-http", "-o", tmp_path / "out.wasm")
    assert (tmp_path / "out.wasm").read_bytes() == HELLO.read_bytes()
    seen = proxy.requests()
    base = f"http://{registry.host}/v2/proxied/hello"
    assert f"PUT {base}/manifests/1 HTTP/1.1" in seen, seen
    assert any(line.startswith(f"GET {base}/blobs/sha256:") for line in seen), seen


def test_a_tls_registry_through_a_connect_tunnel(
    wasm_oci: ToolRunner, secure_registry: RegistryServer, proxy: ForwardProxy, tmp_path: Path
) -> None:
    reg = secure_registry
    assert reg.ca_cert and reg.username and reg.password
    cli = _through(wasm_oci, proxy.url)
    ref = f"{reg.host}/proxied/hello:1"
    login = ["--ca-file", str(reg.ca_cert), "-u", reg.username, "-p", reg.password]
    cli("push", HELLO, ref, *login)
    cli("pull", ref, *login, "-o", tmp_path / "out.wasm")
    assert (tmp_path / "out.wasm").read_bytes() == HELLO.read_bytes()
    seen = proxy.requests()
    assert seen and all(line.startswith(f"CONNECT {reg.host} HTTP/1.") for line in seen), seen  # the requests went inside TLS


def test_no_proxy_bypasses_the_proxy(wasm_oci: ToolRunner, registry: RegistryServer, proxy: ForwardProxy) -> None:
    cli = _through(wasm_oci, proxy.url, no_proxy="localhost,127.0.0.1")
    cli("push", HELLO, f"{registry.host}/direct/hello:1", "--plain-http")
    assert proxy.requests() == []


def test_proxy_credentials_from_the_proxy_url(wasm_oci: ToolRunner, registry: RegistryServer, tmp_path: Path) -> None:
    """user:password in the proxy URL go to the proxy (Proxy-Authorization), never to the registry.
    Wrong ones: tinyproxy answers 401 (not 407) as if it were the registry, which is then
    reported as the registry's refusal: one line, the authentication exit status."""
    with ForwardProxy(tmp_path / "auth-proxy", credentials=("alice", "s3cret")) as guarded:
        ref = f"{registry.host}/guarded/hello:1"
        _through(wasm_oci, guarded.url)("push", HELLO, ref, "--plain-http")
        assert f"PUT http://{registry.host}/v2/guarded/hello/manifests/1 HTTP/1.1" in guarded.requests()
        refused = _through(wasm_oci, guarded.url.replace("s3cret", "wrong"))("pull", ref, "--plain-http", check=False)
    assert refused.returncode == 7, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and refused.stderr.startswith("wasm-oci: error: "), refused.stderr


def test_a_proxy_that_is_down_fails_fast_with_one_line(wasm_oci: ToolRunner, registry: RegistryServer, tmp_path: Path) -> None:
    with ForwardProxy(tmp_path / "gone") as gone:
        url = gone.url
    began = time.monotonic()
    result = _through(wasm_oci, url)("pull", f"{registry.host}/any/hello:1", "--plain-http", check=False)
    assert time.monotonic() - began < 10
    assert result.returncode == 8, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("wasm-oci: error: "), result.stderr


def test_an_https_proxy_url_is_refused_in_one_line(wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    result = _through(wasm_oci, "https://127.0.0.1:9")("pull", f"{registry.host}/any/hello:1", "--plain-http", check=False)
    assert result.returncode == 9, result.stderr
    assert result.stderr.strip() == f"wasm-oci: error: proxy https://127.0.0.1 for {registry.host}: only http:// proxies are supported"


def test_a_proxy_that_refuses_the_tunnel_is_named(wasm_oci: ToolRunner, secure_registry: RegistryServer, tmp_path: Path) -> None:
    """tinyproxy opens CONNECT tunnels to its ConnectPorts only: to the registry's port it answers 403."""
    with ForwardProxy(tmp_path / "strict", connect_ports=(443,)) as strict:
        result = _through(wasm_oci, strict.url)(
            "pull", f"{secure_registry.host}/any/hello:1", "--ca-file", secure_registry.ca_cert, check=False
        )
    assert result.returncode == 8, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"wasm-oci: error: the HTTP proxy would not open a tunnel to {secure_registry.host} (403 Access violation)"
    ]


class _DemandingProxy(BaseHTTPRequestHandler):
    """A proxy that wants credentials it is never given (tinyproxy answers 401 instead of 407)."""

    def do_GET(self) -> None:
        self.send_response(407)
        self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_407_names_the_proxy_not_the_registry(wasm_oci: ToolRunner, registry: RegistryServer) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DemandingProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = _through(wasm_oci, f"http://127.0.0.1:{server.server_address[1]}")(
            "pull", f"{registry.host}/any/hello:1", "--plain-http", check=False
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 9, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"wasm-oci: error: the HTTP proxy refused to forward to {registry.host} (407 Proxy Authentication Required): "
        "give its credentials in the proxy URL (http://USER:PASSWORD@HOST:PORT)"
    ]
