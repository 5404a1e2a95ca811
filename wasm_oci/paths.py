"""Where wasm-oci keeps its state on this machine (XDG base directories, overridable)."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """Base of persistent data; WASM_OCI_HOME wins so tests and CI get private stores."""
    if override := os.environ.get("WASM_OCI_HOME"):
        return Path(override)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "wasm-oci"


def local_store() -> Path:
    """The OCI image layout that bare names (`hello:v1`) refer to: the embedded default."""
    return data_home() / "store"
