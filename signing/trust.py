"""The one check pull, run and the shim make before anything is written or started.

    decision = trust.check(ref, target, manifest_descriptor, keys)   # SignatureError if refused

Explicit keys (`--verify-key`) always enforce; otherwise the trust policy's rule for the
reference decides (see `policy`). Signatures are looked up in the same store the artifact
comes from, by manifest digest, so what is verified is exactly what will be copied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wasm_oci.errors import SignatureError
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.reference import Reference
from wasm_oci.oci.target import Target
from wasm_oci.signing import policy

if TYPE_CHECKING:
    from wasm_oci.signing.keys import PublicKey
    from wasm_oci.signing.verify import Verification


@dataclass(frozen=True)
class Decision:
    mode: policy.Mode
    source: str  # what asked for the check: --verify-key, or the policy file and rule
    verification: Verification | None = None
    warning: str | None = None  # warn mode: why the artifact is not trusted

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"mode": self.mode, "source": self.source}
        if self.verification:
            out["verified"] = [f.to_json() for f in self.verification.verified]
        if self.warning:
            out["warning"] = self.warning
        return out


def verify(ref: Reference, target: Target, subject: Descriptor, keys: Sequence[PublicKey]) -> Verification:
    """Every signature of `subject` in `target`, judged against `keys` (nothing raised)."""
    from wasm_oci.signing import discover  # cryptography costs ~45 ms to import: only when checking
    from wasm_oci.signing.verify import check as judge_all

    name = str(dataclasses.replace(ref, digest=None))
    return judge_all(name, subject.digest, discover.find(target, ref, subject.digest), keys)


def check(
    ref: Reference, target: Target, subject: Descriptor, keys: Sequence[PublicKey] = (), trust_policy: policy.Policy | None = None
) -> Decision:
    if keys:
        rule, source = policy.Rule("--verify-key", "enforce", tuple(keys)), "--verify-key"
    else:
        active = trust_policy or policy.load()
        rule = active.rule_for(ref)
        source = f"{active.source}, rule {rule.scope}"
    if rule.mode == "off":
        return Decision("off", source)
    verification = verify(ref, target, subject, rule.keys)
    reason = verification.failure()
    if reason and rule.mode == "enforce":
        raise SignatureError(f"{reason} (required by {source})")
    return Decision(rule.mode, source, verification, reason)
