"""The content-store interface shared by the local OCI layout and remote registries.

Modelled on oras-go's split: a store resolves references to descriptors, fetches and pushes
content by descriptor, and tags. `copy` moves graphs between any two stores through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Protocol

from wasm_oci.errors import MalformedContent
from wasm_oci.oci import digest as digests
from wasm_oci.oci.documents import MAX_DOCUMENT
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.reference import Reference


class Target(Protocol):
    def resolve(self, ref: Reference) -> Descriptor:
        """Tag or digest -> the manifest's descriptor (NotFound if absent)."""

    def exists(self, desc: Descriptor) -> bool: ...

    def fetch(self, desc: Descriptor) -> AbstractContextManager[Iterator[bytes]]:
        """Raw content chunks; the caller verifies them (see digest.verified)."""

    def push_blob(self, desc: Descriptor, chunks: Iterable[bytes]) -> None:
        """Store a blob; `chunks` is expected to raise if the content is wrong, and then nothing is kept."""

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None: ...

    def tag(self, desc: Descriptor, tag: str) -> None: ...


MAX_WASM = 256 << 20
"""A wasm layer read into memory to be compiled (componentize-py's are ~20 MB)."""


def fetch_bytes(target: Target, desc: Descriptor, what: str, limit: int = MAX_DOCUMENT) -> bytes:
    """Fetch an object whole and verify it; the bound is checked before a byte is read (and
    `verified` stops a store that sends more than the descriptor's size)."""
    if desc.size > limit:
        raise MalformedContent(f"{what} {desc.digest} claims {desc.size} bytes, over the {limit}-byte limit")
    with target.fetch(desc) as chunks:
        return b"".join(digests.verified(chunks, desc.digest, desc.size, what))
