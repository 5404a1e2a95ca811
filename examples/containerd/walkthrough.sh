#!/usr/bin/env bash
# The README's containerd walkthrough as one script, run as root on a host with containerd
# running and a registry at $REGISTRY: install wasm-oci from this checkout (or a wheel built
# from it) into a virtualenv, write the shim's fast launcher onto containerd's PATH, install
# shim.toml and policy.json, check that containerd finds the shim, push the hello example and
# run it with ctr. tests/test_containerd_walkthrough.py runs it against a private containerd,
# every path below overridden.
#
#   WASM_OCI_SRC        the checkout or a wasm_oci-*.whl to install (default: this checkout)
#   WASM_OCI_PREFIX     the virtualenv to install into                (/opt/wasm-oci)
#   SHIM_BIN_DIR        a directory on containerd's PATH             (/usr/local/bin)
#   WASM_OCI_ETC        where shim.toml and policy.json go           (/etc/wasm-oci)
#   CONTAINERD_ADDRESS  containerd's socket                          (/run/containerd/containerd.sock)
#   CONTAINERD_NAMESPACE                                             (default)
#   CONTAINERD_PID      containerd's pid, to read its PATH           (pidof containerd)
#   REGISTRY            a plain-HTTP registry to push to             (127.0.0.1:5000)
#   CTR_FIFO_DIR        ctr's --fifo-dir                             (ctr's default)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=${WASM_OCI_SRC:-$(cd "$here/../.." && pwd)}
prefix=${WASM_OCI_PREFIX:-/opt/wasm-oci}
bin_dir=${SHIM_BIN_DIR:-/usr/local/bin}
etc=${WASM_OCI_ETC:-/etc/wasm-oci}
address=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
namespace=${CONTAINERD_NAMESPACE:-default}
registry=${REGISTRY:-127.0.0.1:5000}
image="$registry/acme/hello:1.0"
fifo_flags=()
[ -z "${CTR_FIFO_DIR:-}" ] || fifo_flags=(--fifo-dir "$CTR_FIFO_DIR")

step() { printf '\n== %s\n' "$*"; }
ctr() { timeout 120 ctr --address "$address" --namespace "$namespace" "$@"; }  # timeout runs the binary

step "install wasm-oci from $src into $prefix"
timeout 120 python3 -m venv "$prefix"
timeout 600 "$prefix/bin/pip" install --quiet --disable-pip-version-check "$src"

step "write the shim's fast launcher into $bin_dir"
"$prefix/bin/python" -m wasm_oci.shim.launcher "$bin_dir"

step "install shim.toml and policy.json into $etc"
install -d "$etc"
install -m 0644 "$here/shim.toml" "$here/policy.json" "$etc/"
if [ "$etc" != /etc/wasm-oci ]; then
  sed -i "s|^policy = \"/etc/wasm-oci/policy.json\"|policy = \"$etc/policy.json\"|" "$etc/shim.toml"
fi
grep '^policy' "$etc/shim.toml"

step "check that containerd finds the shim on its own PATH"
pid=${CONTAINERD_PID:-$(pidof -s containerd || true)}
[ -n "$pid" ] || { echo "no containerd process found (set CONTAINERD_PID)" >&2; exit 1; }
containerd_path=$(tr '\0' '\n' < "/proc/$pid/environ" | sed -n 's/^PATH=//p')
containerd_path=${containerd_path:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
shim=$(PATH=$containerd_path command -v containerd-shim-wasm-oci-v1) || {
  echo "containerd (pid $pid) does not find containerd-shim-wasm-oci-v1 on its PATH ($containerd_path)" >&2
  exit 1
}
echo "containerd runs $shim"
"$shim" -v

step "push the hello example to $image and pull it into containerd"
timeout 120 "$prefix/bin/wasm-oci" push "$here/../hello/hello.wasm" "$image" --plain-http
ctr images pull --plain-http "$image"

step "run it: ctr run --rm --runtime io.containerd.wasm-oci.v1"
output=$(ctr run "${fifo_flags[@]}" --rm --runtime io.containerd.wasm-oci.v1 --env GREETING=hi \
  "$image" hello-walkthrough /hello.wasm from-ctr)
printf '%s\n' "$output"
grep -qx "Hello from wasm-oci!" <<<"$output"
grep -qx "GREETING=hi" <<<"$output"

step "done: containerd runs Wasm images with runtime io.containerd.wasm-oci.v1"
