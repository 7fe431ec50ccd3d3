//! Moving a module from baseline code to optimized code.
//!
//! A module of up to `--baseline-compile-limit` bytes is first compiled by the engine's baseline
//! compiler, so it answers within milliseconds of its deploy or its first load on this node. Once the
//! version it serves is stored, its optimizing compile is queued here. One worker takes the queue in
//! turn, so background compiles never take more than one core from the functions being served. When a
//! compile is done, its artifact goes to this node's disk and its code into the code cache in place of
//! the baseline code: calls from then on run it, calls running finish on the code they started with.
//! Baseline code is never written to disk, so after a restart a module whose optimizing compile had not
//! finished is compiled again, the same way.

use super::App;
use crate::error::Error;
use bytes::Bytes;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::mpsc;
use wafer_api::Kind;

/// A module running baseline code as a kind, waiting for its optimizing compile.
struct TierUp {
    digest: String,
    kind: Kind,
    module: Bytes,
}

/// The queue of optimizing compiles (see the module docs).
pub(crate) struct TierUps {
    sender: mpsc::UnboundedSender<TierUp>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<TierUp>>>,
    /// The modules (digest and kind) queued or compiling, so each is compiled once.
    pending: Mutex<HashSet<(String, Kind)>>,
}

impl Default for TierUps {
    fn default() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
            pending: Mutex::default(),
        }
    }
}

impl TierUps {
    /// Queues the optimizing compile of module `digest` (`module`), which runs baseline code as `kind`
    /// meanwhile; a no-op while it is queued already.
    pub(super) fn queue(&self, digest: &str, kind: Kind, module: Bytes) {
        let key = (digest.to_string(), kind);
        if !lock(&self.pending).insert(key) {
            return;
        }
        let job = TierUp {
            digest: digest.to_string(),
            kind,
            module,
        };
        // The worker ends only with the server.
        let _ = self.sender.send(job);
    }

    /// How many modules run baseline code, waiting for their optimizing compile.
    pub(crate) fn pending(&self) -> usize {
        lock(&self.pending).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the worker that takes the queue in turn, for as long as the server runs.
pub(super) fn start(app: &Arc<App>) {
    let Some(mut receiver) = lock(&app.tier_ups.receiver).take() else {
        return;
    };
    let app = Arc::downgrade(app);
    tokio::spawn(async move {
        while let Some(job) = receiver.recv().await {
            let Some(app) = Weak::upgrade(&app) else {
                break;
            };
            let key = (job.digest.clone(), job.kind);
            if let Err(e) = app.tier_up(job).await {
                tracing::warn!(
                    digest = %key.0,
                    "the optimizing compile failed, the module keeps its baseline code until it is \
                     loaded again: {e}"
                );
            }
            lock(&app.tier_ups.pending).remove(&key);
        }
    });
}

impl App {
    /// Compiles `job`'s module with the optimizing compiler, keeps its artifact and puts its code in
    /// place of the baseline code, unless the module was deleted meanwhile.
    async fn tier_up(&self, job: TierUp) -> Result<(), Error> {
        let TierUp {
            digest,
            kind,
            module,
        } = job;
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        let compiled = tokio::task::spawn_blocking(move || engine.compile(&module, Some(kind)))
            .await
            .map_err(|e| Error::Internal(format!("compile task failed: {e}")))??;
        self.metrics.compile(started.elapsed());
        // Under the changes lock, a delete either ran before (the module is gone: keep nothing) or
        // waits until the artifact and the code are in place, and then removes them.
        let _changes = self.changes.lock().await;
        if !self.meta.module_in_use(&digest).await? {
            return Ok(());
        }
        let bytes = compiled.artifact.len() as u64;
        self.keep_artifact(&digest, compiled.artifact).await?;
        self.code.upgrade(&digest, compiled.function, bytes);
        tracing::debug!(%digest, took_ms = started.elapsed().as_millis() as u64, "optimized code in place");
        Ok(())
    }
}
