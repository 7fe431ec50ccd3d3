//! Instances kept between requests for functions that opt into `reuse`.
//!
//! An interpreter packaged as a component (Python, JavaScript, .NET) rebuilds its whole runtime in every
//! fresh instance. A function that sets `reuse = N` lets one instance serve up to N requests, one after
//! another, before it is dropped. Each function version has its own [`IdlePool`] (made with its
//! [`crate::Function`]), so an instance never serves another function or version; only an instance that
//! answered its request is put back (not one that trapped, timed out or set no response). Idle instances hold memory (and pool slots), so the
//! engine bounds them: at most `max_idle` across all functions, each dropped after [`IDLE_TIMEOUT`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How long an instance may sit idle before [`crate::Engine::evict_idle`] drops it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The engine-wide bound on idle instances, and the pools that hold them (for eviction).
pub(crate) struct IdleInstances {
    max: usize,
    held: AtomicUsize,
    pools: Mutex<Vec<Weak<dyn Evict>>>,
}

/// A pool that can drop its stale instances.
trait Evict: Send + Sync {
    /// Drops the instances idle since before `cutoff`; returns how many it still holds.
    fn evict(&self, cutoff: Instant) -> usize;
}

impl IdleInstances {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            held: AtomicUsize::new(0),
            pools: Mutex::new(Vec::new()),
        }
    }

    fn pools(&self) -> MutexGuard<'_, Vec<Weak<dyn Evict>>> {
        self.pools
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new, empty pool for one function version.
    pub(crate) fn pool<T: Send + 'static>(self: &Arc<Self>) -> Arc<IdlePool<T>> {
        let pool = Arc::new(IdlePool {
            budget: self.clone(),
            idle: Mutex::new(Vec::new()),
        });
        let weak: Weak<dyn Evict> = Arc::downgrade(&(pool.clone() as Arc<dyn Evict>));
        let mut pools = self.pools();
        // Pruned only when the list would grow, so making many pools stays linear overall.
        if pools.len() == pools.capacity() {
            pools.retain(|p| p.strong_count() > 0);
        }
        pools.push(weak);
        pool
    }

    /// Drops every instance idle longer than `timeout`; returns how many are still kept.
    pub(crate) fn evict(&self, timeout: Duration) -> usize {
        let Some(cutoff) = Instant::now().checked_sub(timeout) else {
            return self.held.load(Ordering::Relaxed);
        };
        let live: Vec<Arc<dyn Evict>> = {
            let mut pools = self.pools();
            pools.retain(|p| p.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        live.iter().map(|pool| pool.evict(cutoff)).sum()
    }

    /// How many instances are kept now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes one unit of the idle budget, if any is left.
    fn reserve(&self) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max).then_some(held + 1)
            })
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }
}

/// The idle instances of one function version, most recently used last.
pub(crate) struct IdlePool<T> {
    budget: Arc<IdleInstances>,
    idle: Mutex<Vec<(T, Instant)>>,
}

impl<T: Send + 'static> IdlePool<T> {
    /// An empty pool under the same engine-wide bound, for another function sharing this one's code.
    pub(crate) fn sibling(&self) -> Arc<IdlePool<T>> {
        self.budget.pool()
    }
}

impl<T> IdlePool<T> {
    fn idle(&self) -> MutexGuard<'_, Vec<(T, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle instance, if any.
    pub(crate) fn take(&self) -> Option<T> {
        let taken = self.idle().pop().map(|(instance, _)| instance);
        if taken.is_some() {
            self.budget.release(1);
        }
        taken
    }

    /// Keeps `instance` for the next request, unless the engine already holds its maximum of idle
    /// instances (then it is dropped here).
    pub(crate) fn put(&self, instance: T) {
        if self.budget.reserve() {
            self.idle().push((instance, Instant::now()));
        }
    }
}

impl<T: Send> Evict for IdlePool<T> {
    fn evict(&self, cutoff: Instant) -> usize {
        // Oldest first: the stale ones are a prefix.
        let stale: Vec<(T, Instant)> = {
            let mut idle = self.idle();
            let fresh_from = idle
                .iter()
                .position(|(_, since)| *since > cutoff)
                .unwrap_or(idle.len());
            idle.drain(..fresh_from).collect()
        };
        self.budget.release(stale.len());
        drop(stale);
        self.idle().len()
    }
}

impl<T> Drop for IdlePool<T> {
    fn drop(&mut self) {
        let held = self.idle().len();
        self.budget.release(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_instances_are_bounded_engine_wide_and_per_pool() {
        let budget = Arc::new(IdleInstances::new(2));
        let (a, b) = (budget.pool::<u32>(), budget.pool::<u32>());
        a.put(1);
        b.put(2);
        b.put(3); // over the engine's budget: dropped
        assert_eq!(a.take(), Some(1));
        assert_eq!(a.take(), None, "pools never share instances");
        assert_eq!(b.take(), Some(2));
        assert_eq!(b.take(), None);
        b.put(4);
        drop(b);
        a.put(5);
        a.put(6);
        assert_eq!(
            budget.evict(Duration::ZERO),
            0,
            "everything is stale at once"
        );
        a.put(7);
        assert_eq!(budget.evict(Duration::from_secs(60)), 1);
    }
}
