//! One adapter per function kind: [`http`] (wasi:http components), [`wagi`] (CGI over WASI preview1),
//! [`proxy`] (proxy-wasm modules, as Layotto runs them) and [`command`] (jobs). Core modules of both `wagi` and `command` start at an export, normally `_start`;
//! [`run_start`] is that shared step.

pub(crate) mod command;
pub(crate) mod http;
pub(crate) mod proxy;
pub(crate) mod wagi;

use crate::error::InvokeError;
use crate::function::Settings;
use crate::host::{self, ModuleState, Stdio};
use crate::limits::{self, classify, outer_timeout};
use crate::trace::{CpuTimed, Usage};
use bytes::Bytes;
use std::time::{Duration, Instant};
use wasmtime::{InstancePre, Store};
use wasmtime_wasi::I32Exit;

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
    let (mut builder, stdio) = host::wasi_builder(args, env, stdin, limits);
    let state = ModuleState::new(builder.build_p1(), limits);
    let mut store = Store::new(pre.module().engine(), state);
    limits::apply(&mut store, limits);
    let mut instantiate = Duration::ZERO;
    let run = async {
        let started = Instant::now();
        let instance = pre.instantiate_async(&mut store).await?;
        instantiate = started.elapsed();
        let start = instance.get_typed_func::<(), ()>(&mut store, entry)?;
        start.call_async(&mut store, ()).await
    };
    let (outcome, cpu) = CpuTimed::new(tokio::time::timeout(outer_timeout(limits), run)).await;
    let exit = match outcome {
        Err(_) => Err(InvokeError::Timeout(limits.timeout)),
        Ok(Ok(())) => Ok(0),
        Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(*code),
            None => Err(classify(e, limits)),
        },
    };
    let usage = limits::usage(&mut store, limits, instantiate, cpu);
    Run { exit, stdio, usage }
}

/// argv for a run: the function's name, then `extra`.
pub(crate) fn argv(settings: &Settings, extra: &[String]) -> Vec<String> {
    std::iter::once(settings.name.clone())
        .chain(extra.iter().cloned())
        .collect()
}
