"""The shim's configuration: a TOML file, chosen per container or per host.

Where it comes from, first found wins:
  1. the runtime options containerd passes (`runtimeoptions.v1.Options`: `ConfigPath` or
     `ConfigBody`, set by CRI's runtime `options` table or `ctr run --runtime-config-path`);
  2. the file named by $WASM_OCI_SHIM_CONFIG;
  3. /etc/wasm-oci/shim.toml;
  4. the defaults below.

Keys (all optional):
  group      = "auto"     which tasks share one shim daemon: "auto" (the pod when the spec
                          names one, else the namespace), "namespace", "pod" (per pod, else
                          per task) or "task" (a daemon per task)
  protocol   = "ttrpc"    how containerd talks to the daemon: "ttrpc" or "grpc" (2.x only)
  linger     = 10.0       seconds an idle daemon waits for new tasks before it exits
  run_dir    = "/run/containerd/wasm-oci"   daemon sockets, locks and records
  policy     = "PATH"     trust policy file (default: wasm-oci's usual lookup)
  cache_dir  = "PATH"     precompiled-code cache (default: wasm-oci's)
  plain_http = ["HOST"]   registries reached over plain HTTP when fetching signatures

Tasks only share a daemon when their configuration text is the same. Stdlib-only and no
dataclasses (see flags.py); tomllib is imported only when there is a file to read.
"""

from __future__ import annotations

import os

from wasm_oci.errors import ShimConfigError
from wasm_oci.shim import wire

ENV_CONFIG = "WASM_OCI_SHIM_CONFIG"
SYSTEM_CONFIG = "/etc/wasm-oci/shim.toml"
OPTIONS_TYPE = "runtimeoptions.v1.Options"
GROUPS = ("auto", "namespace", "pod", "task")
PROTOCOLS = ("ttrpc", "grpc")


class ShimConfig:
    __slots__ = ("cache_dir", "group", "linger", "origin", "plain_http", "policy", "protocol", "run_dir", "text")

    def __init__(self, text: str = "", origin: str = "defaults") -> None:
        self.group = "auto"
        self.protocol = "ttrpc"
        self.linger = 10.0
        self.run_dir = "/run/containerd/wasm-oci"
        self.policy: str | None = None
        self.cache_dir: str | None = None
        self.plain_http: tuple[str, ...] = ()
        self.text = text
        """The source text: part of the daemon's identity."""
        self.origin = origin


def _choice(origin: str, key: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ShimConfigError(f"{origin}: {key} must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)


def _path(origin: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ShimConfigError(f"{origin}: {key} must be an absolute path, not {value!r}")
    return value


def parse(text: str, origin: str) -> ShimConfig:
    config = ShimConfig(text, origin)
    if not text.strip():
        return config
    import tomllib

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ShimConfigError(f"{origin}: not valid TOML: {exc}") from None
    for key, value in doc.items():
        if key == "group":
            config.group = _choice(origin, key, value, GROUPS)
        elif key == "protocol":
            config.protocol = _choice(origin, key, value, PROTOCOLS)
        elif key == "linger":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ShimConfigError(f"{origin}: linger must be a number of seconds >= 0, not {value!r}")
            config.linger = float(value)
        elif key in ("run_dir", "policy", "cache_dir"):
            setattr(config, key, _path(origin, key, value))
        elif key == "plain_http":
            if not isinstance(value, list) or not all(isinstance(host, str) for host in value):
                raise ShimConfigError(f"{origin}: plain_http must be a list of registry hosts")
            config.plain_http = tuple(value)
        else:
            raise ShimConfigError(f"{origin}: unknown key {key!r} (known: group, protocol, linger, run_dir, policy, cache_dir, plain_http)")
    return config


def _read(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as exc:
        raise ShimConfigError(f"{what} {path}: {exc.strerror}") from None


def runtime_options(data: bytes) -> tuple[str, str]:
    """(config_path, config_body) from the marshalled Any containerd writes on `start`'s
    stdin; empty for no options or options of another type (runc's, for instance)."""
    if not data:
        return "", ""
    try:
        any_fields = dict(wire.fields(data))
        type_url = any_fields.get(1, b"")
        if not isinstance(type_url, bytes) or not type_url.decode().endswith(OPTIONS_TYPE):
            return "", ""
        value = any_fields.get(2, b"")
        options = dict(wire.fields(value)) if isinstance(value, bytes) else {}
        path, body = options.get(2, b""), options.get(3, b"")
        assert isinstance(path, bytes) and isinstance(body, bytes)
        return path.decode(), body.decode()
    except (ValueError, AssertionError, UnicodeDecodeError):
        raise ShimConfigError("runtime options: not a marshalled runtimeoptions.v1.Options") from None


def load(options: bytes) -> ShimConfig:
    """The configuration in force for a task started with these runtime options."""
    path, body = runtime_options(options)
    if body:
        return parse(body, "runtime options ConfigBody")
    if path:
        return parse(_read(path, "runtime options ConfigPath"), path)
    if env := os.environ.get(ENV_CONFIG):
        return parse(_read(env, f"${ENV_CONFIG}"), env)
    if os.path.exists(SYSTEM_CONFIG):
        return parse(_read(SYSTEM_CONFIG, "shim config"), SYSTEM_CONFIG)
    return ShimConfig()
