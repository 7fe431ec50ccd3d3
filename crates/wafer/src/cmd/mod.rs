//! One module per subcommand. [`run`] dispatches, prints errors as `error: …` and picks the exit code.

pub mod alias;
mod backup;
pub mod deploy;
mod executions;
mod files;
mod invoke;
mod keys;
mod list;
mod node;
pub mod package;
mod registry;
mod serve;
mod spin;
mod state;

use crate::cli::{Cli, Command};
use std::process::ExitCode;

/// Runs the parsed command line to completion.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Deploy(args) => deploy::run(args).await,
            Command::Package(args) => package::run(args).await,
            Command::Push(args) => registry::push(args).await,
            Command::Pull(args) => registry::pull(args).await,
            Command::Invoke(args) => invoke::run(args).await,
            Command::Ls(args) => list::functions(args).await,
            Command::Versions(args) => list::versions(args).await,
            Command::Rollback(args) => list::rollback(args).await,
            Command::Alias(args) => alias::run(args).await,
            Command::Rm(args) => list::remove(args).await,
            Command::Execution(args) => executions::show(args).await,
            Command::Executions(args) => executions::list(args).await,
            Command::Retry(args) => executions::retry(args).await,
            Command::Redrive(args) => executions::redrive(args).await,
            Command::Logs(args) => executions::logs(args).await,
            Command::Stats(args) => executions::stats(args).await,
            Command::Kv(args) => state::kv(args).await,
            Command::Config(args) => state::config(args).await,
            Command::Nodes(args) => list::nodes(args).await,
            Command::Node(args) => node::run(args).await,
            Command::Backup(args) => backup::backup(args).await,
            Command::Restore(args) => backup::restore(args).await,
            Command::Keys(args) => keys::keys(args).await,
            Command::Audit(args) => keys::audit(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
