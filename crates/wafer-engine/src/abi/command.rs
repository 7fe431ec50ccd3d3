//! The `command` ABI: a job with stdin in and exit code, stdout and stderr out.
//!
//! Core modules start at `_start` (preview1); components are called through `wasi:cli/run`. A non-zero exit
//! is a result, not an error: only traps, timeouts and limits fail the run.

use super::{argv, run_start, Run};
use crate::error::InvokeError;
use crate::host::platform::CallDepth;
use crate::host::{self, ComponentState, ModuleState};
use crate::run::{bounded, Ended};
use crate::settings::Settings;
use crate::trace::{Stream, Trace, Tracer, Usage};
use bytes::Bytes;
use wafer_api::CommandOutput;
use wasmtime::{InstancePre, Store};
use wasmtime_wasi::p2::bindings::CommandPre;

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
        host::wasi_builder(&argv(settings, args), &settings.env, stdin, settings);
    let mut store = Store::new(
        pre.engine(),
        ComponentState::new(builder.build(), settings, CallDepth::default(), &stdio),
    );
    let run = bounded(
        &mut store,
        limits,
        async |store| pre.instantiate_async(store).await,
        async |store, command| command.wasi_cli_run().call_run(store).await,
    )
    .await;
    let exit = run.ended.map(|ended| match ended {
        Ended::Returned(Ok(())) => 0,
        Ended::Returned(Err(())) => 1,
        Ended::Exited(code) => code,
    });
    let usage = run.usage;
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
