"""wasm-oci installed the way the docs tell users to, for every benchmark that starts it as a process.

docs/shim.md "Install": `python3 -m venv DIR && DIR/bin/pip install /path/to/wasm-oci`, a regular
(not editable) install. The development venv that runs the benchmarks holds an editable install,
whose import finder costs every interpreter start ~15 ms of `site` (pathlib, re and urllib.parse
on the start-up path): a figure taken with it is not what a user gets. The install is made once
per benchmark process, in a temporary directory removed at exit; `WASM_OCI_BENCH_PRODUCT=DIR`
reuses an install made before, for running one section alone repeatedly.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from common import REPO

INSTALL = "docs/shim.md Install: `python3 -m venv DIR && DIR/bin/pip install REPO` (not editable)"
"""How the product under test was installed, for the report's Machine section."""


@functools.cache
def venv() -> Path:
    """The directory of the documented install, made on first use."""
    reused = os.environ.get("WASM_OCI_BENCH_PRODUCT")
    if reused:
        return Path(reused)
    directory = Path(tempfile.mkdtemp(prefix="wasm-oci-product-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    subprocess.run(["python3", "-m", "venv", str(directory)], check=True, timeout=120)
    pip = [str(directory / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(REPO)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"benchmark set-up: the documented install failed:\n{done.stderr}")
    return directory


def python() -> str:
    """The installed product's interpreter (what the shim launcher and `python -m` use)."""
    return str(venv() / "bin" / "python")


def cli() -> str:
    """The `wasm-oci` console script pip wrote for the installed product."""
    return str(venv() / "bin" / "wasm-oci")
