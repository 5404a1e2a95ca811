"""cosign's current signature layout: a sigstore bundle v0.3 with a DSSE envelope, attached as an OCI 1.1 referrer.

What `cosign sign --key` 3.1 writes (seen against distribution 2.8):
- an in-toto Statement v1 whose one subject is `{"digest": {"sha256": HEX}}` (no name), predicateType
  `https://sigstore.dev/cosign/sign/v1`, predicate `{}`; DSSE payloadType `application/vnd.in-toto+json`;
- one ECDSA signature over DSSE's pre-authentication encoding (PAE) of type and payload;
- `verificationMaterial.publicKey.hint` = base64 SHA-256 of the key's DER; no tlog entries offline;
- an OCI manifest: artifactType = the bundle type, the empty config, one bundle layer, `subject`,
  annotations `dev.sigstore.bundle.content` and `.predicateType` and `org.opencontainers.image.created`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from wasm_oci.errors import MalformedContent
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.signing.keys import PrivateKey

MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1")
PREDICATE = "https://sigstore.dev/cosign/sign/v1"
CONTENT = "dev.sigstore.bundle.content"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CREATED = "org.opencontainers.image.created"
EMPTY_CONFIG = b"{}"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def build(key: PrivateKey, digest: str) -> bytes:
    algorithm, hexdigest = digest.split(":", 1)
    statement = {
        "_type": STATEMENT_TYPES[0],
        "subject": [{"digest": {algorithm: hexdigest}, "annotations": {}}],
        "predicateType": PREDICATE,
        "predicate": {},
    }
    payload = json.dumps(statement, separators=(",", ":")).encode()
    bundle = {
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.public().hint}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": IN_TOTO,
            "signatures": [{"sig": base64.b64encode(key.sign(pae(IN_TOTO, payload))).decode()}],
        },
    }
    return json.dumps(bundle, separators=(",", ":")).encode()


def manifest(bundle_layer: Descriptor, subject: Descriptor, created: datetime | None = None) -> tuple[Descriptor, bytes]:
    """The referrer manifest, and its descriptor as a referrers index lists it (artifactType, annotations)."""
    moment = (created or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    annotations = {CONTENT: "dsse-envelope", PREDICATE_ANNOTATION: PREDICATE, CREATED: moment}
    doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "artifactType": MEDIA_TYPE,
        "config": Descriptor.for_bytes(mediatypes.OCI_EMPTY, EMPTY_CONFIG).to_json(),
        "layers": [bundle_layer.to_json()],
        "subject": Descriptor(subject.media_type, subject.digest, subject.size).to_json(),
        "annotations": annotations,
    }
    data = json.dumps(doc, separators=(",", ":")).encode()
    return Descriptor.for_bytes(mediatypes.OCI_MANIFEST, data, artifact_type=MEDIA_TYPE, annotations=annotations), data


@dataclass(frozen=True)
class Envelope:
    """A bundle's DSSE envelope, decoded but not yet trusted."""

    payload: bytes
    payload_type: str
    signatures: tuple[bytes, ...]
    key_hint: str | None

    @property
    def signed_data(self) -> bytes:
        return pae(self.payload_type, self.payload)


def read(data: bytes) -> Envelope:
    """Decode a bundle; ValueError names what is wrong (message-signature bundles are not image signatures)."""
    doc = _json(data, "bundle")
    if doc.get("mediaType") != MEDIA_TYPE:
        raise ValueError(f"bundle media type {str(doc.get('mediaType'))[:80]!r}, expected {MEDIA_TYPE}")
    if "dsseEnvelope" not in doc:
        raise ValueError("bundle holds no DSSE envelope (a message-signature bundle is not an image signature)")
    try:
        envelope = doc["dsseEnvelope"]
        hint = ((doc.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")
        return Envelope(
            payload=base64.b64decode(envelope["payload"], validate=True),
            payload_type=str(envelope["payloadType"]),
            signatures=tuple(base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]),
            key_hint=str(hint) if hint else None,
        )
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"malformed bundle ({exc.__class__.__name__}: {str(exc)[:160]})") from None


def claimed_digests(envelope: Envelope) -> tuple[str, ...]:
    """The digests a cosign signature statement vouches for; ValueError if it is not one."""
    if envelope.payload_type != IN_TOTO:
        raise ValueError(f"DSSE payload type {envelope.payload_type!r}, expected {IN_TOTO}")
    statement = _json(envelope.payload, "in-toto statement")
    if statement.get("_type") not in STATEMENT_TYPES:
        raise ValueError(f"payload is not an in-toto statement ({str(statement.get('_type'))[:80]!r})")
    if statement.get("predicateType") != PREDICATE:
        raise ValueError(f"statement predicate {str(statement.get('predicateType'))[:80]!r} is not a cosign signature")
    try:
        return tuple(f"{algo}:{value}" for subject in statement["subject"] for algo, value in subject["digest"].items())
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed in-toto statement ({exc.__class__.__name__})") from None


def _json(data: bytes, what: str) -> dict[str, Any]:
    """Signature documents are judged, not trusted: a wrong shape is a ValueError naming it."""
    try:
        return documents.load(data, what)
    except MalformedContent as exc:
        raise ValueError(str(exc)) from None
