//! Spin's host interfaces, so components built with Spin's SDKs (2.x and 3.x, any language) run
//! unchanged: key-value, variables, SQLite, outbound Redis and PostgreSQL, the draft `wasi:keyvalue` and
//! `wasi:config` they import, and llm, mqtt and mysql, which link but answer with their own error.
//!
//! Every interface maps onto a wafer capability and its grant: key-value labels are wafer's key-value
//! stores (`key_value_stores`), variables are the function's configuration variables and secrets,
//! SQLite labels are databases in the node's data directory (`sqlite_databases`), and Redis and
//! PostgreSQL addresses must be in `allowed_outbound_hosts` (as `redis://host:port`,
//! `postgres://host:port`) like any HTTP target, within the same connection cap and timeout. A refused
//! or failed call is written to the execution's log, so the function's owner sees why.

mod absent;
mod postgres;
pub(crate) mod redis;
mod sqlite;
mod state;

use super::ComponentState;
use wafer_api::LogLevel;
use wasmtime::component::{HasSelf, Linker};

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "wafer:host/spin",
        imports: { default: async | trappable },
        with: {
            "fermyon:spin/key-value.store": super::state::Label,
            "wasi:keyvalue/store@0.2.0-draft2.bucket": super::state::Label,
            "wasi:keyvalue/atomics@0.2.0-draft2.cas": super::state::Cas,
            "fermyon:spin/sqlite.connection": super::sqlite::Connection,
            "spin:sqlite/sqlite.connection": super::sqlite::Connection,
            "fermyon:spin/redis.connection": super::redis::Connection,
            "fermyon:spin/postgres.connection": super::postgres::Connection,
            "spin:postgres/postgres@3.0.0.connection": super::postgres::Connection,
            "spin:postgres/postgres@4.0.0.connection": super::postgres::Connection,
            "fermyon:spin/mysql.connection": super::absent::Unopened,
            "fermyon:spin/mqtt.connection": super::absent::Unopened,
        },
    });
}

/// Links Spin's interfaces for components.
pub(crate) fn add_to_linker(linker: &mut Linker<ComponentState>) -> wasmtime::Result<()> {
    bindings::Spin::add_to_linker::<_, HasSelf<ComponentState>>(linker, |s| s)
}

impl ComponentState {
    /// Writes why `interface`'s `what` failed to the execution's log, and hands the error on.
    fn refused<E: std::fmt::Display>(&self, interface: &str, what: &str, e: E) -> E {
        self.log
            .log(LogLevel::Error, &format!("{interface} {what} failed: {e}"));
        e
    }
}
