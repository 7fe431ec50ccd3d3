//! The `wafer` binary: `wafer serve` runs the server; every other subcommand is a client of its API.
//!
//! `cli.rs` declares the command line; `cmd/` holds one module per subcommand; `client.rs` talks to the
//! server; `output.rs` prints results for people or, with `--output json`, for scripts.

mod cli;
mod client;
mod cmd;
mod output;
mod progress;

use clap::Parser;
use std::process::ExitCode;

/// mimalloc instead of the system allocator: a request allocates and frees many small objects
/// across the runtime's threads, where glibc's malloc spent a sixth of the server's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cmd::run(cli::Cli::parse())
}
