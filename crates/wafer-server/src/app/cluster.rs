//! Keeping in step with the other nodes of a shared database.
//!
//! The store's change feed says which functions changed since this node last looked; a notification
//! wakes the follower at once, a poll every [`POLL`] catches what a lost notification missed, and
//! after the listening connection comes back every function is looked at again. Each changed function
//! is refreshed on its own task: the node reads what is live, compiles it if it has no artifact for it
//! (serving the version it has meanwhile, and listing the function as lagging), then installs it under
//! the change lock, reading the store again there so an older refresh never replaces a newer one.
//!
//! The heartbeat says every [`HEARTBEAT`] who this node is, where it listens, how far it has applied
//! the feed and what it lags on; `GET /v1/nodes` lists the nodes heard within [`NODE_EXPIRY`].
//! On the embedded store the feed only ever holds this node's own changes, which refresh to no effect.

use super::App;
use crate::error::Error;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use wafer_store::{NodeBeat, StoreError};

/// How often the feed is read even when no notification came.
const POLL: Duration = Duration::from_secs(2);

/// How often this node beats.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// A node not heard from for this long is left out of the listing.
pub const NODE_EXPIRY: Duration = Duration::from_secs(10);

/// The wait before a refresh that failed on the database is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Where this node stands on the change feed.
pub(crate) struct Applied {
    seq: AtomicU64,
    /// Functions whose live version this node does not serve yet, with the version it serves (0: none).
    lagging: Mutex<BTreeMap<String, u32>>,
    /// Functions being refreshed, each with whether it changed again meanwhile.
    refreshing: Mutex<HashMap<String, bool>>,
    /// Held by the one catch-up that runs at a time.
    catching_up: tokio::sync::Mutex<()>,
    /// How many catch-ups have finished, so a request that waited for one does not start another.
    caught_up: AtomicU64,
    /// The feed's position the last catch-up refreshed to. The follower's position is no guide: it
    /// moves on when it has *started* refreshing what changed.
    caught_up_to: AtomicU64,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Applied {
    pub(crate) fn new(seq: u64) -> Self {
        Self {
            seq: AtomicU64::new(seq),
            lagging: Mutex::default(),
            refreshing: Mutex::default(),
            catching_up: tokio::sync::Mutex::default(),
            caught_up: AtomicU64::new(0),
            caught_up_to: AtomicU64::new(seq),
        }
    }

    /// The feed's position this node has applied.
    pub(crate) fn seq(&self) -> u64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// The functions this node does not serve at their live version yet.
    pub(crate) fn lagging(&self) -> BTreeMap<String, u32> {
        locked(&self.lagging).clone()
    }
}

/// Starts following the feed and beating.
pub(super) fn start(app: &Arc<App>) {
    tokio::spawn(follow(app.clone()));
    tokio::spawn(beat(app.clone()));
}

/// Reads the feed whenever woken (or every [`POLL`]) and refreshes what changed.
async fn follow(app: Arc<App>) {
    let events = app.cluster.events();
    let mut resyncs = events.resyncs();
    loop {
        let everything = tokio::select! {
            _ = events.wait_changes() => false,
            _ = tokio::time::sleep(POLL) => false,
            changed = resyncs.changed() => changed.is_ok(),
        };
        if everything {
            match app.meta.list_functions().await {
                Ok(stored) => {
                    let mut names: Vec<String> = stored.into_iter().map(|f| f.live.name).collect();
                    names.extend(app.registry.names());
                    names.sort();
                    names.dedup();
                    tracing::info!(functions = names.len(), "looking at every function again");
                    for name in names {
                        refresh_soon(&app, name);
                    }
                }
                Err(e) => tracing::warn!("cannot list functions to resynchronise: {e}"),
            }
        }
        match app.cluster.changes_since(app.applied.seq()).await {
            Ok(changes) => {
                for name in changes.functions {
                    refresh_soon(&app, name);
                }
                app.applied.seq.fetch_max(changes.seq, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("cannot read the change feed: {e}"),
        }
    }
}

/// Refreshes `name` on its own task, or — when a refresh of it is running — once more after it.
fn refresh_soon(app: &Arc<App>, name: String) {
    {
        let mut refreshing = locked(&app.applied.refreshing);
        if let Some(again) = refreshing.get_mut(&name) {
            *again = true;
            return;
        }
        refreshing.insert(name.clone(), false);
    }
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            match app.refresh(&name).await {
                Err(Error::Store(StoreError::Unavailable(e))) => {
                    tracing::warn!(function = %name, "cannot refresh, trying again: {e}");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(e) => tracing::error!(function = %name, "cannot refresh: {e:?}"),
                Ok(()) => {}
            }
            let mut refreshing = locked(&app.applied.refreshing);
            match refreshing.get_mut(&name) {
                Some(again) if *again => *again = false,
                _ => {
                    refreshing.remove(&name);
                    return;
                }
            }
        }
    });
}

impl App {
    /// Applies the change feed now, for a request naming a function or a path this node does not know:
    /// in a cluster it may have been deployed on another node a moment ago, before this node heard. One
    /// catch-up runs at a time, and requests that waited for it do not start another, so a flood of
    /// unknown names costs the database one small query at a time. On the embedded store every change
    /// is this node's own, so there is nothing to catch up on.
    pub(crate) async fn catch_up(&self) {
        if self.config.database.is_none() {
            return;
        }
        let seen = self.applied.caught_up.load(Ordering::Acquire);
        let _one = self.applied.catching_up.lock().await;
        if self.applied.caught_up.load(Ordering::Acquire) != seen {
            return;
        }
        let from = self.applied.caught_up_to.load(Ordering::Acquire);
        match self.cluster.changes_since(from).await {
            Ok(changes) => {
                // What the follower refreshes already is refreshed again here, and waited for: a
                // refresh finds an installed change the same and returns.
                for name in &changes.functions {
                    if let Err(e) = self.refresh(name).await {
                        tracing::warn!(function = %name, "cannot catch up: {e:?}");
                    }
                }
                self.applied
                    .caught_up_to
                    .fetch_max(changes.seq, Ordering::Release);
                self.applied.seq.fetch_max(changes.seq, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("cannot read the change feed to catch up: {e}"),
        }
        self.applied.caught_up.fetch_add(1, Ordering::Release);
    }

    /// Makes the registry hold what the store says is live for `name`: its live version, or nothing.
    async fn refresh(&self, name: &str) -> Result<(), Error> {
        loop {
            // Under the change lock, so this node's own change in progress has been installed.
            let (stored, current) = {
                let _changes = self.changes.lock().await;
                let Some(stored) = self.meta.get_function(name).await? else {
                    if self.registry.remove(name) {
                        tracing::info!(function = name, "deleted on another node");
                    }
                    locked(&self.applied.lagging).remove(name);
                    return Ok(());
                };
                let current = self.registry.get(name);
                let variables = self.state.variables(name).await?;
                // This node's own change, or one it has applied already: nothing to do.
                let same = current.as_ref().is_some_and(|entry| {
                    (entry.version, &entry.digest, &entry.variables)
                        == (stored.live.version, &stored.live.digest, &variables)
                }) && self.registry.release(name).is_some_and(|release| {
                    (&release.aliases, release.latest) == (&stored.aliases, stored.latest_version)
                });
                if same {
                    return Ok(());
                }
                if current
                    .as_ref()
                    .is_some_and(|e| e.digest == stored.live.digest)
                {
                    // Same module, new settings: nothing to compile (a container's settings are in
                    // its template, so it is made again).
                    self.install(&stored, None, variables);
                    return Ok(());
                }
                (stored, current)
            };
            // A module this node has not loaded: compile (or load) it outside the lock, serving the
            // version it has meanwhile.
            let serving = current.as_ref().map_or(0, |entry| entry.version);
            locked(&self.applied.lagging).insert(name.to_string(), serving);
            let live = &stored.live;
            let variables = self.state.variables(name).await?;
            let settings = self.version_settings(live, variables);
            let prepared = self
                .prepare(
                    &live.digest,
                    live.files.as_deref(),
                    live.kind,
                    &live.config,
                    &settings,
                )
                .await;
            let prepared = prepared.inspect_err(|_| {
                locked(&self.applied.lagging).remove(name);
            })?;
            let _changes = self.changes.lock().await;
            let now = self.meta.get_function(name).await?;
            let Some(now) = now.filter(|now| {
                (now.live.version, &now.live.digest) == (stored.live.version, &stored.live.digest)
            }) else {
                // It changed again meanwhile: start over.
                continue;
            };
            let variables = self.state.variables(name).await?;
            self.install(&now, prepared, variables);
            locked(&self.applied.lagging).remove(name);
            tracing::info!(function = name, version = now.live.version, "now serving");
            return Ok(());
        }
    }
}

/// Beats every [`HEARTBEAT`].
async fn beat(app: Arc<App>) {
    loop {
        let beat = NodeBeat {
            id: app.node.clone(),
            address: app.address(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            applied: app.applied.seq(),
            lagging: app.applied.lagging(),
        };
        if let Err(e) = app.cluster.heartbeat(&beat).await {
            tracing::warn!("cannot beat: {e}");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}
