"""Registry credentials the way docker, oras and crane find them, and the challenge/response flow.

Credentials come from the Docker config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
`credHelpers[host]`, then `auths[host]`, then `credsStore`. Challenges follow the distribution spec:
`Basic` gets the credentials directly, `Bearer` exchanges them (or nothing, for anonymous pulls)
for a scoped token at the realm, cached per scope.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from wasm_oci.errors import AuthenticationError, MalformedContent, StoreError
from wasm_oci.files import atomic_write
from wasm_oci.oci import documents

if TYPE_CHECKING:
    from wasm_oci.oci.transport import Response, Transport

MAX_TOKEN_RESPONSE = 1 << 20
MAX_TOKEN = 64 << 10
_TOKEN = re.compile(r"[\x21-\x7e]+")
"""Visible ASCII: a token goes into a header line as it is."""

_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""  # an OAuth2 refresh token (docker's `identitytoken`)


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _host_keys(host: str) -> list[str]:
    """The spellings docker and friends have used as `auths` keys for one registry."""
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        keys.append("https://index.docker.io/v1/")
    return keys


def _run_helper(helper: str, action: str, payload: str) -> str:
    import subprocess  # ~4 ms to import, for the few configs that name a credential helper

    binary = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([binary, action], input=payload.encode(), capture_output=True, timeout=60)
    except FileNotFoundError:
        raise AuthenticationError(f"credential helper {binary!r} named in {docker_config_path()} is not on PATH") from None
    if proc.returncode != 0:
        message = (proc.stdout or proc.stderr).decode(errors="replace").strip()
        if action == "get" and "credentials not found" in message.lower():
            return ""
        raise AuthenticationError(f"credential helper {binary} {action} failed: {message}")
    return proc.stdout.decode()


@dataclass
class DockerConfig:
    path: Path = field(default_factory=docker_config_path)

    def _load(self) -> dict[str, Any]:
        """The config, with the fields read here checked (the rest is docker's business)."""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(documents.MAX_DOCUMENT + 1)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise AuthenticationError(f"cannot read {self.path}: {exc.strerror}") from None
        try:
            config = documents.load(data, str(self.path))
            for key in ("credHelpers", "auths"):
                section = documents.section(config, key, str(self.path))
                if key == "credHelpers":
                    documents.string_map(config, key, str(self.path))
                elif not all(isinstance(entry, dict) for entry in section.values()):
                    raise MalformedContent(f"{self.path}: each `auths` entry must be an object")
            documents.text(config, "credsStore", str(self.path))
        except MalformedContent as exc:
            raise AuthenticationError(str(exc)) from None
        return config

    def credentials(self, host: str) -> Credentials | None:
        config = self._load()
        helper = (config.get("credHelpers") or {}).get(host)
        if helper:
            return self._from_helper(helper, host)
        auths = config.get("auths") or {}
        for key in _host_keys(host):
            entry = auths.get(key)
            if entry:
                return self._from_entry(entry, host)
        if config.get("credsStore"):
            return self._from_helper(config["credsStore"], host)
        return None

    def _from_entry(self, entry: dict[str, Any], host: str) -> Credentials:
        what = f"{self.path}: the auths entry for {host}"
        try:
            fields = {key: documents.text(entry, key, what) or "" for key in ("identitytoken", "auth", "username", "password")}
        except MalformedContent as exc:
            raise AuthenticationError(str(exc)) from None
        if fields["identitytoken"]:
            return Credentials(identity_token=fields["identitytoken"])
        if fields["auth"]:
            try:
                user, _, password = base64.b64decode(fields["auth"], validate=True).decode().partition(":")
            except ValueError:
                raise AuthenticationError(f"{what} is not base64 user:password") from None
            return Credentials(user, password)
        return Credentials(fields["username"], fields["password"])

    def _from_helper(self, helper: str, host: str) -> Credentials | None:
        out = _run_helper(helper, "get", host)
        if not out:
            return None
        what = f"the answer of docker-credential-{helper}"
        try:
            data = documents.load(out.encode(), what)
            user, secret = documents.text(data, "Username", what) or "", documents.text(data, "Secret", what) or ""
        except MalformedContent as exc:
            raise AuthenticationError(str(exc)) from None
        if user == "<token>":
            return Credentials(identity_token=secret)
        return Credentials(user, secret)

    def store(self, host: str, creds: Credentials) -> None:
        config = self._load()
        helper = config.get("credHelpers", {}).get(host) or config.get("credsStore")
        if helper:
            _run_helper(helper, "store", json.dumps({"ServerURL": host, "Username": creds.username, "Secret": creds.password}))
            return
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        config.setdefault("auths", {})[host] = {"auth": token}
        self._save(config)

    def erase(self, host: str) -> bool:
        config = self._load()
        helper = config.get("credHelpers", {}).get(host) or config.get("credsStore")
        if helper:
            _run_helper(helper, "erase", host)
            return True
        auths = config.get("auths", {})
        found = [k for k in _host_keys(host) if k in auths]
        for key in found:
            del auths[key]
        if found:
            self._save(config)
        return bool(found)

    def _save(self, config: dict[str, Any]) -> None:
        try:
            atomic_write(self.path, [json.dumps(config, indent="\t").encode()], mode=0o600)
        except OSError as exc:
            raise StoreError(f"cannot write {self.path}: {exc.strerror}") from None


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str]

    @classmethod
    def parse(cls, header: str) -> Challenge:
        scheme, _, rest = header.strip().partition(" ")
        return cls(scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest)))


