"""Which daemon a task belongs to, and where that daemon's files live.

A group is named by what its tasks share (see config.py `group`) plus the containerd it
serves and the configuration text, so tasks under different settings never share a daemon.
Its directory under `run_dir` holds the lock `start` takes, the control socket and the task
sockets; the name is a hash because unix socket paths are limited to 108 bytes.

The sh launcher (launcher.py) cannot hash nor parse TOML, so it finds a group through a
route: a file Python `start` writes next to the bundle (in containerd's per-namespace state
dir, which sh knows without any configuration) named by the pod, holding the exact inputs
the group was computed from and the group's directory. There the daemon keeps its door
(`open`: which live process accepts tasks, and its answer) and `reserved/`, the
reservations sh takes (lifetime.py `Door`).
"""

from __future__ import annotations

import os

from wasm_oci.shim.config import ShimConfig

SANDBOX_ID = b'"io.kubernetes.cri.sandbox-id"'
LOCK, CONTROL, CONFIG = "lock", "control.sock", "config.toml"
OPEN, RESERVED, ROUTES = "open", "reserved", "routes"
ROUTE_PREFIX = ".wasm-oci-route-"
"""A hidden file, not a directory: containerd takes the directories of its state dir for bundles."""
SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")

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


def is_safe(word: str) -> bool:
    """containerd's identifier alphabet, the only words the sh launcher puts in file names."""
    return bool(word) and set(word) <= SAFE


def route_path(bundle: str, spec: bytes) -> str:
    """Where the sh launcher looks for the route of a task with this bundle and spec ("" if
    it never takes the fast path for it: a sandbox id outside the identifier alphabet)."""
    sandbox = sandbox_id(spec)
    if sandbox and not is_safe(sandbox):
        return ""
    return os.path.join(os.path.dirname(bundle), ROUTE_PREFIX + (f"pod-{sandbox}" if sandbox else "none"))


def reservation(namespace: str, task_id: str) -> str:
    """The file name of a reservation the sh launcher takes ("@" is outside identifiers)."""
    return f"{namespace}@{task_id}"
