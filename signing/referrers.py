"""Find and attach OCI 1.1 referrers: the registry's referrers API where it has one, else the referrers tag schema.

Tag schema (distribution-spec): an image index tagged `sha256-<hex>` lists the referrers of
`sha256:<hex>`, and whoever pushes a referrer to a registry without the API updates it.
distribution 2.8 has no API, and cosign then uses the tag; so does this module, also for OCI
layouts. Updating the index is read-modify-write: two signers racing can lose one entry.
"""

from __future__ import annotations

import json
from typing import Protocol, runtime_checkable

from wasm_oci.errors import MalformedContent, NotFound, UnsupportedArtifact
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.reference import Reference
from wasm_oci.oci.target import Target, fetch_bytes


@runtime_checkable
class ReferrersAPI(Protocol):
    """What a registry store adds for referrers (`RemoteRepository`); layouts have only the tag schema."""

    def referrers(self, digest: str) -> list[Descriptor] | None: ...

    def push_referrer(self, desc: Descriptor, data: bytes) -> bool: ...


def fallback_tag(digest: str) -> str:
    return digest.replace(":", "-", 1)


def fetch_tagged(target: Target, ref: Reference, tag: str) -> tuple[Descriptor, bytes] | None:
    """The manifest or index under a tag next to `ref` (in layouts, digest-named tags are
    store-wide), or None if there is no such tag."""
    try:
        desc = target.resolve(tag)
    except NotFound:
        return None
    return desc, fetch_bytes(target, desc, f"{tag} ({desc.digest})")


def _tag_index(target: Target, ref: Reference, digest: str) -> list[Descriptor]:
    found = fetch_tagged(target, ref, fallback_tag(digest))
    if found is None:
        return []
    desc, data = found
    try:
        if desc.media_type not in mediatypes.INDEXES:
            raise MalformedContent(desc.media_type)
        return list(documents.index(data, f"tag {fallback_tag(digest)}").manifests)
    except MalformedContent:
        raise UnsupportedArtifact(f"tag {fallback_tag(digest)} in {ref} is not a referrers index ({desc.media_type})") from None


def list_referrers(target: Target, ref: Reference, digest: str) -> list[Descriptor]:
    if isinstance(target, ReferrersAPI):
        listed = target.referrers(digest)
        if listed is not None:
            return listed
    return _tag_index(target, ref, digest)


def attach(target: Target, ref: Reference, desc: Descriptor, data: bytes, subject: str) -> str:
    """Push a referrer manifest of `subject` and make it findable; says how ("referrers API" or the tag)."""
    if isinstance(target, ReferrersAPI):
        if target.push_referrer(desc, data):
            return "referrers API"
    else:
        target.push_manifest(desc, data, None)
    tag = fallback_tag(subject)
    entries = [d for d in _tag_index(target, ref, subject) if d.digest != desc.digest] + [desc]
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [d.to_json() for d in entries]}
    index_bytes = json.dumps(index, separators=(",", ":")).encode()
    target.push_manifest(Descriptor.for_bytes(mediatypes.OCI_INDEX, index_bytes), index_bytes, tag)
    return f"tag {tag}"
