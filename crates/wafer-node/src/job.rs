//! A container's `command` function run once, to completion: the container's arguments in, its
//! stdout and stderr out, its exit code the task's. Its standard input is empty: containerd's shims
//! get no CloseIO from runwasi's task service, so a program reading stdin would wait forever.

use crate::function::exit_code;
use crate::output::Output;
use wafer_engine::{Function, Settings, Stream, Tracer};

/// Runs `function` with the container's `args` (the wasm file first, as the container names it) and
/// returns its exit code: the guest's own, or for a run that failed, as [`exit_code`] maps it.
pub async fn run(
    function: &Function,
    args: &[String],
    settings: &Settings,
    output: &Output,
) -> i32 {
    let args = args.get(1..).unwrap_or_default();
    let result = function
        .run_command(Default::default(), args, settings, Tracer::discard())
        .await;
    match result {
        Ok(ran) => {
            output.write(Stream::Stdout, ran.stdout);
            output.write(Stream::Stderr, ran.stderr);
            if ran.stdout_truncated {
                output.note("stdout past the function's response cap was dropped");
            }
            ran.exit_code
        }
        Err(e) => {
            output.note(&e.to_string());
            exit_code(&e)
        }
    }
}
