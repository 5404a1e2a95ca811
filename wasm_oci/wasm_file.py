"""A .wasm file named on the command line (push, copy, inspect, run, serve): told apart from a
reference, and read with one-line errors. Apart from oci.distribution so that `run FILE.wasm`
does not import the registry code (~30 ms of a run's start-up).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wasm_oci.errors import InvalidWasm, NotFound, StoreError


def names_wasm_file(source: str) -> bool:
    """Whether a SOURCE argument means a .wasm file rather than a reference."""
    return source.endswith(".wasm") or (not source.startswith("oci:") and is_path(Path.is_file, source))


def is_path(test: Callable[[Path], bool], text: str) -> bool:
    """`test(Path(text))`, False for text no path can be (too long, a NUL)."""
    try:
        return test(Path(text))
    except (OSError, ValueError):
        return False


def read_wasm_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InvalidWasm(f"{path} is a directory, not a .wasm file") from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from None
