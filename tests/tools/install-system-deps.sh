#!/usr/bin/env bash
# Installs the real peers the tests talk to (registry, containerd, oras, cosign, crane,
# containerd's API protos) into a private prefix, without touching the machine's apt sources:
# Debian sid packages are downloaded through a private sources list and unpacked with dpkg -x.
# Idempotent: a package already unpacked (stamp file) is skipped.
set -euo pipefail

prefix=${WASM_OCI_TOOLS:-"$(cd "$(dirname "$0")/../.." && pwd)/.cache/tools"}
sid_packages=(containerd oras cosign crane docker-registry golang-github-containerd-containerd-api-dev)
mkdir -p "$prefix/root" "$prefix/debs" "$prefix/apt/lists/partial" "$prefix/apt/cache/archives/partial"

mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
cat > "$prefix/apt/sid.sources" <<SRC
Types: deb
URIs: $mirror
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

apt_private=(-o "Dir::Etc::SourceList=$prefix/apt/sid.sources" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$prefix/apt/lists" -o "Dir::Cache=$prefix/apt/cache" -o Debug::NoLocking=1)

missing=()
for pkg in "${sid_packages[@]}"; do
  [ -e "$prefix/root/.stamp-$pkg" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fetching from Debian sid: ${missing[*]}" >&2
  apt-get "${apt_private[@]}" -qq update
  (cd "$prefix/debs" && apt-get "${apt_private[@]}" -qq download "${missing[@]}")
  for pkg in "${missing[@]}"; do
    dpkg -x "$(ls "$prefix"/debs/"${pkg}"_*.deb | tail -n 1)" "$prefix/root"
    touch "$prefix/root/.stamp-$pkg"
  done
fi

# The registry binary is installed as /usr/bin/docker-registry by the Debian package.
mkdir -p "$prefix/bin"
for tool in containerd ctr oras cosign crane docker-registry containerd-shim-runc-v2; do
  [ -x "$prefix/root/usr/bin/$tool" ] && ln -sf "$prefix/root/usr/bin/$tool" "$prefix/bin/$tool"
done
echo "$prefix/bin"
