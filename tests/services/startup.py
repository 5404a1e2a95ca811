"""What a CLI command imports: run in a fresh interpreter, the modules of interest it left loaded."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

HEAVY = ("oras", "requests", "urllib3", "jsonschema", "cryptography", "wasmtime", "wasm_oci.engine", "concurrent.futures")
"""What no command should import unless it needs it (each costs milliseconds to ~150 ms)."""

_PROBE = """
import sys
from wasm_oci.cli.main import main
try:
    main(sys.argv[2:])
except SystemExit as exit:
    assert not exit.code, exit.code
print("loaded:", *sorted(name for name in sys.argv[1].split(",") if name in sys.modules))
"""


def loaded(args: Sequence[str | Path], env: Mapping[str, str], names: Sequence[str] = HEAVY) -> list[str]:
    """Which of `names` `wasm-oci ARGS` imported (it must exit 0)."""
    argv = [sys.executable, "-c", _PROBE, ",".join(names), *map(str, args)]
    run = subprocess.run(argv, capture_output=True, text=True, env=dict(env), timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()[-1].removeprefix("loaded:").split()
