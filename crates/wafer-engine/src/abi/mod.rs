//! One adapter per function kind: [`http`] (wasi:http components; [`spin1`] for Spin 1's core modules
//! of kind `http`), [`wagi`] (CGI over WASI preview1),
//! [`proxy`] (proxy-wasm modules, as Layotto runs them) and [`command`] (jobs). Each makes its store and
//! runs the guest through the one bounded run of `run.rs`. Core modules of both `wagi` and `command`
//! start at an export, normally `_start`; [`run_start`] is that shared step.

pub(crate) mod command;
pub(crate) mod http;
pub(crate) mod proxy;
pub(crate) mod spin1;
pub(crate) mod wagi;

use crate::error::InvokeError;
use crate::host::{self, ModuleState, Stdio};
use crate::run::{bounded, Ended};
use crate::settings::Settings;
use crate::trace::Usage;
use bytes::Bytes;
use wasmtime::{InstancePre, Store};

/// A finished run of a core module: how it ended, what it wrote and what it used.
pub(crate) struct Run {
    /// Its exit code, or why it did not finish.
    pub(crate) exit: Result<i32, InvokeError>,
    /// Its captured stdout and stderr.
    pub(crate) stdio: Stdio,
    /// What it used.
    pub(crate) usage: Usage,
}

/// Runs a WASI preview1 module's `entry` export (normally `_start`) in a fresh store.
pub(crate) async fn run_start(
    pre: &InstancePre<ModuleState>,
    entry: &str,
    args: &[String],
    env: &[(String, String)],
    stdin: Bytes,
    settings: &Settings,
) -> Run {
    let limits = &settings.limits;
    let (mut builder, stdio) = host::wasi_builder(args, env, stdin, settings);
    let state = ModuleState::new(builder.build_p1(), limits);
    let mut store = Store::new(pre.module().engine(), state);
    let run = bounded(
        &mut store,
        limits,
        async |store| pre.instantiate_async(store).await,
        async |store, instance| {
            let start = instance.get_typed_func::<(), ()>(&mut *store, entry)?;
            start.call_async(store, ()).await
        },
    )
    .await;
    let exit = run.ended.map(|ended| match ended {
        Ended::Returned(()) => 0,
        Ended::Exited(code) => code,
    });
    Run {
        exit,
        stdio,
        usage: run.usage,
    }
}

/// argv for a run: the function's name, then `extra`.
pub(crate) fn argv(settings: &Settings, extra: &[String]) -> Vec<String> {
    std::iter::once(settings.name.clone())
        .chain(extra.iter().cloned())
        .collect()
}
