"""Sign a manifest digest and store the signature next to it, in either or both cosign layouts.

Blobs go first and the manifest (or tag) that makes a signature visible last, so a failed
upload never leaves a signature pointing at missing content.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from wasm_oci.errors import MalformedContent, UnsupportedArtifact
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.reference import Reference, RegistryReference
from wasm_oci.oci.target import Target
from wasm_oci.signing import referrers, sigstore_bundle, simplesigning
from wasm_oci.signing.discover import Layout
from wasm_oci.signing.keys import PrivateKey

LAYOUTS: tuple[Layout, ...] = ("bundle", "legacy")


@dataclass(frozen=True)
class Attached:
    layout: Layout
    manifest: Descriptor  # the signature manifest
    where: str  # how it is found: "referrers API", "tag sha256-<hex>" or "tag sha256-<hex>.sig"

    def to_json(self) -> dict[str, str]:
        return {"layout": self.layout, "manifest": self.manifest.digest, "where": self.where}


def identity(ref: Reference) -> str:
    """The `docker-reference` a legacy payload names: the repository, as cosign writes it (informational)."""
    return f"{ref.registry}/{ref.repository}" if isinstance(ref, RegistryReference) else str(dataclasses.replace(ref, digest=None))


def _existing_layers(target: Target, ref: Reference, tag: str) -> list[Descriptor]:
    """The signatures already under the `.sig` tag, kept when one is added."""
    existing = referrers.fetch_tagged(target, ref, tag)
    if existing is None:
        return []
    try:
        return list(documents.manifest(existing[1], f"tag {tag}").layers)
    except MalformedContent:
        raise UnsupportedArtifact(f"tag {tag} in {ref} holds something that is not a cosign signature manifest") from None


def _attach_bundle(target: Target, ref: Reference, subject: Descriptor, key: PrivateKey) -> Attached:
    data = sigstore_bundle.build(key, subject.digest)
    layer = Descriptor.for_bytes(sigstore_bundle.MEDIA_TYPE, data)
    config = Descriptor.for_bytes(mediatypes.OCI_EMPTY, sigstore_bundle.EMPTY_CONFIG)
    target.push_blob(layer, [data])
    target.push_blob(config, [sigstore_bundle.EMPTY_CONFIG])
    manifest, manifest_bytes = sigstore_bundle.manifest(layer, subject)
    return Attached("bundle", manifest, referrers.attach(target, ref, manifest, manifest_bytes, subject.digest))


def _attach_legacy(target: Target, ref: Reference, subject: Descriptor, key: PrivateKey) -> Attached:
    tag = simplesigning.tag(subject.digest)
    payload = simplesigning.payload(identity(ref), subject.digest)
    annotations = {simplesigning.SIGNATURE: base64.b64encode(key.sign(payload)).decode(), simplesigning.KEY_HINT: key.public().hint}
    layer = Descriptor.for_bytes(simplesigning.LAYER, payload, annotations=annotations)
    layers = [d for d in _existing_layers(target, ref, tag) if (d.digest, d.annotations) != (layer.digest, layer.annotations)] + [layer]
    config_bytes, manifest_bytes = simplesigning.signature_manifest(layers)
    target.push_blob(layer, [payload])
    target.push_blob(Descriptor.for_bytes(mediatypes.OCI_IMAGE_CONFIG, config_bytes), [config_bytes])
    manifest = Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest_bytes)
    target.push_manifest(manifest, manifest_bytes, tag)
    return Attached("legacy", manifest, f"tag {tag}")


def sign(target: Target, ref: Reference, subject: Descriptor, key: PrivateKey, layouts: Sequence[Layout] = LAYOUTS) -> list[Attached]:
    """Sign `subject` (a manifest already in `target`) with `key`, once per requested layout."""
    writers = {"bundle": _attach_bundle, "legacy": _attach_legacy}
    return [writers[layout](target, ref, subject, key) for layout in layouts]
