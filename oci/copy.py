"""Copy a manifest graph between two stores (registry <-> layout), children before parents.

Every byte that moves is verified by the store that takes it in (`Target.push_blob`), which
publishes a blob only when that check completed; the root is tagged last, so a failed copy leaves no tag
pointing at missing or wrong content. The blobs of one manifest (config and layers) move in
parallel, at most PARALLEL at once: when one fails, the others stop at their next chunk (each
store then discards what it took in), and the copy waits for all of them before it reports the
first failure, so nothing is written after the copy returned. A hostile graph is bounded: each node is visited once
(an index may list one child thousands of times), and the nodes and depth are capped.
"""

from __future__ import annotations

import threading
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
PARALLEL = 4
"""Blobs of one manifest transferred at once (oras and crane default to 3 and 4)."""

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
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Held to count (and to report progress) from the parallel transfers."""


class _Cancelled(WasmOciError):
    """Stops a transfer when another of the same copy failed (never reported: that failure is)."""


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


def metered(
    chunks: Iterable[bytes], desc: Descriptor, progress: Progress | None, stats: CopyStats, cancelled: threading.Event | None = None
) -> Iterator[bytes]:
    for chunk in chunks:
        if cancelled is not None and cancelled.is_set():
            raise _Cancelled(f"transfer of {desc.digest} stopped: another blob of the copy failed")
        with stats.lock:
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
    if not _visit(desc, tag, stats):
        return
    if desc.media_type not in mediatypes.MANIFESTS | mediatypes.INDEXES:
        _copy_blob(src, dst, desc, progress, stats, None)
        return
    data = fetch_bytes(src, desc, f"manifest {desc.digest}")
    if depth >= MAX_DEPTH:
        raise MalformedContent(f"{desc.digest} nests manifests more than {MAX_DEPTH} levels deep")
    blobs = []
    for child in children(desc, data):
        if child.media_type in mediatypes.MANIFESTS | mediatypes.INDEXES:
            _copy_node(src, dst, child, None, progress, stats, depth + 1)
        elif _visit(child, None, stats):
            blobs.append(child)
    _copy_blobs(src, dst, blobs, progress, stats)
    dst.push_manifest(desc, data, tag)
    stats.written.append(desc.digest)


def _visit(desc: Descriptor, tag: str | None, stats: CopyStats) -> bool:
    """Whether `desc` is still to be copied (each node once; a tagged root always), counting it against MAX_NODES."""
    if desc.digest in stats.visited and tag is None:
        return False
    stats.visited.add(desc.digest)
    if len(stats.visited) > MAX_NODES:
        raise MalformedContent(f"the graph under {desc.digest} has more than {MAX_NODES} manifests and blobs")
    return True


def _copy_blob(
    src: ReadOnlyTarget, dst: Target, desc: Descriptor, progress: Progress | None, stats: CopyStats, cancelled: threading.Event | None
) -> None:
    if dst.exists(desc):
        with stats.lock:
            stats.blobs_skipped += 1
            if progress:
                progress(desc, desc.size)
        return
    with src.fetch(desc) as chunks:
        dst.push_blob(desc, metered(chunks, desc, progress, stats, cancelled))  # the store verifies what it takes in
    with stats.lock:
        stats.written.append(desc.digest)
        stats.blobs_copied += 1


def _copy_blobs(src: ReadOnlyTarget, dst: Target, blobs: list[Descriptor], progress: Progress | None, stats: CopyStats) -> None:
    """Copy `blobs` at most PARALLEL at once; the first failure stops the others, and is raised
    once every transfer has ended. Each transfer is bounded by its stores (a registry's by the
    operation's deadline), so waiting for them is too."""
    if len(blobs) < 2:
        for blob in blobs:
            _copy_blob(src, dst, blob, progress, stats, None)
        return
    cancelled = threading.Event()
    pending = list(reversed(blobs))
    failures: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        while not cancelled.is_set():
            with lock:
                if not pending:
                    return
                blob = pending.pop()
            try:
                _copy_blob(src, dst, blob, progress, stats, cancelled)
            except BaseException as exc:  # handed to the caller's thread below
                with lock:
                    failures.append(exc)
                cancelled.set()

    workers = [threading.Thread(target=work, name=f"copy-{n}", daemon=True) for n in range(min(PARALLEL, len(blobs)))]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except BaseException:  # interrupted while waiting: stop the transfers, and still wait for them to end
        cancelled.set()
        for worker in workers:
            worker.join()
        raise
    if failures:
        raise next((f for f in failures if not isinstance(f, _Cancelled)), failures[0])
