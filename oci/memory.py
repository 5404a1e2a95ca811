"""An in-memory content store: the source when a .wasm file is pushed without a local tag first."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from wasm_oci.errors import NotFound
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.reference import Reference


class MemoryStore:
    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._tags: dict[str, Descriptor] = {}

    def resolve(self, ref: Reference) -> Descriptor:
        name = ref.digest or getattr(ref, "name", None) or getattr(ref, "tag", None) or ""
        if name in self._tags:
            return self._tags[name]
        raise NotFound(f"{ref} not found in memory store")

    def exists(self, desc: Descriptor) -> bool:
        return desc.digest in self._blobs

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[Iterator[bytes]]:
        if desc.digest not in self._blobs:
            raise NotFound(f"blob {desc.digest} not in memory store")
        yield iter([self._blobs[desc.digest]])

    def push_blob(self, desc: Descriptor, chunks: Iterable[bytes]) -> None:
        self._blobs[desc.digest] = b"".join(chunks)

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        self._blobs[desc.digest] = data
        self._tags[desc.digest] = desc
        if tag:
            self.tag(desc, tag)

    def tag(self, desc: Descriptor, tag: str) -> None:
        self._tags[tag] = desc
