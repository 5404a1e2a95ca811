"""An in-memory content store: the source when a .wasm file is pushed without a local tag first."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from wasm_oci.errors import NotFound
from wasm_oci.oci import digest as digests
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.target import checked


class MemoryStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._tags: dict[str, Descriptor] = {}

    def resolve(self, reference: str) -> Descriptor:
        if reference in self._tags:
            return self._tags[reference]
        raise NotFound(f"{reference} not found in memory store")

    def exists(self, desc: Descriptor) -> bool:
        return desc.digest in self._blobs

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[Iterator[bytes]]:
        if desc.digest not in self._blobs:
            raise NotFound(f"blob {desc.digest} not in memory store")
        yield iter([self._blobs[desc.digest]])

    def push_blob(self, desc: Descriptor, chunks: Iterable[bytes]) -> None:
        self._blobs[desc.digest] = b"".join(digests.verified(chunks, desc.digest, desc.size, f"blob {desc.digest}"))

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        self._blobs[desc.digest] = checked(desc, data)
        self._tags[desc.digest] = desc
        if tag:
            self.tag(desc, tag)

    def tag(self, desc: Descriptor, tag: str) -> None:
        self._tags[tag] = desc
