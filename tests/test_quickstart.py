"""The README's first command stays true: the quickstart runs end to end on the embedded default."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.sh"


def test_quickstart_signs_pulls_verified_and_runs(tmp_path: Path) -> None:
    env = {**os.environ, "WASM_OCI_HOME": str(tmp_path / "home"), "DOCKER_CONFIG": str(tmp_path / "docker")}
    result = subprocess.run(["bash", QUICKSTART], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "pulled bytes are identical to the original" in out
    assert "Verified: bundle signature" in result.stderr
    assert "World target: wasi:cli/command@0.2.0" in out
    assert out.rstrip().endswith("Hello from wasm-oci!\narg: /hello.wasm\narg: world\nGREETING=bonjour\nHello from a preopened directory!")