class Authenticator:
    """Answers 401 challenges for one registry host; tokens are cached by scope.

    Parallel transfers share it: the first to be challenged for a scope fetches the token while the
    others wait for it, so the token service sees one request per scope, not one per blob."""

    def __init__(self, host: str, transport: Transport, creds: Credentials | None, secure: bool) -> None:
        self.host = host
        self.transport = transport
        self.creds = creds
        self.secure = secure
        self._tokens: dict[str, str] = {}
        self._fetching = threading.Lock()
        self.scheme: str | None = None

    def header_for(self, scope: str) -> dict[str, str]:
        """The Authorization header to send pre-emptively, once a challenge has told us the scheme."""
        if self.scheme == "basic" and self.creds:
            return {"Authorization": "Basic " + self._basic()}
        token = self._tokens.get(scope)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def answer(self, response: Response, scope: str, rejected: str | None = None) -> dict[str, str]:
        """Given a 401 to a request sent with the Authorization header `rejected` (None: without one),
        return headers to retry with, or raise AuthenticationError."""
        header = response.headers.get("WWW-Authenticate", "")
        challenge = Challenge.parse(header)
        self.scheme = challenge.scheme
        if challenge.scheme == "basic":
            if not self.creds or not (self.creds.username or self.creds.password):
                raise AuthenticationError(
                    f"{self.host} requires authentication: run 'wasm-oci login {self.host}' or pass --username/--password"
                )
            return {"Authorization": "Basic " + self._basic()}
        if challenge.scheme == "bearer":
            with self._fetching:
                token = self._tokens.get(scope)
                if token is None or f"Bearer {token}" == rejected:  # none yet, or the one just refused
                    token = self._fetch_token(challenge, challenge.params.get("scope") or scope)
                    self._tokens[scope] = token
            return {"Authorization": f"Bearer {token}"}
        raise AuthenticationError(f"{self.host} asked for unsupported authentication {header[:120]!r}")

    def _basic(self) -> str:
        assert self.creds is not None
        return base64.b64encode(f"{self.creds.username}:{self.creds.password}".encode()).decode()

    def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        """A token from the challenge's realm: the one host besides the registry that is given
        the credentials (as docker does), and only over https when the registry uses TLS."""
        realm = challenge.params.get("realm", "")
        scheme = urlsplit(realm).scheme
        if scheme not in ("http", "https") or not urlsplit(realm).hostname:
            raise AuthenticationError(f"{self.host} sent a Bearer challenge without a usable realm ({realm[:120]!r})")
        if self.secure and scheme != "https":
            raise AuthenticationError(f"{self.host} names a token service over plain HTTP ({realm[:120]}): refusing to send credentials")
        params = {"service": challenge.params.get("service", "")}
        if scope:
            params["scope"] = scope
        if self.creds and self.creds.identity_token:
            form = {**params, "grant_type": "refresh_token", "refresh_token": self.creds.identity_token, "client_id": "wasm-oci"}
            reply = self.transport.request("POST", realm, {"Content-Type": "application/x-www-form-urlencoded"}, urlencode(form))
        else:
            headers = {"Authorization": "Basic " + self._basic()} if self.creds and self.creds.username else {}
            reply = self.transport.request("GET", realm + ("&" if "?" in realm else "?") + urlencode(params), headers)
        with reply:
            if reply.status_code in (401, 403):
                raise AuthenticationError(f"{self.host}: credentials rejected by token service {realm[:120]}")
            if reply.status_code != 200:
                raise AuthenticationError(f"{self.host}: token service {realm[:120]} answered HTTP {reply.status_code}")
            what = f"token response of {realm[:120]}"
            body = documents.load(self.transport.read(reply, MAX_TOKEN_RESPONSE, what), what)
        token = documents.text(body, "token", what) or documents.text(body, "access_token", what)
        if not token or len(token) > MAX_TOKEN or not _TOKEN.fullmatch(token):
            raise AuthenticationError(f"{self.host}: token service {realm[:120]} returned no usable token")
        return token
