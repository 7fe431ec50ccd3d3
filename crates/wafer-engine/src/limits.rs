//! Per-invocation limits: the memory cap (a [`wasmtime::ResourceLimiter`]) and the deadline (epoch
//! interruption).
//!
//! The deadline works in two layers. Inside wasm, the engine's epoch ticker interrupts running code every
//! tick; the store's epoch callback yields to tokio (so a busy guest never starves others on its thread) and
//! traps with [`DeadlineExceeded`] once the deadline has passed. Outside wasm — a guest blocked in a host
//! call — the bounded run (`run.rs`) also wraps the whole run in a tokio timeout that drops the store.

use crate::error::{describe, InvokeError};
use crate::trace::Usage;
use std::time::{Duration, Instant};
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};

/// Limits applied to one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory cap in bytes, summed over every memory of the instance.
    pub memory_bytes: u64,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Cap on what the function answers with: a WAGI response or a command's stdout, and an http
    /// component's response body.
    pub response_bytes: usize,
    /// Cap on what the guest may write to stderr.
    pub stderr_bytes: usize,
    /// Instructions (roughly) the invocation may run, on an engine built with fuel; `None` when the
    /// engine does not meter fuel.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    /// The limits of a function that sets none, under the default [`crate::FunctionDefaults`].
    fn default() -> Self {
        crate::FunctionDefaults::default().limits(&wafer_api::FunctionConfig::default())
    }
}

/// The most table elements one instance may hold; tables are host memory too.
pub(crate) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The trap raised when an invocation runs past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded")]
pub(crate) struct DeadlineExceeded;

/// The error raised when a guest grows its memory past the cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {0} bytes exceeded")]
pub(crate) struct MemoryLimitExceeded(u64);

/// Counts the linear memory of one store against its cap.
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: u64,
    used: u64,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self { limit, used: 0 }
    }

    /// The most linear memory the store has held; memories never shrink, so this is what it holds now.
    pub(crate) fn peak(&self) -> u64 {
        self.used
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = desired.saturating_sub(current) as u64;
        let total = self.used.saturating_add(grow);
        if total > self.limit {
            return Err(MemoryLimitExceeded(self.limit).into());
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Store data that carries a [`MemoryLimiter`].
pub(crate) trait Limited: Send + 'static {
    fn limiter(&mut self) -> &mut MemoryLimiter;
}

/// Installs the memory limiter and the deadline on a fresh store.
pub(crate) fn apply<T: Limited>(store: &mut Store<T>, limits: &Limits) {
    store.limiter(|data| data.limiter());
    if let Some(fuel) = limits.fuel {
        if let Err(e) = store.set_fuel(fuel) {
            tracing::error!("cannot set fuel on a store: {}", describe(&e));
        }
    }
    let deadline = Instant::now() + limits.timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Err(DeadlineExceeded.into())
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// What a finished run used, read from its store.
pub(crate) fn usage<T: Limited>(
    store: &mut Store<T>,
    limits: &Limits,
    instantiate: Duration,
    cpu: Duration,
) -> Usage {
    Usage {
        instantiate,
        cpu,
        peak_memory_bytes: store.data_mut().limiter().peak(),
        fuel_consumed: limits
            .fuel
            .map(|fuel| fuel.saturating_sub(store.get_fuel().unwrap_or(0))),
    }
}

/// The outer bound on a whole run: the deadline plus a little grace for the epoch trap to land first.
pub(crate) fn outer_timeout(limits: &Limits) -> Duration {
    limits.timeout + Duration::from_millis(100)
}

/// Maps an error out of wasmtime to what the caller is told.
pub(crate) fn classify(err: wasmtime::Error, limits: &Limits) -> InvokeError {
    if err.downcast_ref::<DeadlineExceeded>().is_some() {
        return InvokeError::Timeout(limits.timeout);
    }
    if let Some(MemoryLimitExceeded(limit)) = err.downcast_ref::<MemoryLimitExceeded>() {
        return InvokeError::MemoryLimit(*limit);
    }
    if err
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return InvokeError::Busy(describe(&err));
    }
    if err.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::OutOfFuel) {
        return InvokeError::FuelExhausted(limits.fuel.unwrap_or_default());
    }
    InvokeError::Trap(describe(&err))
}
