"""Read a Wasm artifact back: find the wasm layer and the world, whichever tool pushed it.

Accepted: this project's image and CNCF artifact layouts, oras' plain artifacts (empty or
unknown config) and runwasi's layer types; an index is narrowed to its wasm platform. Every
document is parsed by `documents` first, and every config field used here is type-checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wasm_oci.errors import MalformedContent, UnsupportedArtifact
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.package import LABEL_PREFIX, TRIGGER_LABEL, TRIGGERS
from wasm_oci.oci.target import ReadOnlyTarget, fetch_bytes


@dataclass(frozen=True)
class WasmArtifact:
    manifest: Descriptor
    manifest_json: dict[str, Any]
    layers: tuple[Descriptor, ...]
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
    trigger: str = "command"
    """How the shim runs it: `command` once, `http` a fresh instance per request (see `package`)."""

    @property
    def total_size(self) -> int:
        return self.manifest.size + self.config.size + sum(layer.size for layer in self.layers)


def _pick_platform(index: documents.Index, digest: str) -> Descriptor:
    for desc in index.manifests:
        platform = desc.platform or {}
        if platform.get("architecture") == "wasm" or platform.get("os") in ("wasip1", "wasip2", "wasi"):
            return desc
    raise UnsupportedArtifact(f"index {digest} has no wasm platform (architecture wasm / os wasip1, wasip2)")


def _trigger(found: dict[str, str], where: str, default: str = "command") -> str:
    """The trigger `found` (labels or annotations) names; a value this version does not know is
    refused rather than run as something it was not packaged to be."""
    value = found.get(TRIGGER_LABEL, default)
    if value not in TRIGGERS:
        raise MalformedContent(f"{where}: `{TRIGGER_LABEL}` must be one of {', '.join(TRIGGERS)}, not {value[:40]!r}")
    return value


def read(target: ReadOnlyTarget, desc: Descriptor) -> WasmArtifact:
    if desc.media_type in mediatypes.INDEXES:
        what = f"index {desc.digest}"
        desc = _pick_platform(documents.index(fetch_bytes(target, desc, what), what), desc.digest)
    if desc.media_type not in mediatypes.MANIFESTS:
        raise UnsupportedArtifact(f"{desc.digest} is a {desc.media_type}, not an image manifest")
    what = f"manifest {desc.digest}"
    data = fetch_bytes(target, desc, what)
    parsed = documents.manifest(data, what)
    manifest = documents.load(data, what)
    config, layers = parsed.config, parsed.layers
    wasm_layers = [layer for layer in layers if layer.media_type in mediatypes.WASM_LAYERS]
    if not wasm_layers:
        found = ", ".join(sorted({layer.media_type for layer in layers})) or "none"
        raise UnsupportedArtifact(f"manifest {desc.digest} has no wasm layer (layer media types: {found})")
    config_json: dict[str, Any] = {}
    if config.media_type in mediatypes.CONFIGS:
        config_json = documents.load(fetch_bytes(target, config, f"config {config.digest}"), f"config {config.digest}")
    what = f"config {config.digest}"
    common: dict[str, Any] = {
        "manifest": desc,
        "manifest_json": manifest,
        "layers": layers,
        "config": config,
        "config_json": config_json,
        "layer": wasm_layers[0],
        "os": documents.text(config_json, "os", what),
        "architecture": documents.text(config_json, "architecture", what),
        "created": documents.text(config_json, "created", what) or parsed.annotations.get("org.opencontainers.image.created"),
        "trigger": _trigger(parsed.annotations, f"manifest {desc.digest}: annotations"),
    }
    if config.media_type == mediatypes.WASM_CONFIG:
        component = documents.section(config_json, "component", what)
        return WasmArtifact(
            format="artifact",
            target=documents.text(component, "target", what),
            imports=documents.strings(component, "imports", what),
            exports=documents.strings(component, "exports", what),
            **common,
        )
    if config.media_type == mediatypes.OCI_IMAGE_CONFIG:
        image = documents.section(config_json, "config", what)
        labels = documents.string_map(image, "Labels", what)

        def split(key: str) -> tuple[str, ...]:
            return tuple(x for x in labels.get(LABEL_PREFIX + key, "").split(",") if x)

        common["trigger"] = _trigger(labels, f"{what}: Labels", common["trigger"])  # the label, if any, wins
        return WasmArtifact(
            format="image",
            target=labels.get(LABEL_PREFIX + "target"),
            imports=split("imports"),
            exports=split("exports"),
            entrypoint=documents.strings(image, "Entrypoint", what),
            env=documents.strings(image, "Env", what),
            **common,
        )
    return WasmArtifact(format="oras-artifact", **common)
