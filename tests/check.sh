#!/usr/bin/env bash
# The code checks: lint (ruff), format (ruff format --check), types (mypy --strict) and the
# import-layer contract (import-linter, in pyproject.toml). CI runs them before the tests;
# locally, `./tests/check.sh` runs them all (`--fix` lets ruff fix and format what it can).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. tests/tools/venv.sh
bin=.venv/bin

# mypy and import-linter see the package as it installs: wasm_oci.* over the top-level folders
# (pyproject's package-dir), here as a tree of links.
tree=.cache/typecheck
rm -rf "$tree" && mkdir -p "$tree/wasm_oci"
for file in wasm_oci/*.py wasm_oci/py.typed; do ln -s "$root/$file" "$tree/wasm_oci/"; done
for package in oci cli shim proto signing engine; do ln -s "$root/$package" "$tree/wasm_oci/$package"; done

status=0
step() { printf '== %s\n' "$1"; shift; "$@" || status=1; }
if [ "${1:-}" = "--fix" ]; then
  $bin/ruff check --fix . || true
  $bin/ruff format .
fi
step "ruff check" $bin/ruff check .
step "ruff format --check" $bin/ruff format --check .
step "mypy --strict" bash -c "cd $tree && $root/$bin/mypy --config-file $root/pyproject.toml --python-executable $root/$bin/python -p wasm_oci"
step "import-linter" bash -c "cd $tree && PYTHONPATH=$root/$tree $root/$bin/lint-imports $root/pyproject.toml"
exit $status
