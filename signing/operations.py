"""Signing as a Python API; `wasm-oci keygen/sign/verify` are thin layers over these functions.

    from wasm_oci.signing import operations as signing
    key = signing.keygen(Path("release"), password="...")          # release.key / release.pub
    signing.sign("registry.example/acme/hello:1.0", signing.load_private_key(Path("release.key"), "..."))
    signing.verify("registry.example/acme/hello:1.0", [signing.load_public_key(Path("release.pub"))])

pull, run and the shim call `check_policy` (= `trust.check`) once, before writing anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wasm_oci.errors import StoreError, TrustConfigError
from wasm_oci.files import atomic_write
from wasm_oci.oci import reference as references
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.distribution import open_target
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.target import Target
from wasm_oci.signing import attach, keys, policy, trust
from wasm_oci.signing.attach import LAYOUTS, Attached
from wasm_oci.signing.discover import Layout
from wasm_oci.signing.keys import PrivateKey, PublicKey
from wasm_oci.signing.verify import Verification

__all__ = [
    "LAYOUTS",
    "SignResult",
    "check_policy",
    "keygen",
    "load_policy",
    "load_private_key",
    "load_public_key",
    "sign",
    "signatures",
    "verify",
]
load_private_key = keys.load_private
load_public_key = keys.load_public
load_policy = policy.load
check_policy = trust.check


@dataclass(frozen=True)
class SignResult:
    reference: str  # REPO[:TAG]@DIGEST of what was signed
    digest: str
    attached: tuple[Attached, ...]

    def to_json(self) -> dict[str, object]:
        return {"reference": self.reference, "digest": self.digest, "signatures": [a.to_json() for a in self.attached]}


def keygen(prefix: Path, password: str, force: bool = False) -> tuple[Path, Path]:
    """Write PREFIX.key (cosign's encrypted format, 0600) and PREFIX.pub; refuses to overwrite unless `force`."""
    private_path, public_path = prefix.with_name(prefix.name + ".key"), prefix.with_name(prefix.name + ".pub")
    existing = [p for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        raise StoreError(f"{existing[0]} already exists; pass --force to overwrite it")
    key = keys.generate(str(private_path))
    try:
        atomic_write(private_path, [key.to_pem(password)], mode=0o600)
        atomic_write(public_path, [key.public().pem()])
    except OSError as exc:
        raise StoreError(f"cannot write key pair {prefix}: {exc.strerror}") from None
    return private_path, public_path


def _open(ref_text: str, options: RegistryOptions | None) -> tuple[references.Reference, Target, Descriptor]:
    ref = references.parse(ref_text)
    target = open_target(ref, options)
    return ref, target, target.resolve(ref.reference)


def sign(ref_text: str, key: PrivateKey, options: RegistryOptions | None = None, layouts: Sequence[Layout] = LAYOUTS) -> SignResult:
    """Sign the manifest REF resolves to (by digest: a tag moved later stays unsigned)."""
    ref, target, subject = _open(ref_text, options)
    attached = attach.sign(target, ref, subject, key, layouts)
    return SignResult(str(ref.with_digest(subject.digest)), subject.digest, tuple(attached))


def _keys_for(ref: references.Reference, given: Sequence[PublicKey]) -> tuple[PublicKey, ...]:
    return tuple(given) or policy.load().rule_for(ref).keys


def signatures(ref_text: str, trusted: Sequence[PublicKey] = (), options: RegistryOptions | None = None) -> Verification:
    """All signatures attached to REF and which of `trusted` (default: the policy's keys for REF) verify them."""
    ref, target, subject = _open(ref_text, options)
    return trust.verify(ref, target, subject, _keys_for(ref, trusted))


def verify(ref_text: str, trusted: Sequence[PublicKey] = (), options: RegistryOptions | None = None) -> Verification:
    """Require a valid signature by one of `trusted` (default: the policy's keys for REF); SignatureError if none."""
    ref, target, subject = _open(ref_text, options)
    checked = _keys_for(ref, trusted)
    if not checked:
        raise TrustConfigError(
            f"no key to verify {ref_text} with: pass --key, or name keys for it in a trust policy ({policy.locations()[0]})"
        )
    return trust.verify(ref, target, subject, checked).require()
