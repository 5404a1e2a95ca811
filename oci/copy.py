"""Copy a manifest graph between two stores (registry <-> layout), children before parents.

Every byte that moves passes `digest.verified` exactly once on the way; stores publish a blob
only when that check completed, and the root is tagged last, so a failed copy leaves no tag
pointing at missing or wrong content.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from wasm_oci.errors import UnsupportedArtifact
from wasm_oci.oci import digest as digests
from wasm_oci.oci import mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.target import Target, fetch_bytes

Progress = Callable[[Descriptor, int], None]
"""Called with (blob, bytes just moved); a blob that was skipped reports its whole size once."""


@dataclass
class CopyStats:
    blobs_copied: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0


def children(desc: Descriptor, manifest: bytes) -> list[Descriptor]:
    """The descriptors a manifest or index points at (not `subject`: that is the referrer's parent)."""
    try:
        doc = json.loads(manifest)
    except ValueError:
        raise UnsupportedArtifact(f"manifest {desc.digest} is not JSON") from None
    if desc.media_type in mediatypes.INDEXES:
        return [Descriptor.from_json(m) for m in doc.get("manifests", [])]
    if desc.media_type in mediatypes.MANIFESTS:
        return [Descriptor.from_json(doc["config"])] + [Descriptor.from_json(layer) for layer in doc.get("layers", [])]
    raise UnsupportedArtifact(f"{desc.digest} has media type {desc.media_type}, not an OCI manifest or index")


def metered(chunks: Iterable[bytes], desc: Descriptor, progress: Progress | None, stats: CopyStats) -> Iterator[bytes]:
    for chunk in chunks:
        stats.bytes_copied += len(chunk)
        if progress:
            progress(desc, len(chunk))
        yield chunk


def copy_graph(src: Target, dst: Target, root: Descriptor, tag: str | None = None, progress: Progress | None = None) -> CopyStats:
    stats = CopyStats()
    _copy_node(src, dst, root, tag, progress, stats)
    return stats


def _copy_node(src: Target, dst: Target, desc: Descriptor, tag: str | None, progress: Progress | None, stats: CopyStats) -> None:
    is_manifest = desc.media_type in mediatypes.MANIFESTS | mediatypes.INDEXES
    if not is_manifest:
        if dst.exists(desc):
            stats.blobs_skipped += 1
            if progress:
                progress(desc, desc.size)
            return
        with src.fetch(desc) as chunks:
            checked = digests.verified(chunks, desc.digest, desc.size, f"blob {desc.digest}")
            dst.push_blob(desc, metered(checked, desc, progress, stats))
        stats.blobs_copied += 1
        return
    data = fetch_bytes(src, desc, f"manifest {desc.digest}")
    for child in children(desc, data):
        _copy_node(src, dst, child, None, progress, stats)
    dst.push_manifest(desc, data, tag)
