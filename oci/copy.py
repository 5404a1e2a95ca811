"""Copy a manifest graph between two stores (registry <-> layout), children before parents.

Every byte that moves is verified by the store that takes it in (`Target.push_blob`), which
publishes a blob only when that check completed; the root is tagged last, so a failed copy leaves no tag
pointing at missing or wrong content. A hostile graph is bounded: each node is visited once
(an index may list one child thousands of times), and the nodes and depth are capped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from wasm_oci.errors import MalformedContent, UnsupportedArtifact, WasmOciError
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.target import ReadOnlyTarget, Target, fetch_bytes

MAX_NODES = 4096
"""Manifests and blobs one copy may visit: far beyond any real artifact's graph."""
MAX_DEPTH = 8
"""Index levels: an index of indexes of manifests is 3."""

Progress = Callable[[Descriptor, int], None]
"""Called with (blob, bytes just moved); a blob that was skipped reports its whole size once."""


@dataclass
class CopyStats:
    blobs_copied: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0
    visited: set[str] = field(default_factory=set, repr=False)
    written: list[str] = field(default_factory=list, repr=False)
    """Digests this copy stored (not those already there): what a failed copy leaves behind."""


def children(desc: Descriptor, manifest: bytes) -> list[Descriptor]:
    """The descriptors a manifest or index points at (not `subject`: that is the referrer's parent)."""
    if desc.media_type in mediatypes.INDEXES:
        return list(documents.index(manifest, f"index {desc.digest}").manifests)
    if desc.media_type in mediatypes.MANIFESTS:
        parsed = documents.manifest(manifest, f"manifest {desc.digest}")
        return [parsed.config, *parsed.layers]
    raise UnsupportedArtifact(f"{desc.digest} has media type {desc.media_type}, not an OCI manifest or index")


def reachable(store: ReadOnlyTarget, roots: list[Descriptor]) -> set[str]:
    """Digests of everything `roots` lead to in `store`, as far as it holds them (a missing
    or unreadable manifest ends its branch: what it would reach is not there to keep)."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        desc = pending.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        if desc.media_type in mediatypes.MANIFESTS | mediatypes.INDEXES:
            try:
                pending += children(desc, fetch_bytes(store, desc, f"manifest {desc.digest}"))
            except WasmOciError:
                continue
    return seen


def metered(chunks: Iterable[bytes], desc: Descriptor, progress: Progress | None, stats: CopyStats) -> Iterator[bytes]:
    for chunk in chunks:
        stats.bytes_copied += len(chunk)
        if progress:
            progress(desc, len(chunk))
        yield chunk


def copy_graph(
    src: ReadOnlyTarget,
    dst: Target,
    root: Descriptor,
    tag: str | None = None,
    progress: Progress | None = None,
    stats: CopyStats | None = None,
) -> CopyStats:
    """`stats` (optional) is filled as the copy goes, so a caller still has it when the copy fails."""
    stats = stats if stats is not None else CopyStats()
    _copy_node(src, dst, root, tag, progress, stats, 0)
    return stats


def _copy_node(
    src: ReadOnlyTarget, dst: Target, desc: Descriptor, tag: str | None, progress: Progress | None, stats: CopyStats, depth: int
) -> None:
    if desc.digest in stats.visited and tag is None:
        return
    stats.visited.add(desc.digest)
    if len(stats.visited) > MAX_NODES:
        raise MalformedContent(f"the graph under {desc.digest} has more than {MAX_NODES} manifests and blobs")
    is_manifest = desc.media_type in mediatypes.MANIFESTS | mediatypes.INDEXES
    if not is_manifest:
        if dst.exists(desc):
            stats.blobs_skipped += 1
            if progress:
                progress(desc, desc.size)
            return
        with src.fetch(desc) as chunks:
            dst.push_blob(desc, metered(chunks, desc, progress, stats))  # the store verifies what it takes in
        stats.written.append(desc.digest)
        stats.blobs_copied += 1
        return
    data = fetch_bytes(src, desc, f"manifest {desc.digest}")
    if depth >= MAX_DEPTH:
        raise MalformedContent(f"{desc.digest} nests manifests more than {MAX_DEPTH} levels deep")
    for child in children(desc, data):
        _copy_node(src, dst, child, None, progress, stats, depth + 1)
    dst.push_manifest(desc, data, tag)
    stats.written.append(desc.digest)
