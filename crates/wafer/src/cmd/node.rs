//! `wafer node`: the node agent, until a signal.

use crate::cli::NodeArgs;
use std::process::ExitCode;
use wafer_node::agent::{Agent, AgentOptions};

pub async fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    crate::cmd::serve::init_logging();
    let defaults = AgentOptions::default();
    let options = AgentOptions {
        socket: args.socket,
        cache: Some(args.cache),
        pool: if args.no_pooling {
            None
        } else {
            args.pool.or(defaults.pool)
        },
        max_idle: args.max_idle.map_or(defaults.max_idle, |n| n as usize),
        max_module: args.max_module.unwrap_or(defaults.max_module),
    };
    Agent::new(options)?
        .serve(crate::cmd::serve::shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}
