"""Collect the signatures attached to a manifest digest, in both cosign layouts, without judging them yet.

Anything that cannot be read (bad JSON, content that does not match its digest) becomes a
`Candidate` with a `problem`, so a check can report it instead of silently skipping it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Literal

from wasm_oci.errors import DigestMismatch, MalformedContent, NotFound
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.reference import Reference
from wasm_oci.oci.target import Target, fetch_bytes
from wasm_oci.signing import referrers, sigstore_bundle, simplesigning

Layout = Literal["bundle", "legacy"]
MAX_REFERRERS = 64  # bounds the work a hostile index can cause


@dataclass(frozen=True)
class Candidate:
    layout: Layout
    location: str  # where it is, for messages: the referrer manifest or the .sig tag and layer
    signed_data: bytes = b""  # exactly what the signature covers
    signatures: tuple[bytes, ...] = ()
    key_hint: str | None = None  # unauthenticated: only used to explain failures
    claims: tuple[str, ...] = ()  # digests the payload vouches for
    problem: str | None = None  # why the payload could not be read
    tampered: bool = False  # content did not match its digest


def _unreadable(layout: Layout, location: str, exc: Exception) -> Candidate:
    return Candidate(layout, location, problem=str(exc), tampered=isinstance(exc, DigestMismatch))


def _is_signature_entry(desc: Descriptor) -> bool:
    """Index entries that may be cosign signature bundles; cosign itself lists its own with the empty type."""
    if desc.artifact_type not in (sigstore_bundle.MEDIA_TYPE, mediatypes.OCI_EMPTY, None):
        return False
    return desc.annotations.get(sigstore_bundle.PREDICATE_ANNOTATION, sigstore_bundle.PREDICATE) == sigstore_bundle.PREDICATE


def _bundle_candidate(target: Target, desc: Descriptor) -> Candidate | None:
    location = f"referrer {desc.digest}"
    try:
        manifest = documents.manifest(fetch_bytes(target, desc, location), location)
        if manifest.artifact_type != sigstore_bundle.MEDIA_TYPE:
            return None
        if manifest.annotations.get(sigstore_bundle.PREDICATE_ANNOTATION, sigstore_bundle.PREDICATE) != sigstore_bundle.PREDICATE:
            return None  # an attestation, not a signature
        layer = next((layer for layer in manifest.layers if layer.media_type == sigstore_bundle.MEDIA_TYPE), None)
        if layer is None:
            raise ValueError("referrer has no bundle layer")
        envelope = sigstore_bundle.read(fetch_bytes(target, layer, f"bundle {layer.digest}"))
    except (ValueError, MalformedContent, DigestMismatch, NotFound) as exc:
        return _unreadable("bundle", location, exc)
    try:
        claims = sigstore_bundle.claimed_digests(envelope)
    except ValueError as exc:
        return Candidate("bundle", location, envelope.signed_data, envelope.signatures, envelope.key_hint, problem=str(exc))
    return Candidate("bundle", location, envelope.signed_data, envelope.signatures, envelope.key_hint, claims)


def _bundles(target: Target, ref: Reference, digest: str) -> list[Candidate]:
    entries = [d for d in referrers.list_referrers(target, ref, digest) if _is_signature_entry(d)]
    found = (_bundle_candidate(target, desc) for desc in entries[:MAX_REFERRERS])
    return [c for c in found if c is not None]


def _legacy_candidate(target: Target, tag: str, number: int, layer: Descriptor) -> Candidate:
    location = f"tag {tag} layer {number}"
    hint = layer.annotations.get(simplesigning.KEY_HINT)
    try:
        signature = base64.b64decode(layer.annotations.get(simplesigning.SIGNATURE, ""), validate=True)
        payload = fetch_bytes(target, layer, f"simple-signing payload {layer.digest}")
    except (binascii.Error, DigestMismatch, NotFound, MalformedContent) as exc:
        return _unreadable("legacy", location, exc)
    try:
        claims: tuple[str, ...] = (simplesigning.claimed_digest(payload),)
    except ValueError as exc:
        return Candidate("legacy", location, payload, (signature,), hint, problem=str(exc))
    return Candidate("legacy", location, payload, (signature,), hint, claims)


def _legacy(target: Target, ref: Reference, digest: str) -> list[Candidate]:
    tag = simplesigning.tag(digest)
    try:
        found = referrers.fetch_tagged(target, ref, tag)
    except DigestMismatch as exc:
        return [_unreadable("legacy", f"tag {tag}", exc)]
    if found is None:
        return []
    try:
        layers = documents.manifest(found[1], f"tag {tag}").layers
    except MalformedContent as exc:
        return [_unreadable("legacy", f"tag {tag}", exc)]
    signed = [layer for layer in layers if layer.media_type == simplesigning.LAYER]
    return [_legacy_candidate(target, tag, n, layer) for n, layer in enumerate(signed[:MAX_REFERRERS], 1)]


def find(target: Target, ref: Reference, digest: str) -> list[Candidate]:
    """Every cosign signature attached to `digest`: bundle referrers first, then the legacy `.sig` tag."""
    return _bundles(target, ref, digest) + _legacy(target, ref, digest)
