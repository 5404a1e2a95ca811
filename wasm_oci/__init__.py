"""wasm-oci: package, sign, distribute and run WebAssembly components as OCI artifacts."""

from pathlib import Path

__version__ = "0.1.0"
"""The one place the version is written (pyproject.toml reads it from here)."""

# In a checkout, `python -m pytest` (or any `import wasm_oci` from the repository root) finds
# this folder before the installed package; the subpackages live in top-level folders the
# installed package maps with setuptools' package-dir. Map them the same way here, so the source
# tree imports like the installed package does.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "oci" / "__init__.py").is_file():
    __path__.append(str(_checkout))
