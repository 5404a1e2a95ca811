#!/usr/bin/env bash
# Installs the real peers the tests talk to into a private prefix, without touching the machine's
# apt sources or installed packages: Debian packages are downloaded through a private sources list
# per suite and unpacked with dpkg -x.
#   sid:      containerd 2.1 + ctr, oras, cosign, crane, docker-registry (CNCF distribution),
#             containerd's API .proto files, CRI v1's api.proto, CNI plugins
#   trixie:   containerd 1.7 + ctr (the 1.x line, task API v2), unpacked into a separate root
#   bookworm: runc (the baseline for benchmarks), tinyproxy (an HTTP forward proxy)
#   crates.io: WASI 0.2.0's WIT files (the `wasi` crate), for building wasi:http test guests
# Idempotent: a package already unpacked (stamp file) is skipped. Prints the bin dir.
set -euo pipefail

prefix=${WASM_OCI_TOOLS:-"$(cd "$(dirname "$0")/../.." && pwd)/.cache/tools"}
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

# fetch SUITE ROOT PACKAGE...: unpack the packages of SUITE into ROOT.
fetch() {
  local suite=$1 root=$2; shift 2
  local apt="$prefix/apt/$suite" missing=() pkg
  for pkg in "$@"; do
    [ -e "$root/.stamp-$pkg" ] || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  mkdir -p "$root" "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" "$suite" > "$apt/$suite.sources"
  local opts=(-o "Dir::Etc::SourceList=$apt/$suite.sources" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1)
  echo "fetching from Debian $suite: ${missing[*]}" >&2
  apt-get "${opts[@]}" -qq update
  (cd "$apt/debs" && apt-get "${opts[@]}" -qq download "${missing[@]}" 2>/dev/null)
  for pkg in "${missing[@]}"; do
    dpkg -x "$(ls "$apt"/debs/"${pkg}"_*.deb | tail -n 1)" "$root"
    touch "$root/.stamp-$pkg"
  done
}

fetch sid "$prefix/root" containerd oras cosign crane docker-registry golang-github-containerd-containerd-api-dev
fetch trixie "$prefix/containerd-1.7" containerd
fetch bookworm "$prefix/root" runc busybox-static tinyproxy-bin  # tinyproxy: the forward proxy of the registry-proxy tests
fetch sid "$prefix/root" golang-github-containerd-ttrpc-dev  # ttrpc's request.proto, for tests/test_proto_drift.py
fetch sid "$prefix/root" golang-k8s-cri-api-dev  # CRI v1 api.proto, for tests/test_proto_drift.py
fetch sid "$prefix/root" containernetworking-plugins  # CNI bridge, host-local, loopback, portmap (usr/lib/cni)

# WASI 0.2.0's WIT (the `wasi` crate's wit/deps): what the wasi:http proxy test guests are built
# against (tests/services/proxy_components.py). Pinned by digest.
wit="$prefix/root/wasi-0.2.0-wit"
if [ ! -e "$wit/.stamp" ]; then
  crate="$prefix/wasi-0.13.0+wasi-0.2.0.crate"
  echo "fetching WASI 0.2.0 WIT from crates.io" >&2
  curl -fsSL --retry 3 --max-time 120 -o "$crate" "https://static.crates.io/crates/wasi/wasi-0.13.0%2Bwasi-0.2.0.crate"
  echo "652cd73449d0b957a2743b70c72d79d34a5fa505696488f4ca90b46f6da94118  $crate" | sha256sum -c --quiet
  rm -rf "$wit" && mkdir -p "$wit"
  tar xzf "$crate" -C "$wit" --strip-components=3 "wasi-0.13.0+wasi-0.2.0/wit/deps"
  touch "$wit/.stamp"
fi

# `ip` deletes the CRI tests' CNI bridge; a minimal machine may lack it (the machine's own apt).
command -v ip >/dev/null || { apt-get -qq update && apt-get -qq install -y iproute2; } >&2

mkdir -p "$prefix/bin"
for tool in containerd ctr oras cosign crane docker-registry containerd-shim-runc-v2 tinyproxy; do
  ln -sf "$prefix/root/usr/bin/$tool" "$prefix/bin/$tool"
done
ln -sf "$prefix/root/usr/sbin/runc" "$prefix/bin/runc"
for tool in containerd ctr containerd-shim-runc-v2; do
  ln -sf "$prefix/containerd-1.7/usr/bin/$tool" "$prefix/bin/$tool-1.7"
done
echo "$prefix/bin"
