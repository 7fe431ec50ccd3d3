//! Admission control: whether an invocation may start now.
//!
//! Two bounds apply. A function with `max_concurrency` runs at most that many invocations at once; callers
//! past it wait up to the server's queue wait for a slot, then get 429 with `Retry-After`. Across all
//! functions, at most `max_instances` instances exist at once; past that a call gets 503 at once, so a
//! flood against one function cannot exhaust the host for everyone else. A [`Permit`] holds both slots for
//! as long as the invocation runs, including while an http component streams its response body.

use crate::error::Error;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The server-wide instance bound and the wait for a function slot.
pub struct Admission {
    instances: Arc<Semaphore>,
    max_instances: usize,
    queue_wait: Duration,
}

/// The right to run one invocation; the slots are released when it is dropped.
pub struct Permit {
    _function: Option<OwnedSemaphorePermit>,
    _instance: OwnedSemaphorePermit,
}

impl Admission {
    /// At most `max_instances` at once; a caller waits up to `queue_wait` for a function slot.
    pub fn new(max_instances: usize, queue_wait: Duration) -> Self {
        Self {
            instances: Arc::new(Semaphore::new(max_instances)),
            max_instances,
            queue_wait,
        }
    }

    /// Waits (boundedly) for a slot of the function, if it limits its concurrency, then takes an instance
    /// slot.
    pub async fn admit(
        &self,
        name: &str,
        function_slots: Option<&Arc<Semaphore>>,
    ) -> Result<Permit, Error> {
        let function = match function_slots {
            None => None,
            Some(slots) => {
                match tokio::time::timeout(self.queue_wait, slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    Ok(Err(_)) | Err(_) => {
                        return Err(Error::ConcurrencyLimit(format!(
                            "function `{name}` is running as many invocations as its \
                             max_concurrency allows; try again shortly"
                        )))
                    }
                }
            }
        };
        let instance = self.instances.clone().try_acquire_owned().map_err(|_| {
            Error::AtCapacity(format!(
                "the server is running its maximum of {} instances; try again shortly",
                self.max_instances
            ))
        })?;
        Ok(Permit {
            _function: function,
            _instance: instance,
        })
    }

    /// How many instances are running now.
    pub fn active(&self) -> usize {
        self.max_instances - self.instances.available_permits()
    }
}
