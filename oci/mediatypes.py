"""Media types this project writes and the ones other Wasm tools write that it reads."""

from __future__ import annotations

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
WASM_CONFIG = "application/vnd.wasm.config.v0+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

WASM_LAYER = "application/wasm"
WASM_LAYERS = frozenset(
    {
        WASM_LAYER,
        "application/vnd.wasm.component.v1+wasm",
        "application/vnd.w3c.wasm.module.v1+wasm",
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        "application/vnd.wasm.content.layer.v1+wasm",
    }
)

MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
CONFIGS = frozenset({OCI_IMAGE_CONFIG, WASM_CONFIG})
