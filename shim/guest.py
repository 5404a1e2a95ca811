"""What a task runs: its Wasm, found, checked and compiled once.

Two places a guest comes from:
  - the rootfs, when argv[0] names a `.wasm` file in it (an ordinary image that carries a
    Wasm file, like any other executable); symlinks resolve inside the rootfs;
  - the image's wasm layer, read from containerd's content store (images this project
    pushes: no filesystem layers, so the rootfs is empty).
Either way a configured trust policy judges the container's image first. Programs are kept
per image digest (a repeat Create costs two small containerd calls) and per layer digest in
the engine, whose disk cache survives daemon restarts; concurrent first Creates of one image
compile it once.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from wasm_oci.engine import Engine, Program
from wasm_oci.engine.proxy import ProxyHost, is_proxy
from wasm_oci.errors import UnsupportedArtifact
from wasm_oci.oci import artifact
from wasm_oci.oci import digest as digests
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.target import MAX_WASM, fetch_bytes
from wasm_oci.shim.admission import TrustGate
from wasm_oci.shim.image import Containerd
from wasm_oci.shim.runtime_spec import TaskSpec

MAX_SYMLINKS = 40
IMAGES_REMEMBERED = 64


@dataclass(frozen=True)
class Guest:
    program: Program | ProxyHost
    """A wasi:cli command or module, or a wasi:http proxy component (only ever served)."""
    origin: str
    """Where it came from, for the log: "rootfs /app.wasm" or "image NAME layer DIGEST"."""
    reused: bool = False
    """Taken from the per-image memo: no content read, no load."""
    trigger: str = "command"
    """What the image declared (its `dev.wasm-oci.trigger` label): run once, or serve HTTP."""

    def describe(self) -> str:
        if isinstance(self.program, ProxyHost):
            return f"{self.origin} (a wasi:http proxy{', reused' if self.reused else ''})"
        how = "reused" if self.reused else f"{self.program.cache}, {self.program.load_seconds * 1e3:.1f} ms"
        return f"{self.origin} (program {how})"


def resolve_in(root: Path, path: str) -> Path | None:
    """`path` as the container sees it, resolved inside `root` (absolute symlinks are relative
    to `root`, `..` stops at it); None when it does not name a regular file."""
    parts = [part for part in path.split("/") if part not in ("", ".")]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                return None
            link = os.readlink(candidate)
            if link.startswith("/"):
                resolved = []
            parts = [p for p in link.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    target = root.joinpath(*resolved)
    return target if target.is_file() else None


class Guests:
    def __init__(self, engine: Engine, containerd: Containerd, trust: TrustGate) -> None:
        self.engine, self.containerd, self.trust = engine, containerd, trust
        self._by_image: OrderedDict[str, tuple[Program | ProxyHost, str]] = OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def load(self, namespace: str, container_id: str, spec: TaskSpec, rootfs: Path) -> Guest:
        image, subject = "", None
        if self.trust.in_force():
            image = self.containerd.image_of(namespace, container_id)
            subject = self.containerd.target_of(namespace, image) if image else None
            self.trust.check(image, subject)
        entry = spec.args[0]
        if entry.endswith(".wasm"):
            path = resolve_in(rootfs, entry if entry.startswith("/") else f"{spec.cwd}/{entry}")
            if path is not None:
                return self._from_file(path, entry)
        if not image:
            image = self.containerd.image_of(namespace, container_id)
            if not image:
                raise UnsupportedArtifact(f"{entry} is not a .wasm file in the container's rootfs, and the container has no image")
            subject = self.containerd.target_of(namespace, image)
        assert subject is not None
        return self._from_image(namespace, image, subject, entry)

    def _once(self, key: str) -> threading.Lock:
        with self._lock:
            return self._loading.setdefault(key, threading.Lock())

    def _from_file(self, path: Path, entry: str) -> Guest:
        wasm = path.read_bytes()
        return Guest(self._load(wasm, digests.of_bytes(wasm), os.path.basename(entry)), f"rootfs {entry}")

    def _load(self, wasm: bytes, digest: str, name: str) -> Program | ProxyHost:
        return ProxyHost(self.engine, wasm, name) if is_proxy(wasm) else self.engine.load(wasm, digest, name=name)

    def _from_image(self, namespace: str, image: str, subject: Descriptor, entry: str) -> Guest:
        with self._once(subject.digest):
            with self._lock:
                known = self._by_image.get(subject.digest)
                if known is not None:
                    self._by_image.move_to_end(subject.digest)
            reused = known is not None
            if known is None:
                store = self.containerd.content(namespace)
                found = artifact.read(store, subject)
                wasm = fetch_bytes(store, found.layer, f"wasm layer of {image}", limit=MAX_WASM)
                known = self._load(wasm, found.layer.digest, os.path.basename(entry)), found.trigger
                with self._lock:
                    self._by_image[subject.digest] = known
                    while len(self._by_image) > IMAGES_REMEMBERED:
                        self._by_image.popitem(last=False)
        program, trigger = known
        return Guest(program, f"image {image} layer {program.digest}", reused, trigger)
