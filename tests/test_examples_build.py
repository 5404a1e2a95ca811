"""The committed example and fixture binaries are exactly what their WAT/WIT sources build to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BUILD = Path(__file__).resolve().parents[1] / "examples" / "build.sh"


def test_committed_wasm_matches_a_fresh_reproducible_build() -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", BUILD, "--check"], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
