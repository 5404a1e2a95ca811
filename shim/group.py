"""Which daemon a task belongs to, and where that daemon's files live.

A group is named by what its tasks share (see config.py `group`) plus the containerd it
serves and the configuration text, so tasks under different settings never share a daemon.
Its directory under `run_dir` holds the lock `start` takes, the control socket and the task
sockets; the name is a hash because unix socket paths are limited to 108 bytes.
"""

from __future__ import annotations

import os

from wasm_oci.shim.config import ShimConfig

SANDBOX_ID = b'"io.kubernetes.cri.sandbox-id"'
LOCK, CONTROL, CONFIG = "lock", "control.sock", "config.toml"

try:  # the C module behind hashlib, without OpenSSL's ~2 ms import
    from _sha256 import sha256  # type: ignore[import-not-found]  # no stub: CPython's own
except ImportError:  # pragma: no cover - other Pythons
    from hashlib import sha256


def sandbox_id(spec: bytes) -> str:
    """The pod sandbox id CRI writes in the OCI spec's annotations, "" without one.

    A byte search, not a JSON parse (json costs ~7 ms to import): containerd writes the spec
    with Go's encoding/json, where a quote inside a string is always escaped, so an unescaped
    `"key"` followed by a colon can only be an object key.
    """
    at = spec.find(SANDBOX_ID)
    if at < 0:
        return ""
    rest = spec[at + len(SANDBOX_ID) :].lstrip(b" \t\r\n")
    if not rest.startswith(b":"):
        return ""
    rest = rest[1:].lstrip(b" \t\r\n")
    if not rest.startswith(b'"'):
        return ""
    end = rest.find(b'"', 1)
    return rest[1:end].decode() if end > 0 else ""


def name(config: ShimConfig, namespace: str, task_id: str, spec: bytes) -> str:
    """The group a task joins: "namespace/NS", "pod/NS/SANDBOX" or "task/NS/ID"."""
    if config.group in ("auto", "pod"):
        sandbox = sandbox_id(spec)
        if sandbox:
            return f"pod/{namespace}/{sandbox}"
        if config.group == "pod":
            return f"task/{namespace}/{task_id}"
    if config.group == "task":
        return f"task/{namespace}/{task_id}"
    return f"namespace/{namespace}"


def directory(config: ShimConfig, containerd_address: str, group: str) -> str:
    key = "\0".join((containerd_address, group, config.text)).encode()
    return os.path.join(config.run_dir, sha256(key).hexdigest()[:16])
