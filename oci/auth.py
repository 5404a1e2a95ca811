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
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from wasm_oci.errors import AuthenticationError, StoreError
from wasm_oci.oci.layout import atomic_write

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
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise AuthenticationError(f"{self.path} is not valid JSON: {exc}") from None

    def credentials(self, host: str) -> Credentials | None:
        config = self._load()
        helper = config.get("credHelpers", {}).get(host)
        if helper:
            return self._from_helper(helper, host)
        auths = config.get("auths", {})
        for key in _host_keys(host):
            entry = auths.get(key)
            if entry:
                return self._from_entry(entry, host)
        if config.get("credsStore"):
            return self._from_helper(config["credsStore"], host)
        return None

    def _from_entry(self, entry: dict[str, Any], host: str) -> Credentials:
        if entry.get("identitytoken"):
            return Credentials(identity_token=entry["identitytoken"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except ValueError:
                raise AuthenticationError(f"{self.path}: the auth entry for {host} is not base64 user:password") from None
            return Credentials(user, password)
        return Credentials(entry.get("username", ""), entry.get("password", ""))

    def _from_helper(self, helper: str, host: str) -> Credentials | None:
        out = _run_helper(helper, "get", host)
        if not out:
            return None
        data = json.loads(out)
        if data.get("Username") == "<token>":
            return Credentials(identity_token=data.get("Secret", ""))
        return Credentials(data.get("Username", ""), data.get("Secret", ""))

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
    def parse(cls, header: str) -> "Challenge":
        scheme, _, rest = header.strip().partition(" ")
        return cls(scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest)))


class Authenticator:
    """Answers 401 challenges for one registry host; tokens are cached by scope."""

    def __init__(self, host: str, session: requests.Session, creds: Credentials | None, verify: bool | str) -> None:
        self.host = host
        self.session = session
        self.creds = creds
        self.verify = verify
        self._tokens: dict[str, str] = {}
        self.scheme: str | None = None

    def header_for(self, scope: str) -> dict[str, str]:
        """The Authorization header to send pre-emptively, once a challenge has told us the scheme."""
        if self.scheme == "basic" and self.creds:
            return {"Authorization": "Basic " + self._basic()}
        token = self._tokens.get(scope)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def answer(self, response: requests.Response, scope: str) -> dict[str, str]:
        """Given a 401, return headers to retry with, or raise AuthenticationError."""
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
            token = self._fetch_token(challenge, challenge.params.get("scope") or scope)
            self._tokens[scope] = token
            return {"Authorization": f"Bearer {token}"}
        raise AuthenticationError(f"{self.host} asked for unsupported authentication {header!r}")

    def _basic(self) -> str:
        assert self.creds is not None
        return base64.b64encode(f"{self.creds.username}:{self.creds.password}".encode()).decode()

    def _fetch_token(self, challenge: Challenge, scope: str) -> str:
        realm = challenge.params.get("realm")
        if not realm:
            raise AuthenticationError(f"{self.host} sent a Bearer challenge without a realm")
        params = {"service": challenge.params.get("service", "")}
        if scope:
            params["scope"] = scope
        try:
            if self.creds and self.creds.identity_token:
                reply = self.session.post(
                    realm,
                    data={**params, "grant_type": "refresh_token", "refresh_token": self.creds.identity_token, "client_id": "wasm-oci"},
                    verify=self.verify,
                    timeout=30,
                )
            else:
                auth = (self.creds.username, self.creds.password) if self.creds and self.creds.username else None
                reply = self.session.get(realm, params=params, auth=auth, verify=self.verify, timeout=30)
        except requests.RequestException as exc:
            raise AuthenticationError(f"token service {realm} for {self.host} unreachable: {exc.__class__.__name__}") from None
        if reply.status_code in (401, 403):
            raise AuthenticationError(f"{self.host}: credentials rejected by token service {realm}")
        if reply.status_code != 200:
            raise AuthenticationError(f"{self.host}: token service {realm} answered HTTP {reply.status_code}")
        try:
            body = reply.json()
            return str(body.get("token") or body["access_token"])
        except (ValueError, KeyError):
            raise AuthenticationError(f"{self.host}: token service {realm} returned no token") from None
