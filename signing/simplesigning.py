"""cosign's legacy signature layout: a "simple signing" payload per signature, in a manifest tagged `sha256-<hex>.sig`.

What `cosign sign --new-bundle-format=false` writes (seen with cosign 3.1 on distribution 2.8):
- the payload `{"critical":{"identity":{"docker-reference":REPO},"image":{"docker-manifest-digest":DIGEST},
  "type":"cosign container image signature"},"optional":null}` is a layer of media type
  `application/vnd.dev.cosign.simplesigning.v1+json`;
- the base64 ECDSA signature over SHA-256(payload) is that layer's `dev.cosignproject.cosign/signature`
  annotation; every further signature of the same digest is one more layer of the same manifest;
- the config is an OCI image config listing the layers as diff_ids, with zero timestamps.
The layer may also carry `dev.wasm-oci.key-hint` (this project's, cosign ignores it): the signer's
sigstore key hint, so that a failed check can tell "another key" from "altered payload".
"""

from __future__ import annotations

import json
from typing import Any

from wasm_oci.errors import MalformedContent
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.descriptor import Descriptor

LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE = "dev.cosignproject.cosign/signature"
KEY_HINT = "dev.wasm-oci.key-hint"
TYPE = "cosign container image signature"
_ZERO_TIME = "0001-01-01T00:00:00Z"


def tag(digest: str) -> str:
    return digest.replace(":", "-", 1) + ".sig"


def payload(identity: str, digest: str) -> bytes:
    doc = {
        "critical": {"identity": {"docker-reference": identity}, "image": {"docker-manifest-digest": digest}, "type": TYPE},
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def claimed_digest(data: bytes) -> str:
    """The manifest digest a payload vouches for; ValueError if it is not a cosign simple-signing payload."""
    try:
        critical = documents.load(data, "simple-signing payload")["critical"]
    except MalformedContent as exc:
        raise ValueError(str(exc)) from None
    except KeyError:
        raise ValueError("malformed simple-signing payload (no `critical`)") from None
    try:
        if critical.get("type") != TYPE:
            raise ValueError(f"payload type {str(critical.get('type'))[:80]!r}, expected {TYPE!r}")
        return str(critical["image"]["docker-manifest-digest"])
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed simple-signing payload ({exc.__class__.__name__})") from None


def signature_manifest(layers: list[Descriptor]) -> tuple[bytes, bytes]:
    """(config, manifest) bytes for a `.sig` manifest holding `layers`, in the shape cosign writes."""
    config: dict[str, Any] = {
        "architecture": "",
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "config": {},
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mediatypes.OCI_IMAGE_CONFIG, config_bytes).to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    return config_bytes, json.dumps(manifest, separators=(",", ":")).encode()
