//! The bounded run every adapter shares: the invocation's limits on its store, the timed instantiation,
//! the deadline, the CPU time of every poll, how the run ended, and what it used.
//!
//! An adapter makes the store (its own kind of host state) and says how to instantiate and what to
//! call; [`bounded`] does the rest the same way for all four kinds, so a limit, a measurement or the
//! reading of an exit cannot differ between them.

use crate::error::InvokeError;
use crate::limits::{self, classify, outer_timeout, Limited, Limits};
use crate::trace::{CpuTimed, Usage};
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime_wasi::I32Exit;

/// How a run that did not fail ended.
#[derive(Debug)]
pub(crate) enum Ended<T> {
    /// The call returned this.
    Returned(T),
    /// The guest called `exit` (WASI `proc_exit`) with this code.
    Exited(i32),
}

impl<T> Ended<T> {
    /// The returned value, with an exit counted as a trap: for kinds whose guests answer by returning,
    /// not by exiting.
    pub(crate) fn returned(self) -> Result<T, InvokeError> {
        match self {
            Ended::Returned(value) => Ok(value),
            Ended::Exited(code) => Err(InvokeError::Trap(I32Exit(code).to_string())),
        }
    }
}

/// A finished run: how it ended, and what it used.
pub(crate) struct Bounded<T> {
    /// How it ended, or why it did not finish: a trap, the deadline, a limit.
    pub(crate) ended: Result<Ended<T>, InvokeError>,
    /// What it used.
    pub(crate) usage: Usage,
}

/// Runs `instantiate` then `call` on `store` under `limits`: the memory cap and the deadline inside wasm,
/// and a timeout around the whole run for a guest blocked in a host call. The time to instantiate and
/// the CPU time of the whole run are measured.
pub(crate) async fn bounded<S, I, T>(
    store: &mut Store<S>,
    limits: &Limits,
    instantiate: impl AsyncFnOnce(&mut Store<S>) -> wasmtime::Result<I>,
    call: impl AsyncFnOnce(&mut Store<S>, I) -> wasmtime::Result<T>,
) -> Bounded<T>
where
    S: Limited,
{
    limits::apply(store, limits);
    let mut took = Duration::ZERO;
    let work = async {
        let started = Instant::now();
        let instance = instantiate(&mut *store).await?;
        took = started.elapsed();
        call(&mut *store, instance).await
    };
    let (outcome, cpu) = CpuTimed::new(tokio::time::timeout(outer_timeout(limits), work)).await;
    let ended = match outcome {
        Err(_) => Err(InvokeError::Timeout(limits.timeout)),
        Ok(Ok(value)) => Ok(Ended::Returned(value)),
        Ok(Err(e)) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(Ended::Exited(*code)),
            None => Err(classify(e, limits)),
        },
    };
    let usage = limits::usage(store, limits, took, cpu);
    Bounded { ended, usage }
}
