"""Judge found signatures against trusted keys, and say in one line why an artifact is not trusted.

A signature counts only if a trusted key verifies it AND its payload vouches for the digest
being checked. Failures are told apart for the user: unsigned, signed by another key, a valid
signature over another digest, or a payload altered after signing (the key hint names a
trusted key but the signature no longer matches; legacy signatures made by cosign carry no
hint, so there "another key" and "altered" cannot be told apart).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from wasm_oci.errors import SignatureError
from wasm_oci.signing import referrers, simplesigning
from wasm_oci.signing.discover import Candidate
from wasm_oci.signing.keys import PublicKey

Status = Literal["verified", "tampered", "other-digest", "other-key", "unverified", "malformed", "unchecked"]
# The most telling failure leads the message.
_SEVERITY: tuple[Status, ...] = ("tampered", "other-digest", "other-key", "unverified", "malformed", "unchecked")
_LONG_HEX = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{52}\b")


def _short(text: str) -> str:
    """Digests cut to 12 hex digits, so a one-line message stays readable; JSON keeps them whole."""
    return _LONG_HEX.sub(r"\1…", text)


@dataclass(frozen=True)
class Finding:
    candidate: Candidate
    status: Status
    key: PublicKey | None  # the trusted key that verified it, or that its hint names
    detail: str

    def to_json(self) -> dict[str, object]:
        return {
            "layout": self.candidate.layout,
            "location": self.candidate.location,
            "status": self.status,
            "keyHint": self.candidate.key_hint,
            "verifiedBy": self.key.name if self.key and self.status == "verified" else None,
            "digests": list(self.candidate.claims),
            "detail": self.detail,
        }


def judge(candidate: Candidate, digest: str, keys: Sequence[PublicKey]) -> Finding:
    c = candidate
    where = f"{c.layout} signature ({_short(c.location)})"
    hinted = next((k for k in keys if c.key_hint and k.hint == c.key_hint), None)
    if c.tampered:
        return Finding(c, "tampered", hinted, f"tampered: {where}: {c.problem}")
    if not keys:
        return Finding(c, "unchecked", None, f"{where}: no key given to check it")
    signer = next((k for k in keys if any(k.verifies(sig, c.signed_data) for sig in c.signatures)), None)
    if signer is None:
        if hinted:
            return Finding(
                c, "tampered", hinted, f"tampered payload: {where} names key {hinted} but its signature does not match its payload"
            )
        if c.problem:
            return Finding(c, "malformed", None, f"malformed {where}: {c.problem}")
        if c.key_hint:
            return Finding(c, "other-key", None, f"signed by another key: {where} is by key {c.key_hint[:12]}, not a trusted one")
        return Finding(c, "unverified", None, f"signed by another key or altered: {where} does not verify with a trusted key")
    if c.problem:
        return Finding(c, "malformed", signer, f"malformed {where}: signed by {signer} but {c.problem}")
    if digest not in c.claims:
        return Finding(
            c, "other-digest", signer, f"signature over another digest: {where} by {signer} covers {', '.join(c.claims)}, not {digest}"
        )
    return Finding(c, "verified", signer, f"{where} verified with {signer}")


@dataclass(frozen=True)
class Verification:
    """The outcome of checking one artifact: every signature found and how it fared."""

    reference: str
    digest: str
    findings: tuple[Finding, ...]
    keys: tuple[PublicKey, ...]

    @property
    def verified(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status == "verified")

    def failure(self) -> str | None:
        """None when a trusted signature covers the digest, else the one-line reason."""
        if self.verified:
            return None
        subject = f"{self.reference}@{self.digest}"
        if not self.keys:
            return f"{subject}: no trusted key to verify its signatures with"
        if not self.findings:
            return (
                f"{subject} is not signed: no cosign signature found (no sigstore bundle referrer, "
                f"no tag {referrers.fallback_tag(self.digest)} index entry, no tag {simplesigning.tag(self.digest)})"
            )
        ordered = sorted(self.findings, key=lambda f: _SEVERITY.index(f.status))
        trusted = ", ".join(str(k) for k in self.keys)
        return f"{subject}: no valid signature by {trusted}: " + "; ".join(f.detail for f in ordered[:3])

    def require(self) -> Verification:
        reason = self.failure()
        if reason:
            raise SignatureError(reason)
        return self


def check(reference: str, digest: str, candidates: Sequence[Candidate], keys: Sequence[PublicKey]) -> Verification:
    return Verification(reference, digest, tuple(judge(c, digest, keys) for c in candidates), tuple(keys))
