//! The cluster trait: what nodes sharing one store need to know of each other — the change feed that
//! tells a node which functions changed since it last looked, the nodes table with each node's
//! heartbeat, and the [`Events`] that wake a node when another one wrote something.
//!
//! The change feed is a sequence bumped in the same transaction as every change to a function (a deploy,
//! a rollback, a delete, its variables), with the function's name. Changes are serialised on that
//! sequence, so it grows in commit order: a node that has applied everything up to `seq` and reads the
//! functions changed after it misses nothing, whatever other nodes commit meanwhile.

use crate::StoreError;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// What changed after a point of the feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The feed's position now: pass it to the next [`ClusterStore::changes_since`].
    pub seq: u64,
    /// The functions changed after the position asked for (deleted ones included), by name.
    pub functions: Vec<String>,
}

/// A node's heartbeat: who it is and how far it has caught up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeBeat {
    /// The node's id.
    pub id: String,
    /// Where other nodes and operators reach it (`host:port`).
    pub address: String,
    /// The wafer version it runs.
    pub version: String,
    /// The change feed's position it has applied.
    pub applied: u64,
    /// The functions it does not serve at their live version yet (still compiling it), with the version
    /// it serves meanwhile (0: none yet).
    pub lagging: BTreeMap<String, u32>,
}

/// A node as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// Its last heartbeat.
    pub beat: NodeBeat,
    /// When it first beat since it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it last beat (RFC 3339, UTC).
    pub heartbeat_at: String,
    /// How long ago that was, by the store's clock.
    pub silent_for: Duration,
}

/// Wake-ups for what other nodes wrote. A store shared by several nodes raises them as it hears of
/// their writes; the embedded store, which one node owns, never needs to.
#[derive(Clone)]
pub struct Events {
    inner: Arc<EventsInner>,
}

struct EventsInner {
    changes: Notify,
    queue: Notify,
    logs: watch::Sender<u64>,
    resync: watch::Sender<u64>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            inner: Arc::new(EventsInner {
                changes: Notify::new(),
                queue: Notify::new(),
                logs: watch::Sender::new(0),
                resync: watch::Sender::new(0),
            }),
        }
    }
}

impl Events {
    /// Some function changed.
    pub fn changed(&self) {
        self.inner.changes.notify_one();
    }

    /// Waits until a function changed (since the last wait).
    pub async fn wait_changes(&self) {
        self.inner.changes.notified().await;
    }

    /// Work was queued.
    pub fn queued(&self) {
        self.inner.queue.notify_one();
    }

    /// Waits until work was queued (since the last wait).
    pub async fn wait_queue(&self) {
        self.inner.queue.notified().await;
    }

    /// Log lines were written.
    pub fn logged(&self) {
        self.inner.logs.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every [`Events::logged`].
    pub fn logs(&self) -> watch::Receiver<u64> {
        self.inner.logs.subscribe()
    }

    /// Notifications may have been missed (the connection that hears them was lost and is back): every
    /// node should look at everything again. Wakes every waiter too.
    pub fn missed(&self) {
        self.inner.resync.send_modify(|n| *n = n.wrapping_add(1));
        self.changed();
        self.queued();
        self.logged();
    }

    /// A receiver that sees every [`Events::missed`].
    pub fn resyncs(&self) -> watch::Receiver<u64> {
        self.inner.resync.subscribe()
    }
}

/// Nodes sharing a store. Every method is atomic.
#[async_trait]
pub trait ClusterStore: Send + Sync {
    /// The feed's position now, and the functions changed after `seq`.
    async fn changes_since(&self, seq: u64) -> Result<Changes, StoreError>;

    /// Records a node's heartbeat (its first one registers it), and forgets nodes silent for a day.
    async fn heartbeat(&self, beat: &NodeBeat) -> Result<(), StoreError>;

    /// The nodes that beat within `within`, by id.
    async fn nodes(&self, within: Duration) -> Result<Vec<NodeRecord>, StoreError>;

    /// Forgets a node that stops cleanly.
    async fn leave(&self, node: &str) -> Result<(), StoreError>;

    /// The wake-ups this store raises.
    fn events(&self) -> Events;
}
