//! The `command` ABI: a job with stdin in and exit code, stdout and stderr out.
//!
//! Core modules start at `_start` (preview1); components are called through `wasi:cli/run`. A non-zero exit
//! is a result, not an error: only traps, timeouts and limits fail the run.

use super::{argv, run_start, Run};
use crate::error::InvokeError;
use crate::function::Settings;
use crate::host::platform::CallDepth;
use crate::host::{self, ComponentState, ModuleState};
use crate::limits::{self, classify, outer_timeout};
use crate::trace::{CpuTimed, Stream, Trace, Tracer, Usage};
use bytes::Bytes;
use std::time::{Duration, Instant};
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
    tracer: Tracer,
) -> Result<CommandOutput, InvokeError> {
    let Run { exit, stdio, usage } = run_start(
        pre,
        "_start",
        &argv(settings, args),
        &settings.env,
        stdin,
        settings,
    )
    .await;
    finish(exit, &stdio, usage, tracer)
}

/// Runs a `wasi:cli/run` component as a job.
pub(crate) async fn run_component(
    pre: &CommandPre<ComponentState>,
    stdin: Bytes,
    args: &[String],
    settings: &Settings,
    tracer: Tracer,
) -> Result<CommandOutput, InvokeError> {
    let limits = &settings.limits;
    let (mut builder, stdio) =
        host::wasi_builder(&argv(settings, args), &settings.env, stdin, limits);
    let mut store = Store::new(
        pre.engine(),
        ComponentState::new(builder.build(), settings, CallDepth::default(), &stdio),
    );
    limits::apply(&mut store, limits);
    let mut instantiate = Duration::ZERO;
    let run = async {
        let started = Instant::now();
        let command = pre.instantiate_async(&mut store).await?;
        instantiate = started.elapsed();
        command.wasi_cli_run().call_run(&mut store).await
    };
    let (outcome, cpu) = CpuTimed::new(tokio::time::timeout(outer_timeout(limits), run)).await;
    let exit = match outcome {
        Err(_) => Err(InvokeError::Timeout(limits.timeout)),
        Ok(Ok(Ok(()))) => Ok(0),
        Ok(Ok(Err(()))) => Ok(1),
        Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(*code),
            None => Err(classify(e, limits)),
        },
    };
    let usage = limits::usage(&mut store, limits, instantiate, cpu);
    finish(exit, &stdio, usage, tracer)
}

/// Sends the run's trace (stderr is its log; stdout is its output) and builds the job reply.
fn finish(
    exit: Result<i32, InvokeError>,
    stdio: &host::Stdio,
    usage: Usage,
    tracer: Tracer,
) -> Result<CommandOutput, InvokeError> {
    tracer.send(Trace::new(
        usage,
        &[(Stream::Stderr, &stdio.stderr), (Stream::Log, &stdio.log)],
    ));
    let exit_code = exit?;
    Ok(CommandOutput {
        exit_code,
        stdout: String::from_utf8_lossy(&stdio.stdout.contents()).into_owned(),
        stderr: String::from_utf8_lossy(&stdio.stderr.contents()).into_owned(),
        stdout_truncated: stdio.stdout.truncated(),
        stderr_truncated: stdio.stderr.truncated(),
    })
}
