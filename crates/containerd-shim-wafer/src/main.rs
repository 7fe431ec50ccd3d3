//! `containerd-shim-wafer-v1`: containerd's runtime `io.containerd.wafer.v1`, which runs wafer functions
//! as containers with wafer's own engine.
//!
//! runwasi's `containerd-shim-wasm` does the containerd side: the task API, the container's namespaces
//! and cgroups (through youki's libcontainer), and finding the wasm, either as the image's wasm layers
//! or as the file the container's first argument names in its root filesystem. This crate is the part
//! inside the container ([`function`]): it loads the wasm with `wafer-engine` (from the node's cache of
//! compiled functions, [`cache`], when it was compiled here before) and runs it as its kind says, under
//! the same limits `wafer serve` applies.

mod cache;
mod function;

use containerd_shim_wasm::sandbox::context::RuntimeContext;
use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::shim::{version, Cli, Config, Shim, Version};

/// The shim: containerd finds it as `containerd-shim-wafer-v1` on its `PATH`.
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

/// One container's function.
#[derive(Default)]
struct WaferSandbox;

impl Sandbox for WaferSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        function::run(ctx).await
    }
}

fn main() {
    // Before the shim starts: the process every container runs in is forked from this one.
    cache::open();
    WaferShim::run(Config {
        default_log_level: "info".into(),
        ..Default::default()
    });
}
