"""The benchmark harness runs (quick mode) on every test run, so it cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "run.py"


def test_quick_benchmark_prints_a_table(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, BENCH, "--quick"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| push") or line.startswith("| pull")]
    assert len(rows) == 2, result.stdout
    for row in rows:
        ratio = float(row.split("|")[5])
        assert ratio > 0
