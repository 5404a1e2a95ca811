#!/usr/bin/env bash
# The main job on the embedded default, on a fresh machine: install, then package the example
# component, push it signed into a local OCI image layout, pull it back digest- and
# signature-verified, show what it is, and run it in the sandboxed engine.
# No registry and no containerd needed; everything it writes stays under .cache/demo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
wasm_oci=.venv/bin/wasm-oci
demo=.cache/demo
rm -rf "$demo" && mkdir -p "$demo"
# A home of its own: the demo's local store and compile cache stay under .cache/demo, not in
# your ~/.local/share/wasm-oci (unset WASM_OCI_HOME, or drop this line, to use your own).
export WASM_OCI_HOME="$root/$demo/home"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "package examples/hello/hello.wasm into the local store (reproducible: fixed creation time)"
$wasm_oci package examples/hello/hello.wasm -t hello:demo --created 2024-01-01T00:00:00Z

step "make a signing key (cosign's key format; a demo key without password)"
$wasm_oci keygen --output-key-prefix "$demo/demo" --no-password

step "push it into an OCI image layout at $demo/layout (content addressed), signed in the same step"
$wasm_oci push hello:demo "oci:$demo/layout:v1" --sign-key "$demo/demo.key" --format json

step "pull it back, verifying the signature first and every blob's digest, and write the wasm out"
$wasm_oci pull "oci:$demo/layout:v1" --verify-key "$demo/demo.pub" -o "$demo/hello.wasm"
cmp "$demo/hello.wasm" examples/hello/hello.wasm && echo "pulled bytes are identical to the original"

step "what it is, and who signed it"
$wasm_oci inspect "oci:$demo/layout:v1" --verify-key "$demo/demo.pub"

step "run it in the engine: only the granted args, env and directory are visible to the guest"
mkdir -p "$demo/data" && echo "Hello from a preopened directory!" > "$demo/data/greeting.txt"
$wasm_oci run --env GREETING=bonjour --dir "$demo/data:/data:ro" "oci:$demo/layout:v1" -- world
