"""A local OCI image layout (image-spec `oci-layout` + `index.json` + `blobs/`), the embedded default store.

Writes are crash- and failure-safe: blobs land in a temporary file and are renamed into place
only after their digest checked out; index.json is rewritten atomically under a file lock so
concurrent wasm-oci processes cannot lose each other's tags. A layout may come from anyone
(`oci:PATH`): index.json is parsed like a registry's documents, and every OS error on its
files is a StoreError naming the path.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from wasm_oci.errors import MalformedContent, NotFound, StoreError
from wasm_oci.files import atomic_write
from wasm_oci.oci import digest as digests
from wasm_oci.oci import documents, mediatypes
from wasm_oci.oci.descriptor import Descriptor

REF_NAME = "org.opencontainers.image.ref.name"
MAX_INDEX = 64 << 20
"""index.json: the local store's lists every tag (~300 bytes each)."""
_CHUNK = 1 << 20


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as exc:  # ENAMETOOLONG, EACCES: is_file() only hides "no such file"
        raise StoreError(f"cannot look at {str(path)[:200]}: {exc.strerror}") from None


class OCILayout:
    def __init__(self, root: Path, create: bool = False) -> None:
        self.root = root
        if _is_file(root / "oci-layout"):
            return
        if not create:
            raise NotFound(f"no OCI image layout at {str(root)[:200]} (missing oci-layout file)")
        try:
            root.mkdir(parents=True, exist_ok=True)
            if any(p for p in root.iterdir() if p.name != ".lock"):
                raise StoreError(f"{root} exists and is not an OCI image layout; refusing to write into it")
            atomic_write(root / "oci-layout", [b'{"imageLayoutVersion":"1.0.0"}'])
        except OSError as exc:
            raise StoreError(f"cannot create OCI layout at {root}: {exc.strerror}") from None

    # -- blobs ---------------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        algorithm, hexpart = digest.split(":", 1)
        return self.root / "blobs" / algorithm / hexpart

    def exists(self, desc: Descriptor) -> bool:
        try:
            return self.blob_path(desc.digest).stat().st_size == desc.size
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot look at blob {desc.digest} in {self.root}: {exc.strerror}") from None

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[Iterator[bytes]]:
        try:
            handle = open(self.blob_path(desc.digest), "rb")  # noqa: SIM115 - the `with` below closes it, once errors are mapped
        except FileNotFoundError:
            raise NotFound(f"blob {desc.digest} is not in {self.root}") from None
        except OSError as exc:  # a directory where the blob should be, no permission
            raise StoreError(f"cannot read blob {desc.digest} in {self.root}: {exc.strerror}") from None
        with handle:
            yield iter(lambda: handle.read(_CHUNK), b"")

    def push_blob(self, desc: Descriptor, chunks: Iterable[bytes]) -> None:
        content = digests.verified(chunks, desc.digest, desc.size, f"blob {desc.digest}")
        try:
            atomic_write(self.blob_path(desc.digest), content, mode=0o444, durable=False)
        except OSError as exc:
            raise StoreError(f"cannot write blob {desc.digest} into {self.root}: {exc.strerror}") from None

    def push_manifest(self, desc: Descriptor, data: bytes, tag: str | None) -> None:
        self.push_blob(desc, [data])  # verified there
        if tag:
            self.tag(desc, tag)

    # -- index ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked_index(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self.root / ".lock", "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                index = self._read_index()
                yield index
                atomic_write(self.root / "index.json", [json.dumps(index, indent=2).encode()])
        except OSError as exc:
            raise StoreError(f"cannot update {self.root}/index.json: {exc.strerror}") from None

    def _read_index(self) -> dict[str, Any]:
        """index.json with each entry checked to be a descriptor (entries are kept as read, so
        fields of other tools survive a rewrite)."""
        path = self.root / "index.json"
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_INDEX + 1)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": []}
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        what = f"{path}"
        index = documents.load(data, what, MAX_INDEX)
        manifests = index.setdefault("manifests", [])
        if not isinstance(manifests, list):
            raise MalformedContent(f"{what}: `manifests` must be a list of descriptors")
        for n, entry in enumerate(manifests):
            Descriptor.from_json(entry, f"{what}: manifests[{n}]")
        return index

    def tag(self, desc: Descriptor, tag: str) -> None:
        entry = desc.to_json()
        entry["annotations"] = {**entry.get("annotations", {}), REF_NAME: tag}
        with self._locked_index() as index:
            index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != tag] + [entry]

    def untag(self, tag: str) -> bool:
        with self._locked_index() as index:
            before = len(index["manifests"])
            index["manifests"] = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != tag]
            return len(index["manifests"]) != before

    def tags(self) -> dict[str, Descriptor]:
        out = {}
        for entry in self._read_index()["manifests"]:
            name = (entry.get("annotations") or {}).get(REF_NAME)
            if name:
                desc = Descriptor.from_json(entry)
                annotations = {k: v for k, v in desc.annotations.items() if k != REF_NAME}
                out[name] = Descriptor(desc.media_type, desc.digest, desc.size, annotations, desc.artifact_type, desc.platform)
        return out

    def resolve(self, reference: str) -> Descriptor:
        """A name (`org.opencontainers.image.ref.name`) or a digest in this layout."""
        if reference.startswith(("sha256:", "sha512:")):
            digest = digests.validate(reference)
            for entry in self._read_index()["manifests"]:
                if entry.get("digest") == digest:
                    return Descriptor.from_json(entry)
            return self._sniff(digest)
        found = self.tags().get(reference)
        if found is None:
            raise NotFound(f"{reference} not found in {self.root}")
        return found

    def blobs(self) -> dict[str, int]:
        """Every blob file: digest -> size."""
        found: dict[str, int] = {}
        for algorithm in ("sha256", "sha512"):
            folder = self.root / "blobs" / algorithm
            if folder.is_dir():
                for entry in os.scandir(folder):
                    if entry.is_file() and not entry.name.startswith("."):
                        found[f"{algorithm}:{entry.name}"] = entry.stat().st_size
        return found

    def prune(self, reachable: Callable[[list[Descriptor]], set[str]], candidates: set[str] | None = None) -> tuple[int, int]:
        """Remove blobs that no tag reaches (only among `candidates` when given), under the
        index lock so no tag is added meanwhile; (blobs removed, bytes freed). `reachable`
        walks the graphs of the tagged descriptors (copy.reachable)."""
        removed = freed = 0
        with self._locked_index() as index:
            keep = reachable([Descriptor.from_json(entry) for entry in index["manifests"]])
            for digest, size in self.blobs().items():
                if digest in keep or (candidates is not None and digest not in candidates):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self.blob_path(digest).unlink()
                    removed, freed = removed + 1, freed + size
        return removed, freed

    def _sniff(self, digest: str) -> Descriptor:
        """A manifest known only by digest: read its mediaType to build a descriptor."""
        path = self.blob_path(digest)
        try:
            with open(path, "rb") as handle:
                data = handle.read(documents.MAX_DOCUMENT + 1)
        except FileNotFoundError:
            raise NotFound(f"manifest {digest} not found in {self.root}") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        what = f"manifest {digest} in {self.root}"
        media_type = documents.text(documents.load(data, what), "mediaType", what, mediatypes.OCI_MANIFEST)
        assert media_type is not None
        return Descriptor(media_type, digest, len(data))
