"""Files that appear whole or not at all: the one way this project writes a file in place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write(path: Path, chunks: Iterable[bytes], mode: int = 0o644, durable: bool = True) -> None:
    """Write to a sibling temp file and rename: readers see the old file or the whole new one, never a part.

    `durable=False` skips the fsync: right for store blobs, which are re-verified on every read,
    so a blob torn by a crash is detected instead of trusted.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            if durable:
                os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
