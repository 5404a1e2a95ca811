"""Content digests and the streaming check every byte that enters a store goes through."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

from wasm_oci.errors import DigestMismatch, InvalidReference

_DIGEST = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")


def validate(digest: str) -> str:
    """Reject digests that could escape a blob directory or name an unknown algorithm."""
    if not _DIGEST.fullmatch(digest):
        raise InvalidReference(f"invalid digest {digest[:140]!r}: expected sha256:<64 hex> or sha512:<128 hex>")
    return digest


def of_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hasher_for(digest: str) -> hashlib._Hash:
    return hashlib.new(validate(digest).split(":", 1)[0])


def verified(chunks: Iterable[bytes], digest: str, size: int, what: str) -> Iterator[bytes]:
    """Pass chunks through, failing as soon as they overrun `size` and at the end on a digest mismatch.

    Consumers must write chunks somewhere temporary and publish only after the generator
    finishes: the last chunk is yielded before the final check can run.
    """
    h = hasher_for(digest)
    seen = 0
    for chunk in chunks:
        seen += len(chunk)
        if seen > size:
            raise DigestMismatch(f"{what}: more than the expected {size} bytes for {digest}")
        h.update(chunk)
        yield chunk
    if seen != size:
        raise DigestMismatch(f"{what}: got {seen} bytes, expected {size} for {digest}")
    actual = f"{h.name}:{h.hexdigest()}"
    if actual != digest:
        raise DigestMismatch(f"{what}: content digest {actual} does not match {digest}")
