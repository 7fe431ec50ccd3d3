#!/usr/bin/env bash
# Cold start under containerd: `ctr run --rm` of a wafer command function (containerd-shim-wafer-v1)
# against a busybox container (runc), start to first response of a JavaScript http function (a
# 10 MB component) and of busybox httpd, then the same busybox image as wafer container functions
# (jobs and a server, cold and warm) beside wasm functions, all measured in the same run on this machine. Each run is a new container and a new
# shim process; the shim's compile cache (WAFER_SHIM_CACHE) is a fresh directory at the start, so
# the first run of each function compiles it and the rest load it. Needs root, containerd, runc,
# busybox-static and curl.
#
#   bench/containerd/coldstart.sh [RUNS]            (default 20; release build)
#   PROFILE=dev bench/containerd/coldstart.sh       (the debug build the tests use)
#   SKIP_BUILD=1 PROFILE=dev bench/containerd/coldstart.sh 10
#   BIN_DIR=DIR bench/containerd/coldstart.sh       (wafer and the shim from DIR, e.g. another build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
runs=${1:-20}
command -v busybox >/dev/null || { apt-get install -y -qq busybox-static >/dev/null; }

profile=${PROFILE:-release}
# SKIP_BUILD=1 uses the binaries already built for that profile.
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$profile" -p wafer -p containerd-shim-wafer --manifest-path "$repo/Cargo.toml" >&2
[ "$profile" = dev ] && out=debug || out=$profile
target=${BIN_DIR:-$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$out}

dir=$(mktemp -d)
write_containerd_config "$dir"
mkdir -p "$dir/cache"
WAFER_SHIM_CACHE="$dir/cache" PATH="$target:$PATH" containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
containerd_pid=$!
cleanup() {
  kill "$containerd_pid" 2>/dev/null || true
  wait "$containerd_pid" 2>/dev/null || true
  grep " $dir" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
ctr() { command ctr --address "$dir/containerd.sock" --namespace bench "$@"; }
until ctr version >/dev/null 2>&1; do sleep 0.1; done

"$target/wafer" package "$repo/examples/command-c/greet.wasm" --output "$dir/greet.tar" --tag greet:bench --kind command >&2
"$target/wafer" package "$repo/examples/http-js/hello.wasm" --output "$dir/hello-js.tar" --tag hello-js:bench >&2
python3 "$repo/examples/container/image.py" "$dir/busybox.tar"
ctr images import "$dir/greet.tar" >&2
ctr images import "$dir/hello-js.tar" >&2
ctr images import "$dir/busybox.tar" >&2

# Prints LABEL with the median, the fastest and the first (the run that compiled) of the times after it.
report() {
  local label=$1 first=$2
  shift
  printf '%s\n' "$@" | sort -n | awk -v label="$label" -v first="$first" '{t[NR]=$1} END {printf "%-40s median %7.1f ms   fastest %7.1f ms   first %7.1f ms   (%d runs)\n", label, t[int((NR+1)/2)], t[1], first, NR}'
}

# $runs runs of: ctr run --rm IMAGE ID COMMAND..., each printing a greeting.
measure() {
  local label=$1 image=$2; shift 2
  local times=()
  for i in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    ctr run --rm "${runtime[@]}" "$image" "bench-$i" "$@" </dev/null >/dev/null 2>&1
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000000 )))
  done
  report "$label" "${times[@]}"
}

# $runs runs of: ctr run --detach of IMAGE serving HTTP on PORT (an http function, told in WAFER_LISTEN,
# or COMMAND... after the port), from the start until it first answers 200; then the task is killed
# and removed.
measure_http() {
  local label=$1 image=$2 port=$3; shift 3
  local times=()
  for i in $(seq "$runs"); do
    local start end
    start=$(date +%s%N)
    ctr run --detach --net-host --env "WAFER_LISTEN=127.0.0.1:$port" "${runtime[@]}" "$image" "web-$i" "$@" >/dev/null
    until curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; do sleep 0.005; done
    end=$(date +%s%N)
    times+=($(( (end - start) / 1000000 )))
    ctr tasks delete --force "web-$i" >/dev/null 2>&1 || true
    ctr containers rm "web-$i" >/dev/null 2>&1 || true
  done
  report "$label" "${times[@]}"
}

