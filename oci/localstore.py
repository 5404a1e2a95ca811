"""The embedded default store (`$WASM_OCI_HOME/store`): what was pulled or packaged, by name.

Names are what `package` and `pull` recorded: `NAME:TAG` for packaged artifacts, the registry
reference (`HOST/REPO:TAG`, or `HOST/REPO@DIGEST` for a pull by digest) for pulled ones. A
registry reference pinned by digest is served from here when the store holds it (content is
addressed by that digest: it cannot differ from the registry's), and any pulled name is with
`offline`, so `run`, `inspect` and `pull -o` work without the registry, as container tools do.
Tags are names only: `remove` drops names, `prune` frees the blobs no name reaches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wasm_oci import paths
from wasm_oci.errors import InvalidReference, NotFound
from wasm_oci.oci import reference as references
from wasm_oci.oci.copy import reachable
from wasm_oci.oci.descriptor import Descriptor
from wasm_oci.oci.layout import OCILayout
from wasm_oci.oci.reference import LayoutReference, Reference, RegistryReference


@dataclass(frozen=True)
class Entry:
    name: str
    descriptor: Descriptor


def open_store(create: bool = False) -> OCILayout:
    return OCILayout(paths.local_store(), create=create)


def name_for(ref: Reference, digest: str) -> str:
    """The name a pull of `ref` is kept under."""
    if isinstance(ref, LayoutReference) and ref.local_store and ref.name:
        return ref.name
    base = f"{ref.registry}/{ref.repository}" if isinstance(ref, RegistryReference) else f"oci:{ref.path}"
    if ref.digest:
        return f"{base}@{digest}"
    return f"{base}:{(ref.tag or references.DEFAULT_TAG) if isinstance(ref, RegistryReference) else ref.name}"


def lookup(ref: RegistryReference, offline: bool) -> Descriptor | None:
    """What the store already holds for a registry reference: by digest always, by name only
    `offline` (a tag may have moved in the registry since); None when it holds nothing.

    A digest counts only under a name of the same repository: the same bytes pulled from
    another repository passed that repository's trust rule, not this one's."""
    if not (ref.digest or offline) or not paths.local_store().joinpath("oci-layout").is_file():
        return None  # a tag pull goes to the registry: no need to read index.json for it
    names = open_store().tags()
    if ref.digest:
        repository = f"{ref.registry}/{ref.repository}"
        return next(
            (desc for name, desc in names.items() if desc.digest == ref.digest and name.startswith((repository + ":", repository + "@"))),
            None,
        )
    return names.get(name_for(ref, ""))


def entries() -> list[Entry]:
    if not paths.local_store().joinpath("oci-layout").is_file():
        return []
    return [Entry(name, desc) for name, desc in sorted(open_store().tags().items())]


def _store_name(name: str) -> str:
    """A name to keep something under: a local-store NAME[:TAG] (registry names are recorded by pull)."""
    ref = references.parse(name)
    if not (isinstance(ref, LayoutReference) and ref.local_store and ref.name) or ref.digest:
        raise InvalidReference(f"{name!r} is not a local-store name: NAME[:TAG] without a registry host or digest")
    return ref.name


def find(source: str) -> Descriptor:
    """A store name, or a registry reference the store holds (pulled under it, or by its digest)."""
    ref = references.parse(source)
    if isinstance(ref, RegistryReference):
        found = lookup(ref, offline=True)
        if found is None:
            raise NotFound(f"{source} is not in the local store ({paths.local_store()}): pull it first")
        return found
    if not (isinstance(ref, LayoutReference) and ref.local_store):
        raise InvalidReference(f"{source!r} names an oci: layout, not the local store")
    return open_store().resolve(ref.reference)


def tag(source: str, name: str) -> Descriptor:
    desc = find(source)
    open_store().tag(desc, _store_name(name))
    return desc


def remove(names: Sequence[str]) -> list[str]:
    """Drop these names (their blobs stay until `prune`); returns the names removed, or raises
    NotFound naming those that were not there (after removing the others)."""
    store = open_store()
    gone: list[str] = []
    missing: list[str] = []
    for name in names:
        ref = references.parse(name)
        key = name_for(ref, ref.digest or "") if isinstance(ref, RegistryReference) else _store_name(name)
        (gone if store.untag(key) else missing).append(key)
    if missing:
        raise NotFound(f"not in the local store: {', '.join(missing)}")
    return gone


def prune(candidates: set[str] | None = None) -> tuple[int, int]:
    """Remove the blobs no name reaches (only among `candidates` when given): (count, bytes)."""
    if not paths.local_store().joinpath("oci-layout").is_file():
        return 0, 0
    store = open_store()
    return store.prune(lambda roots: reachable(store, roots), candidates)
