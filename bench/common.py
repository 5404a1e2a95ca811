"""Shared benchmark plumbing: sections of the report, medians and ratios, markdown tables.

Benchmarks start the same real services the tests use (tests/services), so every figure is
measured against a baseline run in the same invocation on the same machine. Each benchmark
module exposes `run(quick: bool) -> Section`; bench/run.py assembles docs/benchmarks.md from them.
"""

from __future__ import annotations

import argparse
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

SHIM_MISSING = "(shim not installed)"
"""What a wasm-oci cell says where the measurement needs the containerd shim and it is absent."""


@dataclass(frozen=True)
class Section:
    """One part of the report: what was measured and how, the table, what the figures mean, and
    its headline rows for the summary table (measurement, wasm-oci, baseline, baseline figure, ratio)."""

    title: str
    intro: str
    table: str
    notes: str = ""
    summary: tuple[tuple[str, str, str, str, str], ...] = ()

    def markdown(self) -> str:
        parts = [f"## {self.title}", self.intro.strip(), self.table.strip()]
        if self.notes:
            parts.append(self.notes.strip())
        return "\n\n".join(parts) + "\n"


SUMMARY_HEADER = ["measurement", "wasm-oci", "baseline", "baseline figure", "wasm-oci / baseline"]


def table(header: Sequence[str], rows: Sequence[Sequence[str]], text: Sequence[int] = (0,)) -> str:
    """A markdown table; the columns numbered in `text` are left-aligned, the others (figures) right-aligned."""
    align = ["---" if i in text else "---:" for i in range(len(header))]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def duration(seconds: float) -> str:
    """A duration at a precision that suits it: 412 us, 3.41 ms, 187 ms, 2.40 s."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 0.01:
        return f"{seconds * 1e3:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def percentile(samples: Sequence[float], q: int) -> float:
    """Interpolated between samples ("inclusive"): the default method extrapolates past the
    largest sample when there are fewer than 100, printing a p99 above the max."""
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


def ratio(ours: float | None, baseline: float | None, lower_is_better: bool = True) -> str:
    """`0.45 (2.2x better)`: the ratio of two figures and which way it cuts; `-` if one is missing."""
    if not ours or not baseline:
        return "-"
    value = ours / baseline
    if abs(value - 1) < 0.05:
        return f"{value:.2f} (even)"
    better = value < 1 if lower_is_better else value > 1
    return f"{value:.2f} ({max(value, 1 / value):.1f}x {'better' if better else 'worse'})"


@dataclass(frozen=True)
class Comparison:
    """One measured operation: ours vs the baseline, samples in seconds.

    `ours` is None where the wasm-oci side cannot be measured on this machine (`missing` says
    why); `baseline` is None where no baseline reports the same thing.
    """

    name: str
    ours: list[float] | None
    baseline: list[float] | None
    baseline_name: str
    missing: str = SHIM_MISSING

    def summary(self) -> tuple[str, str, str, str, str]:
        ours = median(self.ours) if self.ours else None
        baseline = median(self.baseline) if self.baseline else None
        return (
            self.name,
            duration(ours) if ours else self.missing,
            self.baseline_name,
            duration(baseline) if baseline else "-",
            ratio(ours, baseline),
        )

    def row(self) -> list[str]:
        return [*self.summary(), str(len(self.ours or self.baseline or []))]


COMPARISON_HEADER = ["operation", "wasm-oci median", "baseline", "baseline median", "wasm-oci / baseline", "runs"]


def comparisons(rows: Sequence[Comparison]) -> str:
    return table(COMPARISON_HEADER, [row.row() for row in rows], text=(0, 2))


def timed(argv: Sequence[str | os.PathLike[str]], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    """Wall time of a whole command, which must succeed."""
    start = time.perf_counter()
    result = subprocess.run([str(a) for a in argv], capture_output=True, env=env, cwd=cwd)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed: {' '.join(map(str, argv))}\n{result.stderr.decode()}")
    return elapsed


def stopwatch(action: Callable[[], object]) -> float:
    """Wall time of one call."""
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def alternate(runs: int, ours: Callable[[int], float], baseline: Callable[[int], float]) -> tuple[list[float], list[float]]:
    """Interleave the two so drift in machine load hits both equally."""
    a, b = [], []
    for i in range(runs):
        a.append(ours(i))
        b.append(baseline(i))
    return a, b


def main(run: Callable[[bool], Section]) -> None:
    """A benchmark module run on its own: `--quick` or not, its section on stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smoke run: few samples, small sizes")
    print(run(parser.parse_args().quick).markdown())
