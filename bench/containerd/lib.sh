# Shared by the containerd benchmarks (sourced, not run).

# write_containerd_config DIR: a containerd config in DIR with its root, state and socket under DIR and
# CRI off, for `containerd --config DIR/config.toml`.
write_containerd_config() {
  local dir=$1
  cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
TOML
}
