//! A container's admission in the node agent: how its CPU limit and its `max_concurrency` bound the
//! requests it runs, since its instances share the agent's process rather than a cgroup of their own.
//!
//! - **Concurrency.** A function's `max_concurrency` caps its requests running at once.
//! - **CPU.** A container limited to `c` cores (its CPU quota over its period) gets a budget of CPU
//!   time that refills at `c` seconds per second and holds at most [`BURST`] worth of it. Each request
//!   is charged the CPU time its instance spent (the engine measures it per poll), after it ends. A
//!   request arriving while the budget is spent waits until it has refilled — as the kernel throttles
//!   a cgroup that used its quota — so over any stretch of time the container's functions use about
//!   `c` cores, however many requests it gets. A guest that spins is still stopped by its own
//!   deadline; the budget makes the next requests pay for it.
//!
//! A request waits at most [`WAIT`] for either, then gets 429.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a request waits for a slot or for CPU before it gets 429.
pub const WAIT: Duration = Duration::from_secs(10);

/// How much unused CPU time a container may save up, in seconds of its limit.
pub const BURST: f64 = 1.0;

/// One container's admission.
#[derive(Default)]
pub struct Gate {
    slots: Option<Arc<Semaphore>>,
    cpu: Option<Arc<CpuBudget>>,
}

/// The right to run one request; charge it what the request used.
pub struct Permit {
    _slot: Option<OwnedSemaphorePermit>,
    cpu: Option<Arc<CpuBudget>>,
}

struct CpuBudget {
    /// Cores: CPU seconds granted per second.
    cores: f64,
    /// Seconds of CPU time available (negative when overdrawn) as of `at`.
    balance: Mutex<(f64, Instant)>,
}

impl Gate {
    /// At most `max_concurrency` requests at once, and CPU time at `cores` per second, when given.
    pub fn new(max_concurrency: Option<u32>, cores: Option<f64>) -> Self {
        Self {
            slots: max_concurrency.map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            cpu: cores.filter(|c| c.is_finite() && *c > 0.0).map(|cores| {
                Arc::new(CpuBudget {
                    cores,
                    balance: Mutex::new((cores * BURST, Instant::now())),
                })
            }),
        }
    }

    /// Waits (at most [`WAIT`]) for a slot and for CPU; `None` when either stays out of reach.
    pub async fn admit(&self) -> Option<Permit> {
        let deadline = Instant::now() + WAIT;
        let slot = match &self.slots {
            Some(slots) => Some(
                tokio::time::timeout_at(deadline, slots.clone().acquire_owned())
                    .await
                    .ok()?
                    .ok()?,
            ),
            None => None,
        };
        if let Some(cpu) = &self.cpu {
            cpu.wait_until_positive(deadline).await?;
        }
        Some(Permit {
            _slot: slot,
            cpu: self.cpu.clone(),
        })
    }
}

impl Permit {
    /// Charges the container's CPU budget with `used`, and lets the slot go.
    pub fn charge(self, used: Duration) {
        if let Some(cpu) = &self.cpu {
            cpu.charge(used);
        }
    }
}

impl CpuBudget {
    /// The balance refilled up to now.
    fn refill(&self, balance: &mut (f64, Instant)) {
        let now = Instant::now();
        let earned = now.duration_since(balance.1).as_secs_f64() * self.cores;
        *balance = ((balance.0 + earned).min(self.cores * BURST), now);
    }

    async fn wait_until_positive(&self, deadline: Instant) -> Option<()> {
        loop {
            let wait = {
                let mut balance = self.balance.lock().await;
                self.refill(&mut balance);
                if balance.0 > 0.0 {
                    return Some(());
                }
                Duration::from_secs_f64((-balance.0 / self.cores).max(0.001))
            };
            let until = Instant::now() + wait;
            if until > deadline {
                return None;
            }
            tokio::time::sleep_until(until).await;
        }
    }

    fn charge(self: &Arc<Self>, used: Duration) {
        let budget = self.clone();
        let charge = async move {
            let mut balance = budget.balance.lock().await;
            budget.refill(&mut balance);
            balance.0 -= used.as_secs_f64();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(charge);
            }
            Err(_) => tracing::warn!("a CPU charge outside the runtime was lost"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spent_cpu_holds_the_next_request_until_the_budget_refills() {
        let gate = Gate::new(None, Some(0.5));
        let first = gate.admit().await.expect("a full budget");
        // One request used two seconds of CPU: at half a core, the budget is 1.5 s short.
        first.charge(Duration::from_secs(2));
        tokio::task::yield_now().await;
        let started = Instant::now();
        let second = gate.admit().await.expect("admitted once refilled");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
        drop(second);
        // Overdrawn past what the wait allows: refused.
        let third = gate.admit().await.unwrap();
        third.charge(Duration::from_secs(60));
        tokio::task::yield_now().await;
        assert!(gate.admit().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_capped_and_waits_are_bounded() {
        let gate = Gate::new(Some(1), None);
        let held = gate.admit().await.expect("a slot");
        assert!(
            gate.admit().await.is_none(),
            "past the wait with the slot held"
        );
        drop(held);
        assert!(gate.admit().await.is_some());
        assert!(Gate::default().admit().await.is_some(), "no limits");
    }
}
