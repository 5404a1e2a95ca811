"""The distribution operations: package, push/copy, pull, inspect, login.

This layer checks digests, never signatures: a trust check and a signer are passed in
(`check`, `sign`), as oras-go's copy takes a policy callback. `wasm_oci.api` passes the trust
policy's and is what users call; this module knows nothing of `signing`.

References are strings in the grammar of `wasm_oci.oci.reference`; registry connection settings
come in a `RegistryOptions`. Errors are `wasm_oci.errors.WasmOciError` subclasses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from wasm_oci import paths
from wasm_oci.errors import InvalidReference, InvalidWasm, NotFound, StoreError, UsageError
from wasm_oci.files import atomic_write
from wasm_oci.oci import digest as digests
from wasm_oci.oci import localstore, wasminfo
from wasm_oci.oci import package as packaging
from wasm_oci.oci import reference as references
from wasm_oci.oci.artifact import WasmArtifact
from wasm_oci.oci.artifact import read as read_artifact
from wasm_oci.oci.copy import CopyStats, Progress, copy_graph, metered
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.layout import OCILayout
from wasm_oci.oci.memory_store import MemoryStore
from wasm_oci.oci.options import RegistryOptions
from wasm_oci.oci.reference import LayoutReference, Reference, RegistryReference
from wasm_oci.oci.target import DocumentCache, Target
from wasm_oci.wasm_file import is_path, names_wasm_file, read_wasm_file

__all__ = [
    "PackageOptions",
    "RegistryOptions",
    "Result",
    "copy",
    "inspect",
    "login",
    "logout",
    "open_target",
    "package_file",
    "pull",
    "push",
]
PackageOptions = packaging.PackageOptions


class Report(Protocol):
    """What a trust check or a signer reports back, for `--format json`."""

    def to_json(self) -> Mapping[str, object]: ...


TrustCheck = Callable[[Reference, Target, Descriptor], Report | None]
"""Called with what a pull resolved, before anything is written; raises to refuse it."""
Signer = Callable[[Target, Reference, Descriptor], Sequence[Report]]
"""Called once a copy's root is in its destination; returns what it attached."""


@dataclass(frozen=True)
class Result:
    """What push, pull and copy report: the canonical reference and the manifest's descriptor."""

    reference: str
    descriptor: Descriptor
    stats: CopyStats | None = None
    output: Path | None = None
    signatures: tuple[Report, ...] = ()  # push --sign-key: what was attached
    trust: Report | None = None  # pull: the signature check that let it through

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "reference": self.reference,
            "digest": self.descriptor.digest,
            "mediaType": self.descriptor.media_type,
            "size": self.descriptor.size,
        }
        if self.stats:
            out["blobsCopied"], out["blobsSkipped"] = self.stats.blobs_copied, self.stats.blobs_skipped
        if self.output:
            out["output"] = str(self.output)
        if self.signatures:
            out["signatures"] = [s.to_json() for s in self.signatures]
        if self.trust:
            out["trust"] = self.trust.to_json()
        return out


def open_target(ref: Reference, options: RegistryOptions | None = None, create: bool = False) -> Target:
    if isinstance(ref, RegistryReference):
        if options is not None and options.offline:
            raise UsageError(f"{ref} is on a registry, and --offline forbids contacting one")
        from wasm_oci.oci.remote import RemoteRepository  # the HTTP stack costs ~110 ms to import

        return RemoteRepository(ref, options)
    return OCILayout(ref.path, create=create or ref.local_store)


def _tag_of(ref: Reference) -> str | None:
    return ref.tag if isinstance(ref, RegistryReference) else ref.name


def package_file(path: Path, opts: PackageOptions = PackageOptions()) -> tuple[packaging.Packaged, bytes]:
    wasm = read_wasm_file(path)
    try:
        info = wasminfo.inspect(wasm)
    except InvalidWasm as exc:
        raise InvalidWasm(f"{path}: {exc}") from None
    return packaging.package(wasm, info, path.name, opts), wasm


def store_packaged(target: Target, packaged: packaging.Packaged, wasm: bytes, tag: str | None) -> None:
    target.push_blob(packaged.layer, [wasm])
    target.push_blob(packaged.config, [packaged.config_bytes])
    target.push_manifest(packaged.manifest, packaged.manifest_bytes, tag)


def package(path: Path, dest: str, opts: PackageOptions = PackageOptions()) -> Result:
    """Package a .wasm file into a local layout (default store or oci:PATH) under a tag."""
    ref = references.parse(dest)
    if not isinstance(ref, LayoutReference):
        raise StoreError(f"package writes to a local store or oci:PATH, not the registry {ref.registry}; use push")
    packaged, wasm = package_file(path, opts)
    store_packaged(OCILayout(ref.path, create=True), packaged, wasm, ref.name)
    return Result(str(ref.with_digest(packaged.manifest.digest)), packaged.manifest)


def parse_source(text: str) -> Reference:
    """A reference, with a word for the directory people pass by mistake (a name would otherwise
    be looked up in the local store and reported missing there)."""
    if not text.startswith("oci:") and ("/" in text or text.startswith(".")) and is_path(Path.is_dir, text):
        layout = " (it holds an OCI image layout: use oci:" + text + ")" if is_path(Path.is_file, f"{text}/oci-layout") else ""
        raise InvalidReference(f"{text} is a directory; expected a .wasm file, oci:PATH for an OCI layout, or a reference{layout}")
    return references.parse(text)


