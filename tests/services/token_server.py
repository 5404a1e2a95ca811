"""A tiny Docker-registry token server (the bearer flow) on loopback, for distribution 2.8.

Clients get a 401 from the registry with `WWW-Authenticate: Bearer realm=...,service=...,
scope=...`, then ask this server for a token: GET with Basic credentials (Docker/oras) or
POST form `grant_type=password|refresh_token` (OAuth2, containerd). Valid credentials get an
ES256 JWT whose `x5c` header carries a cert chaining to the registry's `rootcertbundle`, with
every requested action granted; wrong credentials get 401.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .pki import IssuedCert

TOKEN_PATH = "/token"
TOKEN_TTL_SECONDS = 300


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def parse_scopes(values: list[str]) -> list[dict[str, Any]]:
    """`repository:name:pull,push` scopes (space-separated or repeated) into JWT access claims."""
    access = []
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")  # names may hold ':' (host:port/...)
            if kind and name:
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
    return access


@dataclass
class TokenServer:
    """Issues registry JWTs signed by `signer` to `username`/`password` only."""

    signer: IssuedCert
    username: str
    password: str
    service: str
    issuer: str
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _refresh_tokens: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def realm(self) -> str:
        return f"http://{self.host}:{self.port}{TOKEN_PATH}"

    def start(self) -> TokenServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                owner._handle(self, parse_qs(urlsplit(self.path).query))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                owner._handle(self, form)

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="token-server", daemon=True
        )  # quick shutdown()
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def _authenticate(self, handler: BaseHTTPRequestHandler, form: dict[str, list[str]]) -> str | None:
        """The user name if the request proves it, else None."""
        grant = (form.get("grant_type") or [""])[0]
        if grant == "password":
            user, pw = (form.get("username") or [""])[0], (form.get("password") or [""])[0]
            return user if (user, pw) == (self.username, self.password) else None
        if grant == "refresh_token":
            return self._refresh_tokens.get((form.get("refresh_token") or [""])[0])
        header = handler.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return None
        try:
            user, _, pw = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user if (user, pw) == (self.username, self.password) else None

    def _handle(self, handler: BaseHTTPRequestHandler, form: dict[str, list[str]]) -> None:
        path = urlsplit(handler.path).path
        user = self._authenticate(handler, form) if path == TOKEN_PATH else None
        grant_type = form.get("grant_type", [""])[0] or None
        self.requests.append({"method": handler.command, "scope": form.get("scope", []), "user": user, "grant_type": grant_type})
        if path != TOKEN_PATH:
            return self._reply(handler, 404, {"error": "not found"})
        if user is None:
            return self._reply(
                handler, 401, {"error": "invalid credentials"}, {"WWW-Authenticate": 'Basic realm="wasm-oci test token server"'}
            )
        service = (form.get("service") or [self.service])[0]
        token = self.issue(user, service, parse_scopes(form.get("scope", [])))
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": TOKEN_TTL_SECONDS,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if grant_type in ("password", "refresh_token") or form.get("offline_token") == ["true"]:
            refresh = secrets.token_urlsafe(24)
            self._refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
        self._reply(handler, 200, body)
        return None

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    def issue(self, subject: str, audience: str, access: list[dict[str, Any]]) -> str:
        """A compact ES256 JWT as distribution 2.8 verifies it (x5c chain, iss, aud, exp/nbf)."""
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "ES256",
            "x5c": [base64.b64encode(self.signer.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + TOKEN_TTL_SECONDS,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        assert isinstance(self.signer.key, ec.EllipticCurvePrivateKey)
        der = self.signer.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)  # JWS wants raw r||s, 32 bytes each for P-256
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
