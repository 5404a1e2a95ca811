"""Turn a .wasm file into an OCI manifest, config and layer, in one of two layouts.

`image` (default): a standard OCI image config (os wasip1/wasip2, architecture wasm, no rootfs
diff_ids) with one `application/wasm` layer. containerd only creates containers from OCI/Docker
image configs, so this is the format the shim runs.
`artifact`: the CNCF TAG Runtime Wasm OCI artifact layout (config `application/vnd.wasm.config.v0+json`)
that wkg, wash and other Wasm registries' tools write.
Output is a pure function of the inputs and `created`, so builds are reproducible.

The trigger says how the shim runs the image: `command` runs it once; `http` serves it, a fresh
instance per request (CGI-style). It is recorded only when `http`, so a command's config and
digest are what they were before triggers existed.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from wasm_oci.errors import UsageError
from wasm_oci.oci import mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.wasminfo import WasmInfo

Format = Literal["image", "artifact"]
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
LABEL_PREFIX = "dev.wasm-oci.component."
Trigger = Literal["command", "http"]
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)
"""The triggers, in one place: the CLI's choices and what `artifact.read` accepts."""
TRIGGER_LABEL = "dev.wasm-oci.trigger"
"""Config label (image format) or manifest annotation (artifact format; read in either) naming a non-default trigger."""
HTTP_PORT = 8080
"""The port the shim serves an `http` trigger on by default; the image config exposes it."""


@dataclass(frozen=True)
class PackageOptions:
    format: Format = "image"
    created: datetime | None = None
    author: str | None = None
    env: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    trigger: Trigger = "command"


@dataclass(frozen=True)
class Packaged:
    manifest: Descriptor
    manifest_bytes: bytes
    config: Descriptor
    config_bytes: bytes
    layer: Descriptor
    info: WasmInfo


def creation_time(explicit: datetime | None = None) -> datetime:
    """`--created` wins, then SOURCE_DATE_EPOCH (reproducible-builds.org), then now."""
    if explicit:
        return explicit.astimezone(UTC) if explicit.tzinfo else explicit.replace(tzinfo=UTC)
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return datetime.fromtimestamp(int(epoch), UTC)
        except (ValueError, OverflowError, OSError):
            raise UsageError(f"SOURCE_DATE_EPOCH={epoch[:40]!r} is not a whole number of seconds since 1970") from None
    return datetime.now(UTC).replace(microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def layer_title(filename: str) -> str:
    base = os.path.basename(filename) or "app.wasm"
    return re.sub(r"[^A-Za-z0-9._-]", "_", base)


def _check_trigger(info: WasmInfo, filename: str, opts: PackageOptions) -> PackageOptions:
    """The options with the trigger the component's world implies (a wasi:http proxy can only be
    served: it is an HTTP function by its world); refuse what the shim could not serve (an HTTP
    function needs a command's entry point, or the proxy world's handler) and a label or
    annotation contradicting the trigger."""
    if opts.trigger not in TRIGGERS:
        raise UsageError(f"unknown trigger {opts.trigger!r}: expected one of {', '.join(TRIGGERS)}")
    if info.is_proxy:
        opts = replace(opts, trigger="http")
    for where, pairs in (("label", opts.labels), ("annotation", opts.annotations)):
        if pairs.get(TRIGGER_LABEL, opts.trigger) != opts.trigger:
            raise UsageError(f"{where} {TRIGGER_LABEL}={pairs[TRIGGER_LABEL]} contradicts trigger {opts.trigger}; set it with --trigger")
    if opts.trigger != "http":
        return opts
    if info.kind == "component" and not any(name.startswith(("wasi:cli/run@", "wasi:http/incoming-handler@")) for name in info.exports):
        exports = ", ".join(info.exports) or "none"
        raise UsageError(
            f"{filename}: trigger http needs a runnable command or a wasi:http proxy, but this component exports neither"
            f" wasi:cli/run nor wasi:http/incoming-handler (exports: {exports})"
        )
    if info.kind == "module" and "_start" not in info.exports:
        raise UsageError(f"{filename}: trigger http needs a runnable command, but this module exports no _start")
    return opts


def _image_config(info: WasmInfo, title: str, created: str, opts: PackageOptions) -> dict[str, Any]:
    labels = dict(opts.labels)
    if opts.trigger != "command":
        labels[TRIGGER_LABEL] = opts.trigger
    if info.target:
        labels[LABEL_PREFIX + "target"] = info.target
    labels[LABEL_PREFIX + "kind"] = info.kind
    labels[LABEL_PREFIX + "imports"] = ",".join(info.imports)
    labels[LABEL_PREFIX + "exports"] = ",".join(info.exports)
    config: dict[str, Any] = {"created": created}
    if opts.author:
        config["author"] = opts.author
    image: dict[str, Any] = {"Entrypoint": [f"/{title}"], "Env": list(opts.env), "Labels": dict(sorted(labels.items()))}
    if opts.trigger == "http":
        image["ExposedPorts"] = {f"{HTTP_PORT}/tcp": {}}
    config.update({"architecture": "wasm", "os": info.os, "config": image, "rootfs": {"type": "layers", "diff_ids": []}})
    return config


def _artifact_config(info: WasmInfo, layer: Descriptor, created: str, opts: PackageOptions) -> dict[str, Any]:
    config: dict[str, Any] = {"created": created}
    if opts.author:
        config["author"] = opts.author
    config.update({"architecture": "wasm", "os": info.os, "layerDigests": [layer.digest]})
    if info.kind == "component":
        config["component"] = {"exports": list(info.exports), "imports": list(info.imports), "target": info.target}
    return config


def package(wasm: bytes, info: WasmInfo, filename: str, opts: PackageOptions = PackageOptions()) -> Packaged:
    opts = _check_trigger(info, filename, opts)
    created = _rfc3339(creation_time(opts.created))
    title = layer_title(filename)
    layer = Descriptor.for_bytes(mediatypes.WASM_LAYER, wasm, annotations={TITLE: title})
    if opts.format == "image":
        config_type, config_doc = mediatypes.OCI_IMAGE_CONFIG, _image_config(info, title, created, opts)
    else:
        config_type, config_doc = mediatypes.WASM_CONFIG, _artifact_config(info, layer, created, opts)
    config_bytes = _canonical(config_doc)
    config = Descriptor.for_bytes(config_type, config_bytes)
    annotations = {CREATED: created, **opts.annotations}
    if opts.format == "artifact" and opts.trigger != "command":
        annotations[TRIGGER_LABEL] = opts.trigger  # the artifact config has no labels
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json()],
        "annotations": annotations,
    }
    manifest_bytes = _canonical(manifest_doc)
    manifest = Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest_bytes)
    return Packaged(manifest, manifest_bytes, config, config_bytes, layer, info)
