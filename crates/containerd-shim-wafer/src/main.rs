//! `containerd-shim-wafer-v1`: containerd's runtime `io.containerd.wafer.v1`, which runs wafer functions
//! as containers with wafer's own engine, in one of two modes (`mode.rs` decides which):
//!
//! - **Per-process mode** ([`process`]): runwasi's `containerd-shim-wasm` does the containerd side — the
//!   task API, the container's namespaces and cgroups (through youki's libcontainer), and finding the
//!   wasm — and the function runs inside the container's own process, loaded from the node's cache of
//!   compiled functions ([`cache`]) when it was compiled here before.
//! - **Agent mode** ([`agent`]): the shim keeps the task API and hands each container's function to the
//!   node agent (`wafer node`), which runs the functions of every container on the node in one
//!   process; the shim binds each HTTP function's listener inside its pod's network namespace
//!   ([`container`] reads what it needs of the spec and the root filesystem, [`layer`] the wasm layer
//!   of a wasm OCI artifact).
//!
//! In both, [`logging`] sends the `tracing` events of wafer and wasmtime to containerd's log, and keeps
//! wasmtime-wasi's span per WASI call out of it.

mod agent;
mod cache;
mod container;
mod layer;
mod logging;
mod mode;
mod process;

use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{version, Cli, Config, Shim, Version};

/// The shim of per-process mode: containerd finds it as `containerd-shim-wafer-v1` on its `PATH`.
struct WaferShim;

impl Shim for WaferShim {
    fn name() -> &'static str {
        "wafer"
    }

    fn version() -> Version {
        version!()
    }

    type Sandbox = WaferSandbox;

    fn supported_layers_types() -> &'static [&'static str] {
        wafer_api::oci::WASM_LAYERS
    }
}

/// One container's function, in its own process.
#[derive(Default)]
struct WaferSandbox;

impl Sandbox for WaferSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        process::run(ctx).await
    }
}

fn main() {
    logging::init();
    match mode::choose() {
        mode::Mode::Agent(socket) => agent::run(socket),
        mode::Mode::Process => {
            // Before the shim starts: the process every container runs in is forked from this one.
            cache::open();
            WaferShim::run(Config {
                default_log_level: "info".into(),
                ..Default::default()
            });
        }
    }
}
