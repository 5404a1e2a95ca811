"""Read a Wasm artifact back: find the wasm layer and the world, whichever tool pushed it.

Accepted: this project's image and CNCF artifact layouts, oras' plain artifacts (empty or
unknown config) and runwasi's layer types; an index is narrowed to its wasm platform.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from wasm_oci.errors import UnsupportedArtifact
from wasm_oci.oci import mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.package import LABEL_PREFIX
from wasm_oci.oci.target import Target, fetch_bytes


@dataclass(frozen=True)
class WasmArtifact:
    manifest: Descriptor
    manifest_json: dict[str, Any]
    config: Descriptor
    config_json: dict[str, Any]
    layer: Descriptor
    format: str
    os: str | None = None
    architecture: str | None = None
    created: str | None = None
    target: str | None = None
    imports: tuple[str, ...] = ()
    exports: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    env: tuple[str, ...] = field(default_factory=tuple)

    @property
    def total_size(self) -> int:
        return self.manifest.size + self.config.size + sum(int(l["size"]) for l in self.manifest_json.get("layers", []))


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise UnsupportedArtifact(f"{what} is not JSON") from None
    if not isinstance(doc, dict):
        raise UnsupportedArtifact(f"{what} is not a JSON object")
    return doc


def _pick_platform(index: dict[str, Any], digest: str) -> Descriptor:
    manifests = [Descriptor.from_json(m) for m in index.get("manifests", [])]
    for desc in manifests:
        platform = desc.platform or {}
        if platform.get("architecture") == "wasm" or platform.get("os") in ("wasip1", "wasip2", "wasi"):
            return desc
    raise UnsupportedArtifact(f"index {digest} has no wasm platform (architecture wasm / os wasip1, wasip2)")


def read(target: Target, desc: Descriptor) -> WasmArtifact:
    if desc.media_type in mediatypes.INDEXES:
        index = _load(fetch_bytes(target, desc, f"index {desc.digest}"), f"index {desc.digest}")
        desc = _pick_platform(index, desc.digest)
    if desc.media_type not in mediatypes.MANIFESTS:
        raise UnsupportedArtifact(f"{desc.digest} is a {desc.media_type}, not an image manifest")
    manifest = _load(fetch_bytes(target, desc, f"manifest {desc.digest}"), f"manifest {desc.digest}")
    try:
        config = Descriptor.from_json(manifest["config"])
        layers = [Descriptor.from_json(layer) for layer in manifest.get("layers", [])]
    except KeyError:
        raise UnsupportedArtifact(f"manifest {desc.digest} has no config") from None
    wasm_layers = [layer for layer in layers if layer.media_type in mediatypes.WASM_LAYERS]
    if not wasm_layers:
        found = ", ".join(sorted({layer.media_type for layer in layers})) or "none"
        raise UnsupportedArtifact(f"manifest {desc.digest} has no wasm layer (layer media types: {found})")
    config_json: dict[str, Any] = {}
    if config.media_type in mediatypes.CONFIGS:
        config_json = _load(fetch_bytes(target, config, f"config {config.digest}"), f"config {config.digest}")
    common: dict[str, Any] = dict(
        manifest=desc,
        manifest_json=manifest,
        config=config,
        config_json=config_json,
        layer=wasm_layers[0],
        os=config_json.get("os"),
        architecture=config_json.get("architecture"),
        created=config_json.get("created") or (manifest.get("annotations") or {}).get("org.opencontainers.image.created"),
    )
    if config.media_type == mediatypes.WASM_CONFIG:
        component = config_json.get("component") or {}
        return WasmArtifact(
            format="artifact",
            target=component.get("target"),
            imports=tuple(component.get("imports") or ()),
            exports=tuple(component.get("exports") or ()),
            **common,
        )
    if config.media_type == mediatypes.OCI_IMAGE_CONFIG:
        image = config_json.get("config") or {}
        labels = image.get("Labels") or {}
        split = lambda key: tuple(x for x in labels.get(LABEL_PREFIX + key, "").split(",") if x)  # noqa: E731
        return WasmArtifact(
            format="image",
            target=labels.get(LABEL_PREFIX + "target"),
            imports=split("imports"),
            exports=split("exports"),
            entrypoint=tuple(image.get("Entrypoint") or ()),
            env=tuple(image.get("Env") or ()),
            **common,
        )
    return WasmArtifact(format="oras-artifact", **common)
