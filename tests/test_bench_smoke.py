"""The benchmark harness runs (quick mode) on every test run, so it cannot rot unnoticed.

`bench/run.py --quick` starts the real registry and a private containerd like the other tests,
and prints the report it would write. Every headline row must be there with positive figures;
a wasm-oci cell may say `(shim not installed)` only where the shim's launcher cannot be written.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"
SHIM_MISSING = "(shim not installed)"
HEADLINES = (
    "cold start: `ctr run --rm` hello",
    "throughput: 20 x `ctr run --rm` hello",
    "API throughput: 20 tasks over containerd's gRPC API, 4 at a time",
    "API throughput: 20 tasks over containerd's gRPC API, 8 at a time",
    "`ctr run --rm` -> guest entry",
    "shim Start request -> guest entry",
    "`wasm-oci run clock.wasm` -> guest entry",
    "density: idle tasks reached",
    "density: PSS per idle task",
    "HTTP density: idle HTTP functions reached",
    "HTTP density: memory per idle HTTP function",
    "HTTP density: first request to an idle HTTP function (median)",
    "push 1 MB component",
    "pull 1 MB component",
    "load hello.wasm: disk cache hit",
    "instantiate + run hello.wasm",
    "HTTP requests/s, 1 connection(s)",
    "HTTP requests/s, 4 connection(s)",
    "wasi:http proxy requests/s, fixed.wat, 1 connection(s)",
    "wasi:http proxy requests/s, fixed.wat, 8 connection(s)",
    "wasi:http proxy requests/s, componentize-py app, 1 connection(s)",
    "wasi:http proxy requests/s, componentize-py app, 8 connection(s)",
)
NO_BASELINE = ("shim Start request -> guest entry",)  # runc's shim reports no timings
_FIGURE = re.compile(r"^(\d+(?:\.\d+)?)")


def shim_installed() -> bool:
    """What bench/stack.py needs to write the shim's launcher: wasm_oci.shim importable here."""
    return importlib.util.find_spec("wasm_oci.shim.launcher") is not None


def summary(report: str) -> dict[str, list[str]]:
    """The summary table's rows by measurement: wasm-oci, baseline, baseline figure, ratio."""
    block = report.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in block.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in rows[1:]}


def positive(cell: str) -> bool:
    found = _FIGURE.match(cell)
    return found is not None and float(found.group(1)) > 0


@pytest.mark.registry
@pytest.mark.containerd
@pytest.mark.peer
def test_quick_benchmark_reports_every_headline(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, BENCH, "--quick"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = summary(result.stdout)
    shim = shim_installed()
    for headline in HEADLINES:
        matches = [name for name in rows if name.startswith(headline)]
        assert len(matches) == 1, f"{headline!r} in {list(rows)}"
        ours, _, baseline, versus = rows[matches[0]]
        assert positive(ours) or (ours == SHIM_MISSING and not shim), (headline, ours)
        if headline in NO_BASELINE:
            continue
        assert positive(baseline), (headline, baseline)
        assert positive(versus) or ours == SHIM_MISSING, (headline, versus)
