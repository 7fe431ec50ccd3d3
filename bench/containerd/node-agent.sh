#!/usr/bin/env bash
# Density and start-up of the two shim modes under containerd: N http containers of one WAGI module,
# each in a network namespace of its own, run through containerd-shim-wafer-v1 in agent mode (one
# `wafer node` for all of them) and in per-process mode (a process per container), in the same run.
# For each mode and each N it reports the memory of everything wafer runs (proportional set size, so
# shared pages count once: the agent, every shim and every container process), the time from
# `ctr run` to the function's first answer inside its namespace, and the agent's compile count.
# Needs root, containerd, runc, iproute2 and curl.
#
#   bench/containerd/node-agent.sh [N...]            (default 1 50 500; release build)
#   SKIP_BUILD=1 PROFILE=dev bench/containerd/node-agent.sh 1 50
#   MODES="agent" bench/containerd/node-agent.sh 500 (one mode only)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 50 500)
modes=${MODES:-agent process}

profile=${PROFILE:-release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$profile" -p wafer -p containerd-shim-wafer --manifest-path "$repo/Cargo.toml" >&2
[ "$profile" = dev ] && out=debug || out=$profile
target=${BIN_DIR:-$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$out}

dir=$(mktemp -d)
cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
TOML
mkdir -p "$dir/shim-cache"
WAFER_SHIM_CACHE="$dir/shim-cache" PATH="$target:$PATH" containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
containerd_pid=$!
agent_pid=
ctr() { command ctr --address "$dir/containerd.sock" --namespace bench "$@"; }
netns_prefix="wafer-bench-$$"
teardown_containers() {
  for id in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  sleep 1
  for id in $(ctr containers ls -q 2>/dev/null); do
    ctr tasks rm -f "$id" >/dev/null 2>&1 || true
    ctr containers rm "$id" >/dev/null 2>&1 || true
  done
  for ns in $(ip netns ls | awk '{print $1}' | grep "^$netns_prefix-" || true); do ip netns del "$ns"; done
}
cleanup() {
  teardown_containers
  [ -z "$agent_pid" ] || kill "$agent_pid" 2>/dev/null || true
  kill "$containerd_pid" 2>/dev/null || true
  wait "$containerd_pid" 2>/dev/null || true
  grep " $dir" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
until ctr version >/dev/null 2>&1; do sleep 0.1; done

"$target/wafer" package "$repo/examples/wagi-c/hello.wasm" --output "$dir/hello.tar" --tag hello:bench >&2
ctr images import "$dir/hello.tar" >&2
printf 'node_agent = "%s"\n' "$dir/node.sock" >"$dir/agent.toml"
printf 'node_agent = ""\n' >"$dir/process.toml"

"$target/wafer" node --socket "$dir/node.sock" --cache "$dir/node-cache" 2>"$dir/agent.log" &
agent_pid=$!
until [ -S "$dir/node.sock" ]; do sleep 0.05; done

# The summed proportional set size, in MiB, of the agent, every shim and every process they started.
memory_mib() {
  local total=0 pid exe pss
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    case "$exe" in
      "$target/containerd-shim-wafer-v1"|"$target/wafer") ;;
      *) continue ;;
    esac
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    total=$((total + ${pss:-0}))
  done
  awk -v kib="$total" 'BEGIN {printf "%.1f", kib / 1024}'
}

now_ms() { date +%s%N | cut -b1-13; }

echo "| mode | containers | memory (MiB, agent + shims + containers) | per container (MiB) | start → first answer, median (ms) | compiles |"
echo "|---|---|---|---|---|---|"
for n in "${counts[@]}"; do
  for mode in $modes; do
    teardown_containers
    compiled_before=$(grep -c 'origin=Compiled' "$dir/agent.log" || true)
    times=()
    for i in $(seq 1 "$n"); do
      ns="$netns_prefix-$i"
      ip netns add "$ns"
      ip -n "$ns" link set lo up
      started=$(now_ms)
      ctr run -d --runtime io.containerd.wafer.v1 --runtime-config-path "$dir/$mode.toml" \
        --with-ns "network:/var/run/netns/$ns" --env WAFER_LISTEN=127.0.0.1:8080 \
        docker.io/library/hello:bench "web$i" >/dev/null
      until ip netns exec "$ns" curl -sf -o /dev/null "http://127.0.0.1:8080/?name=bench"; do sleep 0.005; done
      times+=($(($(now_ms) - started)))
    done
    sleep 2
    memory=$(memory_mib)
    per=$(awk -v m="$memory" -v n="$n" 'BEGIN {printf "%.2f", m / n}')
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{t[NR]=$1} END {print t[int((NR+1)/2)]}')
    compiled=$(( $(grep -c 'origin=Compiled' "$dir/agent.log" || true) - compiled_before ))
    [ "$mode" = agent ] || compiled="(each process loads the shim cache)"
    echo "| $mode | $n | $memory | $per | $median | $compiled |"
  done
done