echo "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | head -1 | awk '{print $3}'), $(nproc) cores"
runtime=(--runtime io.containerd.wafer.v1)
measure "wafer command (containerd-shim-wafer)" docker.io/library/greet:bench /app.wasm bench
measure_http "wafer JS http, start to first answer" docker.io/library/hello-js:bench "$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
runtime=()
measure "busybox echo (runc)" docker.io/library/wafer-busybox:example /bin/echo Hello, bench!
web_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
measure_http "busybox httpd (runc), to first answer" docker.io/library/wafer-busybox:example "$web_port" \
  /bin/httpd -f -p "127.0.0.1:$web_port" -h /app/www

# The same image and the same wasm as wafer functions, through `wafer serve` on this containerd: each
# call to a container function is a new container (cold: created for the call; warm: taken from the
# pool `--min-warm` keeps, created and not started), each call to a wasm function a new instance.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$target/wafer" serve --listen "127.0.0.1:$port" --data-dir "$dir/wafer" --containerd-socket "$dir/containerd.sock" \
  >"$dir/wafer.log" 2>&1 &
wafer_pid=$!
trap 'kill $wafer_pid 2>/dev/null || true; wait $wafer_pid 2>/dev/null || true; cleanup' EXIT
export WAFER_SERVER="http://127.0.0.1:$port"
until curl -fsS -o /dev/null "$WAFER_SERVER/healthz" 2>/dev/null; do sleep 0.05; done
warm=$(( runs < 64 ? runs : 64 ))
"$target/wafer" deploy "$dir/busybox.tar" --kind container --name job-cold --arg /bin/echo --arg 'Hello, bench!' >&2
"$target/wafer" deploy "$dir/busybox.tar" --kind container --name job-warm --min-warm "$warm" \
  --arg /bin/echo --arg 'Hello, bench!' >&2
"$target/wafer" deploy "$dir/busybox.tar" --kind container --name http-warm --port 8080 --min-warm 1 \
  --arg /app/serve.sh >&2
"$target/wafer" deploy "$repo/examples/command-c/greet.wasm" --kind command --name greet >&2
"$target/wafer" deploy "$repo/examples/wagi-c/hello.wasm" --name hello-c >&2
wafer_containers() { command ctr --address "$dir/containerd.sock" --namespace wafer containers ls --quiet | wc -l; }
until [ "$(wafer_containers)" -ge "$((warm + 1))" ]; do sleep 0.1; done

# $runs calls of function NAME, each timed from the request to the whole answer.
measure_call() {
  local label=$1 name=$2
  local times=()
  for i in $(seq "$runs"); do
    times+=($(curl -fsS -o /dev/null -d bench -w '%{time_total}' "$WAFER_SERVER/fn/$name" |
      awk '{printf "%.1f", $1 * 1000}'))
  done
  report "$label" "${times[@]}"
}
# $runs first calls of a container serving HTTP, each after a new deploy of it (which stops the
# instance of the version before): the call creates and starts the container, waits for httpd to
# listen, and is proxied to it.
measure_http_cold() {
  local times=()
  for i in $(seq "$runs"); do
    "$target/wafer" deploy "$dir/busybox.tar" --kind container --name http-cold --port 8080 \
      --arg /app/serve.sh >/dev/null
    times+=($(curl -fsS -o /dev/null -w '%{time_total}' "$WAFER_SERVER/fn/http-cold/cgi-bin/hello" |
      awk '{printf "%.1f", $1 * 1000}'))
  done
  report "wafer container http, cold" "${times[@]}"
}
measure_call "wafer container job, cold" job-cold
measure_call "wafer container job, warm" job-warm
measure_http_cold
measure_call "wafer container http, warm" http-warm/cgi-bin/hello
measure_call "wafer wasm command (C)" greet
measure_call "wafer wasm WAGI (C)" hello-c
