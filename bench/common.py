"""Shared benchmark plumbing: timing whole commands, medians and ratios, markdown tables.

Benchmarks start the same real services the tests use (tests/services), so every figure is
measured against a baseline run in the same invocation on the same machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


@dataclass(frozen=True)
class Comparison:
    """One measured operation: ours vs the baseline, medians of `runs` samples in seconds."""

    name: str
    ours: list[float]
    baseline: list[float]
    baseline_name: str

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline)

    @property
    def ratio(self) -> float:
        """ours / baseline: below 1.0 means wasm-oci is faster."""
        return self.ours_median / self.baseline_median


def timed(argv: Sequence[str | os.PathLike[str]], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run([str(a) for a in argv], capture_output=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(map(str, argv))}\n{result.stderr.decode()}")
    return elapsed


def alternate(runs: int, ours: Callable[[int], float], baseline: Callable[[int], float]) -> tuple[list[float], list[float]]:
    """Interleave the two so drift in machine load hits both equally."""
    a, b = [], []
    for i in range(runs):
        a.append(ours(i))
        b.append(baseline(i))
    return a, b


def markdown(rows: Sequence[Comparison]) -> str:
    lines = [
        "| operation | wasm-oci median | baseline | baseline median | ratio (wasm-oci / baseline) | runs |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row.name} | {row.ours_median * 1000:.0f} ms | {row.baseline_name} | "
            f"{row.baseline_median * 1000:.0f} ms | {row.ratio:.2f} | {len(row.ours)} |"
        )
    return "\n".join(lines)
