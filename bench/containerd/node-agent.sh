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
# shellcheck source=lib.sh
. "$here/lib.sh"
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 50 500)
modes=${MODES:-agent process}

profile=${PROFILE:-release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$profile" -p wafer -p containerd-shim-wafer --manifest-path "$repo/Cargo.toml" >&2
[ "$profile" = dev ] && out=debug || out=$profile
target=${BIN_DIR:-$(cd "$repo" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/$out}

dir=$(mktemp -d)
containerd_pid=
agent_pid=
ctr() { command ctr --address "$dir/containerd.sock" --namespace bench "$@"; }
netns_prefix="wafer-bench-$$"
teardown_containers() {
  [ -n "$containerd_pid" ] || return 0
  for id in $(ctr tasks ls -q 2>/dev/null); do ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  sleep 1
  for id in $(ctr containers ls -q 2>/dev/null); do
    ctr tasks rm -f "$id" >/dev/null 2>&1 || true
    ctr containers rm "$id" >/dev/null 2>&1 || true
  done
  for ns in $(ip netns ls | awk '{print $1}' | grep "^$netns_prefix-" || true); do ip netns del "$ns"; done
}
stop_containerd() {
  teardown_containers
  [ -z "$containerd_pid" ] || { kill "$containerd_pid" 2>/dev/null || true; wait "$containerd_pid" 2>/dev/null || true; }
  containerd_pid=
  grep " $dir/root" /proc/mounts | cut -d' ' -f2 | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
cleanup() {
  stop_containerd
  [ -z "$agent_pid" ] || kill "$agent_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# containerd with the shim on its PATH; in agent mode with WAFER_NODE_AGENT in its environment, which
# its shims inherit (ctr cannot pass the runtime option).
start_containerd() {
  local mode=$1
  rm -rf "$dir/root" "$dir/state"
  write_containerd_config "$dir"
  local agent_env=
  [ "$mode" = agent ] && agent_env="$dir/node.sock"
  WAFER_NODE_AGENT="$agent_env" WAFER_SHIM_CACHE="$dir/shim-cache" PATH="$target:$PATH" \
    containerd --config "$dir/config.toml" >>"$dir/containerd.log" 2>&1 &
  containerd_pid=$!
  until ctr version >/dev/null 2>&1; do sleep 0.1; done
  ctr images import "$dir/hello.tar" >/dev/null
}

mkdir -p "$dir/shim-cache"
"$target/wafer" package "$repo/examples/wagi-c/hello.wasm" --output "$dir/hello.tar" --tag hello:bench >&2
"$target/wafer" node --socket "$dir/node.sock" --cache "$dir/node-cache" 2>"$dir/agent.log" &
agent_pid=$!
until [ -S "$dir/node.sock" ]; do sleep 0.05; done

# The summed proportional set size, in MiB, of every shim and every process under it (a container's
# process in per-process mode) or, with `agent`, of the agent; then how many processes that is.
memory_mib() {
  local which=$1 roots=() pid exe pss total=0 count=0
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    case "$which:$exe" in
      "shims:$target/containerd-shim-wafer-v1") roots+=("$pid") ;;
      "agent:$target/wafer") roots+=("$pid") ;;
    esac
  done
  for pid in $(ps -e -o pid=,ppid= | awk -v roots="${roots[*]}" '
      BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
      { parent[$1] = $2 }
      END { changed = 1
            while (changed) { changed = 0
              for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
            for (p in keep) print p }'); do
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || true)
    total=$((total + ${pss:-0}))
    count=$((count + 1))
  done
  awk -v kib="$total" -v n="$count" 'BEGIN {printf "%.1f %d\n", kib / 1024, n}'
}

now_ms() { date +%s%N | cut -b1-13; }

echo "| mode | containers | memory, MiB (agent + shims and their processes) | per container, MiB | processes under the shims | start → first answer, median ms | compiles |"
echo "|---|---|---|---|---|---|---|"
for mode in $modes; do
  start_containerd "$mode"
  for n in "${counts[@]}"; do
    teardown_containers
    compiled_before=$(grep -c 'origin=Compiled' "$dir/agent.log" || true)
    times=()
    for i in $(seq 1 "$n"); do
      ns="$netns_prefix-$i"
      ip netns add "$ns"
      ip -n "$ns" link set lo up
      started=$(now_ms)
      ctr run -d --runtime io.containerd.wafer.v1 --with-ns "network:/var/run/netns/$ns" \
        --env WAFER_LISTEN=127.0.0.1:8080 docker.io/library/hello:bench "web$i" >/dev/null
      until ip netns exec "$ns" curl -sf -o /dev/null "http://127.0.0.1:8080/?name=bench"; do sleep 0.005; done
      times+=($(($(now_ms) - started)))
    done
    sleep 2
    read -r shims processes < <(memory_mib shims)
    agent=0
    [ "$mode" = agent ] && read -r agent _ < <(memory_mib agent)
    memory=$(awk -v a="$agent" -v s="$shims" 'BEGIN {printf "%.1f", a + s}')
    per=$(awk -v m="$memory" -v n="$n" 'BEGIN {printf "%.2f", m / n}')
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{t[NR]=$1} END {print t[int((NR+1)/2)]}')
    compiled=$(( $(grep -c 'origin=Compiled' "$dir/agent.log" || true) - compiled_before ))
    [ "$mode" = agent ] || compiled="— (per process: the shim cache)"
    echo "| $mode | $n | $memory ($agent + $shims) | $per | $processes | $median | $compiled |"
  done
  stop_containerd
done
