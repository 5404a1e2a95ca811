"""The content-store interfaces shared by the local OCI layout, remote registries, the
in-memory store and (read-only) containerd's content store.

Modelled on oras-go's split: a read-only target fetches content by descriptor; a target also
resolves its own references (a tag or a digest within that store) and takes content in,
verifying it (digest and size) before anything is published. `copy` moves graphs from any
read-only target to any target.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from wasm_oci.errors import MalformedContent
from wasm_oci.oci import digest as digests
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.documents import MAX_DOCUMENT


class ReadOnlyTarget(Protocol):
    def exists(self, desc: Descriptor) -> bool: ...

    def fetch(self, desc: Descriptor) -> AbstractContextManager[Iterator[bytes]]:
        """Raw content chunks; the reader verifies them (`fetch_bytes`, `digest.verified`)."""


class Target(ReadOnlyTarget, Protocol):
    def resolve(self, reference: str) -> Descriptor:
        """A tag or a digest in this store -> the manifest's descriptor (NotFound if absent)."""

    def push_blob(self, desc: Descriptor, chunks: Iterable[bytes]) -> None:
        """Store a blob once its content matched `desc`; on a mismatch (DigestMismatch) nothing is kept."""

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        """Store a manifest that matches `desc`, then tag it."""

    def tag(self, desc: Descriptor, tag: str) -> None: ...


def checked(desc: Descriptor, data: bytes, what: str = "manifest") -> bytes:
    """`data` if it is what `desc` describes; what a store's push_manifest takes in."""
    return b"".join(digests.verified([data], desc.digest, desc.size, f"{what} {desc.digest}"))


MAX_WASM = 256 << 20
"""A wasm layer read into memory to be compiled (componentize-py's are ~20 MB)."""


def fetch_bytes(target: ReadOnlyTarget, desc: Descriptor, what: str, limit: int = MAX_DOCUMENT) -> bytes:
    """Fetch an object whole and verify it; the bound is checked before a byte is read (and
    `verified` stops a store that sends more than the descriptor's size)."""
    if desc.size > limit:
        raise MalformedContent(f"{what} {desc.digest} claims {desc.size} bytes, over the {limit}-byte limit")
    with target.fetch(desc) as chunks:
        return b"".join(digests.verified(chunks, desc.digest, desc.size, what))


class DocumentCache:
    """A read-only target over `source` that keeps the documents (manifests, configs: objects of
    at most MAX_DOCUMENT bytes) it fetched whole and verified, so that a pull reads each from
    the registry once (first to check the artifact, then to copy it) instead of twice; larger
    blobs stream from `source` as they would."""

    def __init__(self, source: ReadOnlyTarget) -> None:
        self.source = source
        self._kept: dict[str, bytes] = {}

    def exists(self, desc: Descriptor) -> bool:
        return desc.digest in self._kept or self.source.exists(desc)

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[Iterator[bytes]]:
        if desc.size > MAX_DOCUMENT:
            with self.source.fetch(desc) as chunks:
                yield chunks
            return
        kept = self._kept.get(desc.digest)
        if kept is None or len(kept) != desc.size:
            kept = self._kept[desc.digest] = fetch_bytes(self.source, desc, f"blob {desc.digest}")
        yield iter((kept,))
