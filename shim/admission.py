"""The trust policy at Create: a container's image must carry the signatures the policy asks
for before its task exists.

Signatures are fetched from the image's registry (containerd keeps none) through
`signing.api.check_policy` on a RemoteRepository, by the digest containerd pulled, and an
accepted digest is remembered so the next task from that image costs nothing. The policy is
re-read when its file changes; a refusal is never remembered (the image may be signed later).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from wasm_oci.errors import SignatureError
from wasm_oci.oci import reference as references
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.signing import policy
from wasm_oci.signing.operations import check_policy
from wasm_oci.signing.trust import Decision

log = logging.getLogger(__name__)


class TrustGate:
    def __init__(self, policy_path: str | None, plain_http: tuple[str, ...]) -> None:
        self._policy_path = Path(policy_path) if policy_path else None
        self._plain_http = frozenset(plain_http)
        self._stamp: tuple[str, int] | None = None
        self._policy = policy.NO_POLICY
        self._accepted: dict[tuple[str, str], Decision] = {}
        self._lock = threading.Lock()

    def _current(self) -> policy.Policy:
        path = self._policy_path or next((p for p in policy.locations() if p.exists()), None)
        try:
            stamp = (str(path), os.stat(path).st_mtime_ns) if path else None
        except OSError:
            stamp = (str(path), -1)  # named but missing: policy.load reports it
        with self._lock:
            if stamp != self._stamp:
                self._policy = policy.load(path) if path else policy.NO_POLICY
                self._stamp = stamp
                self._accepted.clear()
            return self._policy

    def in_force(self) -> bool:
        """Whether a policy file exists (then every Create asks containerd for its image)."""
        return self._current() is not policy.NO_POLICY

    def check(self, image: str, subject: Descriptor | None) -> Decision | None:
        """None when no rule applies; the decision when one does; SignatureError when refused.
        `subject` is what the image name points at in containerd (None without an image)."""
        active = self._current()
        if active is policy.NO_POLICY:
            return None
        if not image or subject is None:
            if active.default.mode == "enforce":
                raise SignatureError(
                    f"the container has no image whose signature could be checked (required by {active.source}, rule default)"
                )
            return None
        ref = references.parse(image)
        if active.rule_for(ref).mode == "off":
            return None
        assert isinstance(ref, references.RegistryReference)  # rule_for is "off" for anything else
        key = (f"{ref.registry}/{ref.repository}", subject.digest)
        with self._lock:
            known = self._accepted.get(key)
        if known is not None:
            return known
        from wasm_oci.oci.remote import RemoteRepository

        target = RemoteRepository(ref, RegistryOptions(plain_http=ref.registry in self._plain_http))
        decision = check_policy(ref, target, subject, trust_policy=active)  # SignatureError names the image
        if decision.warning:
            log.warning("image %s: %s (trust policy mode warn: running it anyway)", image, decision.warning)
        with self._lock:
            self._accepted[key] = decision
        return decision
