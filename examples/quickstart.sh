#!/usr/bin/env bash
# The main job on the embedded default, on a fresh machine: install, then package the example
# component, push it into a local OCI image layout, pull it back digest-verified, and show it.
# No registry and no containerd needed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
wasm_oci=.venv/bin/wasm-oci
demo=.cache/demo
rm -rf "$demo" && mkdir -p "$demo"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "package examples/hello/hello.wasm into the local store (reproducible: fixed creation time)"
$wasm_oci package examples/hello/hello.wasm -t hello:demo --created 2024-01-01T00:00:00Z

step "push it into an OCI image layout at $demo/layout (content addressed)"
$wasm_oci push hello:demo "oci:$demo/layout:v1" --format json

step "pull it back, verifying every blob's digest, and write the wasm out"
$wasm_oci pull "oci:$demo/layout:v1" -o "$demo/hello.wasm"
cmp "$demo/hello.wasm" examples/hello/hello.wasm && echo "pulled bytes are identical to the original"

step "what it is"
$wasm_oci inspect "oci:$demo/layout:v1"