def _source(source: str, opts: PackageOptions, options: RegistryOptions | None) -> tuple[Target, Descriptor]:
    """A push/copy source: a .wasm file (packaged on the fly) or any reference."""
    if names_wasm_file(source):
        packaged, wasm = package_file(Path(source), opts)
        memory = MemoryStore()
        store_packaged(memory, packaged, wasm, None)
        return memory, packaged.manifest
    ref = parse_source(source)
    target = open_target(ref, options)
    return target, target.resolve(ref.reference)


def copy(
    source: str,
    dest: str,
    src_options: RegistryOptions | None = None,
    dst_options: RegistryOptions | None = None,
    progress: Progress | None = None,
    package_options: PackageOptions = PackageOptions(),
    sign: Signer | None = None,
) -> Result:
    """Copy an artifact and all its blobs; the manifest digest is unchanged. `sign` signs it once it is there."""
    dst_ref = references.parse(dest)
    src, root = _source(source, package_options, src_options)
    if dst_ref.digest and dst_ref.digest != root.digest:
        raise StoreError(f"{dest} names digest {dst_ref.digest}, but the source is {root.digest}")
    dst = open_target(dst_ref, dst_options, create=True)
    stats = copy_graph(src, dst, root, _tag_of(dst_ref) if not dst_ref.digest else None, progress)
    signed = tuple(sign(dst, dst_ref, root)) if sign is not None else ()
    return Result(str(dst_ref.with_digest(root.digest)), root, stats, signatures=signed)


push = copy
"""Push is a copy whose source is usually a .wasm file or a local-store tag."""


def _resolve(ref: Reference, options: RegistryOptions | None) -> tuple[Target, Descriptor, bool]:
    """Where `ref` is read from: the local store when it holds a registry reference pinned by
    digest (or by name, with `options.offline`), else its own store; and whether that was the
    local store."""
    offline = options is not None and options.offline
    if isinstance(ref, RegistryReference):
        local = localstore.lookup(ref, offline)
        if local is not None:
            return localstore.open_store(), local, True
        if offline:
            raise NotFound(f"{ref} is not in the local store ({paths.local_store()}), and --offline forbids the registry")
    target = open_target(ref, options)
    return target, target.resolve(ref.reference), False


def inspect(ref_text: str, options: RegistryOptions | None = None) -> WasmArtifact:
    if names_wasm_file(ref_text):
        packaged, wasm = package_file(Path(ref_text))
        memory = MemoryStore()
        store_packaged(memory, packaged, wasm, None)
        return read_artifact(memory, packaged.manifest)
    target, root, _ = _resolve(parse_source(ref_text), options)
    return read_artifact(target, root)


def pull(
    ref_text: str,
    options: RegistryOptions | None = None,
    output: Path | None = None,
    progress: Progress | None = None,
    check: TrustCheck | None = None,
) -> Result:
    """Fetch into the local store, or with `output` write just the wasm there; every byte is verified.

    `check` runs first (signatures are not this layer's: `wasm_oci.api.pull` passes the trust
    policy's), and the artifact must hold a wasm layer, so a refused artifact leaves nothing
    behind. The output file appears whole or not at all; on any failure an existing file there
    is untouched, and blobs stored before the failure are removed again.

    A registry reference pinned by digest that the local store already holds is served from it
    without the registry or `check` (it was checked when it came in); `options.offline` does
    the same for a name, and never contacts the registry.
    """
    ref = parse_source(ref_text)
    src, root, local = _resolve(ref, options)
    decision = check(ref, src, root) if check is not None and not local else None
    source = DocumentCache(src)  # the manifest and config, read once for the check below and the copy
    artifact = read_artifact(source, root)
    canonical = str(ref.with_digest(root.digest))
    if output is not None:
        written, stats = _export_layer(src, artifact.layer, output, progress)
        return Result(canonical, root, stats, written, trust=decision)
    store = localstore.open_store(create=True)
    stats = CopyStats()
    try:
        copy_graph(source, store, root, None, progress, stats)
    except BaseException:
        localstore.prune(set(stats.written))
        raise
    store.tag(root, localstore.name_for(ref, root.digest))
    return Result(canonical, root, stats, trust=decision)


def _export_layer(src: Target, layer: Descriptor, output: Path, progress: Progress | None) -> tuple[Path, CopyStats]:
    """Stream the wasm layer straight to `output` (a file, or a directory to put the layer's title in)."""
    path = output / packaging.layer_title(layer.annotations.get(packaging.TITLE, "app.wasm")) if output.is_dir() else output
    stats = CopyStats(blobs_copied=1)
    with src.fetch(layer) as chunks:
        checked = metered(digests.verified(chunks, layer.digest, layer.size, f"blob {layer.digest}"), layer, progress, stats)
        try:
            atomic_write(path, checked)
        except OSError as exc:
            raise StoreError(f"cannot write {path}: {exc.strerror}") from None
    return path, stats


def login(host: str, username: str, password: str, options: RegistryOptions | None = None) -> None:
    """Check the credentials against the registry, then save them where docker would."""
    from wasm_oci.oci.auth import Credentials, DockerConfig
    from wasm_oci.oci.remote import RemoteRepository

    checked = dataclasses.replace(options or RegistryOptions(), username=username, password=password)
    RemoteRepository(RegistryReference(host, ""), checked).ping()
    DockerConfig().store(host, Credentials(username, password))


def logout(host: str) -> bool:
    from wasm_oci.oci.auth import DockerConfig

    return DockerConfig().erase(host)
