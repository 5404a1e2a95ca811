"""Write a fast launcher for the shim: `python -m wasm_oci.shim.launcher DIR`.

pip's console script starts Python with `site`, which costs ~15 ms here (more with an
editable install's import hook) on every `start` and `delete` containerd runs. The launcher
runs `python -S` and puts this installation's package folders on sys.path itself, so the
two commands cost little more than the interpreter. The daemon they spawn runs with `site`
as usual. Rewrite the launcher after moving the installation.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import wasm_oci
import wasm_oci.shim
from wasm_oci.shim.main import NAME

TEMPLATE = """#!{python} -S
# {name}: fast launcher written by `python -m wasm_oci.shim.launcher` (runs without site).
import sys
sys.path[:0] = {roots!r}
import wasm_oci
wasm_oci.__path__.extend({extra!r})
from wasm_oci.shim.main import main
main()
"""


def launcher_text(python: str = sys.executable) -> str:
    package_dirs = [os.path.abspath(p) for p in wasm_oci.__path__]
    roots = sorted({os.path.dirname(p) for p in package_dirs})
    # An editable install maps wasm_oci.shim (and its siblings) to folders outside wasm_oci/.
    extra = sorted({os.path.dirname(os.path.abspath(p)) for p in wasm_oci.shim.__path__} - set(package_dirs))
    return TEMPLATE.format(python=python, name=NAME, roots=roots, extra=extra)


def write(directory: Path) -> Path:
    path = directory / NAME
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{NAME}.tmp")
    temporary.write_text(launcher_text())
    temporary.chmod(0o755)
    temporary.replace(path)
    return path


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.executable} -m wasm_oci.shim.launcher DIR")
    print(write(Path(sys.argv[1])))
