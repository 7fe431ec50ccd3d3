//! The `command` ABI: a job with stdin in and exit code, stdout and stderr out.
//!
//! Core modules start at `_start` (preview1); components are called through `wasi:cli/run`. A non-zero exit
//! is a result, not an error: only traps, timeouts and limits fail the run.

use super::{argv, run_start};
use crate::error::InvokeError;
use crate::function::Settings;
use crate::host::{self, ComponentState, ModuleState};
use crate::limits::{self, classify, outer_timeout};
use bytes::Bytes;
use wafer_api::CommandOutput;
use wasmtime::{InstancePre, Store};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::I32Exit;

/// Runs a preview1 module as a job.
pub(crate) async fn run_module(
    pre: &InstancePre<ModuleState>,
    stdin: Bytes,
    args: &[String],
    settings: &Settings,
) -> Result<CommandOutput, InvokeError> {
    let (exit_code, stdio) = run_start(
        pre,
        "_start",
        &argv(settings, args),
        &settings.env,
        stdin,
        settings,
    )
    .await?;
    Ok(output(exit_code, &stdio))
}

/// Runs a `wasi:cli/run` component as a job.
pub(crate) async fn run_component(
    pre: &CommandPre<ComponentState>,
    stdin: Bytes,
    args: &[String],
    settings: &Settings,
) -> Result<CommandOutput, InvokeError> {
    let limits = &settings.limits;
    let (builder, stdio) = host::wasi_builder(&argv(settings, args), &settings.env, stdin, limits);
    let mut builder = builder;
    let mut store = Store::new(
        pre.engine(),
        ComponentState::new(builder.build(), limits, &settings.outbound),
    );
    limits::apply(&mut store, limits);
    let run = async {
        let command = pre.instantiate_async(&mut store).await?;
        command.wasi_cli_run().call_run(&mut store).await
    };
    let exit_code = match tokio::time::timeout(outer_timeout(limits), run).await {
        Err(_) => return Err(InvokeError::Timeout(limits.timeout)),
        Ok(Ok(Ok(()))) => 0,
        Ok(Ok(Err(()))) => 1,
        Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => *code,
            None => return Err(classify(e, limits)),
        },
    };
    Ok(output(exit_code, &stdio))
}

fn output(exit_code: i32, stdio: &host::Stdio) -> CommandOutput {
    CommandOutput {
        exit_code,
        stdout: String::from_utf8_lossy(&stdio.stdout.contents()).into_owned(),
        stderr: String::from_utf8_lossy(&stdio.stderr.contents()).into_owned(),
        stdout_truncated: stdio.stdout.truncated(),
        stderr_truncated: stdio.stderr.truncated(),
    }
}
