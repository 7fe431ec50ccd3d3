//! One adapter per function kind: [`http`] (wasi:http components), [`wagi`] (CGI over WASI preview1) and
//! [`command`] (jobs). Core modules of both `wagi` and `command` start at an export, normally `_start`;
//! [`run_start`] is that shared step.

pub(crate) mod command;
pub(crate) mod http;
pub(crate) mod wagi;

use crate::error::InvokeError;
use crate::function::Settings;
use crate::host::output::CappedOutput;
use crate::host::{self, ModuleState, Stdio};
use crate::limits::{self, classify, outer_timeout};
use bytes::Bytes;
use wasmtime::{InstancePre, Store};
use wasmtime_wasi::I32Exit;

/// Runs a WASI preview1 module's `entry` export (normally `_start`) in a fresh store; returns its exit
/// code and captured output.
pub(crate) async fn run_start(
    pre: &InstancePre<ModuleState>,
    entry: &str,
    args: &[String],
    env: &[(String, String)],
    stdin: Bytes,
    settings: &Settings,
) -> Result<(i32, Stdio), InvokeError> {
    let limits = &settings.limits;
    let (mut builder, stdio) = host::wasi_builder(args, env, stdin, limits);
    let state = ModuleState::new(builder.build_p1(), limits);
    let mut store = Store::new(pre.module().engine(), state);
    limits::apply(&mut store, limits);
    let run = async {
        let instance = pre.instantiate_async(&mut store).await?;
        let start = instance.get_typed_func::<(), ()>(&mut store, entry)?;
        start.call_async(&mut store, ()).await
    };
    let code = match tokio::time::timeout(outer_timeout(limits), run).await {
        Err(_) => return Err(InvokeError::Timeout(limits.timeout)),
        Ok(Ok(())) => 0,
        Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => *code,
            None => return Err(classify(e, limits)),
        },
    };
    Ok((code, stdio))
}

/// argv for a run: the function's name, then `extra`.
pub(crate) fn argv(settings: &Settings, extra: &[String]) -> Vec<String> {
    std::iter::once(settings.name.clone())
        .chain(extra.iter().cloned())
        .collect()
}

/// Emits what a guest wrote to one of its output streams (`stream` names which), a line per event, so
/// operators can see it.
pub(crate) fn log_output(function: &str, stream: &str, output: &CappedOutput) {
    for line in String::from_utf8_lossy(&output.contents()).lines() {
        tracing::info!(target: "wafer::guest", function, stream, "{line}");
    }
    if output.truncated() {
        tracing::warn!(target: "wafer::guest", function, stream, "output past the cap was dropped");
    }
}
