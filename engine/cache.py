"""The precompile cache: compiled artifacts on disk, so a run skips Cranelift.

An entry is `MAGIC | sha256(key | artifact) | artifact`, named by its key (`key()`: the Wasm
digest and everything else that shaped the compiled code). Deserializing runs the
artifact's machine code as-is, so nothing is trusted blindly: a torn, truncated, bit-flipped
or renamed entry fails the checksum and is deleted, and one Wasmtime refuses (another
version, other settings, other CPU features) is rebuilt by the caller. Entries are written
atomically, so concurrent writers of the same key are harmless.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path

from wasm_oci import paths
from wasm_oci.files import atomic_write

MAGIC = b"wasm-oci compiled v1\n"
_SUM = 32
log = logging.getLogger(__name__)


def key(digest: str, kind: str, build: tuple[str, ...]) -> str:
    """The one definition of an entry's name: what was compiled (`digest`, `kind`) and how
    (`build`: wasmtime's version, the machine, the engine settings, the wrapping; Loader's)."""
    return hashlib.sha256("|".join((digest, kind, *build)).encode()).hexdigest()


class CorruptEntry(Exception):
    """An entry that failed its checksum; it has been deleted."""


def default_root() -> Path:
    return paths.data_home() / "cache" / "compiled"


class CompileCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or default_root()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.cwasm"

    def get(self, key: str) -> bytes | None:
        """The artifact stored under `key`, None if there is none; CorruptEntry if it was damaged."""
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("compile cache: cannot read %s: %s", self.path(key), exc.strerror)
            return None
        head = len(MAGIC)
        artifact = data[head + _SUM :]
        if data[:head] != MAGIC or data[head : head + _SUM] != _checksum(key, artifact):
            self.discard(key)
            raise CorruptEntry(f"compile cache entry {self.path(key)} failed its checksum")
        return artifact

    def put(self, key: str, artifact: bytes) -> None:
        """Store an artifact; a cache that cannot be written only costs the next run a compile."""
        try:
            atomic_write(self.path(key), [MAGIC, _checksum(key, artifact), artifact])
        except OSError as exc:
            log.warning("compile cache: cannot write %s: %s", self.path(key), exc.strerror)

    def discard(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self.path(key).unlink()


def _checksum(key: str, artifact: bytes) -> bytes:
    digest = hashlib.sha256(key.encode())
    digest.update(artifact)
    return digest.digest()
