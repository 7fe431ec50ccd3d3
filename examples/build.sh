#!/usr/bin/env bash
# Rebuilds every example's .wasm from source, offline but for the package registries.
#
#   examples/build.sh            # all examples, and the C guests of the test suite
#   examples/build.sh wagi-c     # some of them (`test-fixtures` for crates/wafer/tests/fixtures)
#
# Toolchains are installed when missing: clang + Debian's wasi-libc (apt), componentize-py (pip) and
# componentize-js (npm). The WASI/wasi:http WIT the components are built against is the one shipped in
# the wasmtime-wasi-http crate wafer itself is built with, found through `cargo metadata`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(wagi-c command-c http-python http-js http-fetch-js test-fixtures)

need_apt() {
  if ! command -v clang >/dev/null || ! dpkg -s wasi-libc libclang-rt-14-dev-wasm32 >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld wasi-libc libclang-rt-14-dev-wasm32 >/dev/null
  fi
}

wit_dir() {
  local manifest
  manifest=$(cd "$here/.." && cargo metadata --format-version 1 2>/dev/null |
    python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="wasmtime-wasi-http"))')
  dirname "$manifest"
}

build_c() {
  need_apt
  local dir=$1
  for src in "$dir"/*.c; do
    clang --target=wasm32-wasi -O2 -Wl,--strip-all -o "${src%.c}.wasm" "$src"
    echo "built ${src%.c}.wasm"
  done
}

build_python() {
  command -v componentize-py >/dev/null || pip install --quiet componentize-py==0.25.1
  local wit
  wit="$(wit_dir)/wit"
  (cd http-python && componentize-py -d "$wit" -w wasi:http/proxy@0.2.12 componentize app -o hello.wasm)
  rm -rf http-python/__pycache__
  echo "built http-python/hello.wasm"
}

build_js() {
  local dir=$1 wit
  wit="$(wit_dir)/wit"
  [ -d node_modules/@bytecodealliance/componentize-js ] || npm install --no-audit --no-fund --silent
  # componentize-js wants the WIT at the exact wasi version its engine exports (0.2.10), by a path under
  # the working directory: package versions and `@since` gates are rewritten to it.
  rm -rf .wit && cp -r "$wit" .wit
  sed -i -E 's/0\.2\.1[0-9]/0.2.10/g' .wit/*.wit .wit/deps/*.wit
  node componentize-js.mjs "$dir" .wit
  rm -rf .wit
  echo "built $dir/hello.wasm"
}

for target in "${targets[@]}"; do
  case "$target" in
    wagi-c | command-c) build_c "$target" ;;
    test-fixtures) build_c ../crates/wafer/tests/fixtures ;;
    http-python) build_python ;;
    http-js | http-fetch-js) build_js "$target" ;;
    *) echo "unknown example: $target" >&2; exit 2 ;;
  esac
done
