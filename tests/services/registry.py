"""A real CNCF distribution registry (`docker-registry serve`) on 127.0.0.1, in three flavours.

- plain: HTTP, no auth (`plain_registry`);
- TLS + htpasswd basic auth, cert from a throwaway CA (`tls_basic_registry`);
- HTTP + bearer token auth backed by the in-process TokenServer (`token_registry`).

Storage is the filesystem driver in a temp dir, with delete enabled and no blob cache, so
tests can look at (or corrupt, via `blob_path`) what a push stored.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .pki import IssuedCert, TestCA, bcrypt_hash, random_secret
from .process import free_port, spawn, stop_process, tail, wait_until
from .token_server import TokenServer
from .tools import find_tool

START_ATTEMPTS = 3  # a free port can be taken between free_port() and the registry's bind


@dataclass
class RegistryServer:
    """One registry process; `start()`/`stop()` or use it as a context manager."""

    workdir: Path
    tls: IssuedCert | None = None
    ca_cert: Path | None = None
    username: str | None = None
    password: str | None = None
    htpasswd: Path | None = None
    token_server: TokenServer | None = None
    port: int = 0
    startup_seconds: float = 0.0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, the registry part of a reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def plain_http(self) -> bool:
        return self.tls is None

    @property
    def storage_dir(self) -> Path:
        return self.workdir / "storage"

    @property
    def config_path(self) -> Path:
        return self.workdir / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.workdir / "registry.log"

    def blob_path(self, digest: str) -> Path:
        """On-disk file of a blob (`sha256:<hex>`) in the filesystem storage driver's layout."""
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64:
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.storage_dir / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting the test CA (None for plain HTTP)."""
        return ssl.create_default_context(cafile=str(self.ca_cert)) if self.tls else None

    def oras_flags(self, credentials: bool = True) -> list[str]:
        """Flags for `oras push/pull/...` to reach this registry (TLS/plain, credentials)."""
        flags = ["--plain-http"] if self.plain_http else ["--ca-file", str(self.ca_cert)]
        if credentials and self.username and self.password:
            flags += ["--username", self.username, "--password", self.password]
        return flags

    @property
    def hosts_dir(self) -> Path:
        """containerd hosts dir (`<host>/hosts.toml`) trusting `ca_cert`, written by start().

        ctr's `--tlscacert` needs `--local` (client-side pull); `--hosts-dir` also works
        through containerd's transfer service, as a real pull does.
        """
        return self.workdir / "certs.d"

    def _write_hosts_dir(self) -> None:
        host_dir = self.hosts_dir / self.host
        host_dir.mkdir(parents=True, exist_ok=True)
        lines = [f'server = "{self.base_url}"', f'[host."{self.base_url}"]', '  capabilities = ["pull", "resolve", "push"]']
        if self.ca_cert and self.tls:
            lines.append(f"  ca = {json.dumps(str(self.ca_cert))}")
        (host_dir / "hosts.toml").write_text("\n".join(lines) + "\n")

    def ctr_pull_flags(self, credentials: bool = True) -> list[str]:
        """Flags for `ctr images pull` to reach this registry."""
        flags = ["--plain-http"] if self.plain_http else ["--hosts-dir", str(self.hosts_dir)]
        if credentials and self.username and self.password:
            flags += ["--user", f"{self.username}:{self.password}"]
        return flags

    def config(self) -> dict[str, Any]:
        """distribution 2.8 configuration (written as JSON, which its YAML parser reads)."""
        http: dict[str, Any] = {"addr": self.host, "secret": random_secret(), "draintimeout": "1s"}
        if self.tls:
            http["tls"] = {"certificate": str(self.tls.cert_path), "key": str(self.tls.key_path)}
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.htpasswd:
            config["auth"] = {"htpasswd": {"realm": "wasm-oci-test", "path": str(self.htpasswd)}}
        elif self.token_server:
            ts = self.token_server
            config["auth"] = {
                "token": {
                    "realm": ts.realm,
                    "service": ts.service,
                    "issuer": ts.issuer,
                    "rootcertbundle": str(self.ca_cert),
                }
            }
        return config

    def _probe(self) -> bool | None:
        """True once *a registry* answers /v2/ on our port (401 counts: auth is on)."""
        request = urllib.request.Request(f"{self.base_url}/v2/")
        try:
            with urllib.request.urlopen(request, timeout=2, context=self.ssl_context()) as resp:
                headers = resp.headers
        except urllib.error.HTTPError as err:
            headers = err.headers
        except (urllib.error.URLError, OSError):
            return None
        return True if headers.get("Docker-Distribution-Api-Version") == "registry/2.0" else None

    def start(self, timeout: float = 20.0) -> RegistryServer:
        exe = find_tool("docker-registry")
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        if self.token_server:
            self.token_server.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        began = time.monotonic()
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            self.config_path.write_text(json.dumps(self.config(), indent=2))
            self.proc = spawn([exe, "serve", str(self.config_path)], self.log_path, env=env)
            try:
                wait_until(self._probe, timeout=timeout, what=f"registry on {self.host}", proc=self.proc, log_path=self.log_path)
                break
            except RuntimeError:
                stop_process(self.proc)
                lost_race = "address already in use" in tail(self.log_path)
                if not lost_race or attempt == START_ATTEMPTS:
                    self.stop()
                    raise
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - began
        self._write_hosts_dir()
        return self

    def stop(self) -> None:
        """Terminate the registry (SIGKILL fallback) and the token server; idempotent."""
        if self.proc is not None:
            stop_process(self.proc)
        if self.token_server is not None:
            self.token_server.stop()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def plain_registry(workdir: Path) -> RegistryServer:
    """HTTP, anonymous push and pull."""
    return RegistryServer(workdir=workdir)


def tls_basic_registry(workdir: Path, username: str = "wasm-tester") -> RegistryServer:
    """HTTPS with a test-CA cert (127.0.0.1, localhost, ::1) and htpasswd basic auth."""
    pki = workdir / "pki"
    ca = TestCA.create(pki)
    password = random_secret()
    htpasswd = workdir / "htpasswd"
    htpasswd.parent.mkdir(parents=True, exist_ok=True)
    htpasswd.write_text(f"{username}:{bcrypt_hash(password)}\n")
    return RegistryServer(
        workdir=workdir, tls=ca.issue_loopback_server(pki), ca_cert=ca.cert_path, username=username, password=password, htpasswd=htpasswd
    )


def token_registry(workdir: Path, username: str = "wasm-tester") -> RegistryServer:
    """HTTP registry whose auth is bearer tokens from an in-process token server."""
    ca = TestCA.create(workdir / "pki", name="wasm-oci test token CA")
    signer = ca.issue(workdir / "pki", "token-signer", "wasm-oci test token signer", server=False)
    token_server = TokenServer(
        signer=signer, username=username, password=random_secret(), service="wasm-oci-test-registry", issuer="wasm-oci-test-token-issuer"
    )
    return RegistryServer(
        workdir=workdir, ca_cert=ca.cert_path, username=username, password=token_server.password, token_server=token_server
    )
