//! The *http* shape of a container function (`port`): containers running a server on `$PORT`, to
//! which wafer proxies requests, started on demand and stopped when idle.
//!
//! Each running instance takes up to `max_concurrency` requests at once (default 16). A request
//! takes a free slot of a running instance; when none has one, the instances being started have no
//! slot left for it either, and fewer than `max_replicas` (default 4) run or start, a new instance
//! is started (a cold start: the request waits until its port accepts connections); otherwise it
//! waits for a slot. The function's admission bound is
//! `max_concurrency × max_replicas`, so callers past it get 429 as for any function.
//!
//! An instance with no request for `idle_timeout_ms` (default 60 s) is stopped (SIGTERM, then
//! SIGKILL after 2 s), down to zero, or down to `min_warm` instances, which are kept running (and
//! started again if they exit). An instance whose process exits is dropped; an OOM kill answers its
//! requests with 500 `memory_limit`.
//!
//! wafer reaches an instance only from inside its network namespace ([`Namespace`]): a container has
//! its own loopback and no route, so nothing else — the host, other containers — can reach it. What
//! an instance writes to stdout and stderr is kept, line by line, and goes into the record of the
//! next of its requests to finish: with one request at a time (`max_concurrency: 1`) that is exactly
//! the request's own output.

use super::function::{ContainerFunction, Prepared};
use super::outbound::Proxy;
use crate::error::Error;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wafer_api::FunctionConfig;
use wafer_container::cgroup::Usage as CgroupUsage;
use wafer_container::job::cgroup_of;
use wafer_container::netns::Namespace;
use wafer_container::serve::{Output, Pipe, Serving};
use wafer_engine::{
    InvokeError, LogLine, Mount, ResponseBody, Settings, Stream, Trace, Tracer, Usage,
};

/// Instances of an HTTP container function at most, unless it sets `max_replicas`.
pub const DEFAULT_REPLICAS: u32 = 4;
/// How long an instance may go without a request, unless `idle_timeout_ms` says otherwise.
pub const DEFAULT_IDLE_MS: u64 = 60_000;
/// Requests one instance takes at once, unless `max_concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: u32 = 16;

/// The most output an instance keeps for its next record; past it, lines are dropped (and it says so).
const LOG_BUFFER: usize = 256 * 1024;
/// How long a stopped instance has to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long after a failed start a kept-warm instance is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// How a container function runs.
pub(super) enum Shape {
    /// Each request a container of its own (`container`'s default).
    Job,
    /// A server on a port, in instances kept between requests.
    Http(Instances),
}

impl Shape {
    /// The shape `config` asks for.
    pub fn of(config: &FunctionConfig, settings: &Settings) -> Self {
        let Some(port) = config.port else {
            return Shape::Job;
        };
        Shape::Http(Instances {
            port,
            per_instance: config.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY) as usize,
            max_replicas: config.max_replicas.unwrap_or(DEFAULT_REPLICAS) as usize,
            idle: Duration::from_millis(config.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_MS)),
            min_warm: config.min_warm.unwrap_or(0) as usize,
            start_timeout: settings.limits.timeout,
            state: Mutex::new(State::default()),
            changed: Arc::new(Notify::new()),
        })
    }
}

/// The admission bound of a container function serving HTTP: every slot of every instance it may
/// run. `None` for a job, whose `max_concurrency` is the function's own as for wasm.
pub fn slots(config: &FunctionConfig) -> Option<u32> {
    config.port?;
    let per_instance = config.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    Some(per_instance.saturating_mul(config.max_replicas.unwrap_or(DEFAULT_REPLICAS)))
}

/// The running instances of one version serving HTTP.
pub(super) struct Instances {
    /// The port its server listens on, inside its own network namespace.
    pub port: u16,
    per_instance: usize,
    max_replicas: usize,
    idle: Duration,
    min_warm: usize,
    /// How long a new instance has to listen on its port.
    start_timeout: Duration,
    state: Mutex<State>,
    /// Told whenever a slot frees up or an instance comes or goes.
    changed: Arc<Notify>,
}

#[derive(Default)]
struct State {
    running: Vec<Arc<Instance>>,
    /// Instances being started.
    starting: usize,
    /// Requests waiting for a slot.
    waiting: usize,
    failed_at: Option<Instant>,
}

/// A request counted among those waiting for a slot, until it stops waiting.
struct Waiting<'a>(&'a Instances);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.state().waiting -= 1;
    }
}

/// One running container serving HTTP.
struct Instance {
    serving: Serving,
    namespace: Namespace,
    _proxy: Option<Proxy>,
    slots: Arc<Semaphore>,
    last_used: Mutex<Instant>,
    logs: Arc<Mutex<Logs>>,
}

/// Output an instance wrote that no record holds yet.
#[derive(Default)]
struct Logs {
    lines: Vec<LogLine>,
    bytes: usize,
    dropped: bool,
}

/// A request's slot on an instance; giving it back wakes whoever waits for one.
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    changed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Released before the waiters look.
        drop(self.permit.take());
        self.changed.notify_waiters();
    }
}

pub(super) fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Instances {
    fn state(&self) -> MutexGuard<'_, State> {
        locked(&self.state)
    }

    /// Keeps `function`'s instances in shape in the background while the version is loaded: stops
    /// idle ones, drops exited ones, and keeps `min_warm` running.
    pub fn tend_in_background(function: &Arc<ContainerFunction>) {
        let Some(instances) = function.instances() else {
            return;
        };
        let tick = (instances.idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let weak: Weak<ContainerFunction> = Arc::downgrade(function);
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(function) = weak.upgrade() else {
                    return;
                };
                function.tend();
            }
        });
    }
}

impl Instance {
    fn touch(&self) {
        *locked(&self.last_used) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        locked(&self.last_used).elapsed()
    }

    fn busy(&self, per_instance: usize) -> bool {
        self.slots.available_permits() < per_instance
    }
}

impl ContainerFunction {
    fn instances(&self) -> Option<&Instances> {
        match &self.shape {
            super::http::Shape::Http(instances) => Some(instances),
            super::http::Shape::Job => None,
        }
    }

    /// Proxies one request to an instance of the version, starting one if need be. Returns the
    /// response and whether the instance was already running (warm).
    pub async fn serve_http(
        self: &Arc<Self>,
        mut parts: http::request::Parts,
        body: Bytes,
        mount: &Mount,
        settings: &Settings,
        tracer: Tracer,
    ) -> Result<(http::Response<ResponseBody>, bool), Error> {
        let Some(instances) = self.instances() else {
            return Err(Error::Internal("the function does not serve HTTP".into()));
        };
        let started = Instant::now();
        let timeout = settings.limits.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (instance, slot, warm) =
            match tokio::time::timeout_at(deadline, self.acquire(instances)).await {
                Ok(acquired) => acquired?,
                Err(_) => return Err(InvokeError::Timeout(timeout).into()),
            };
        let cgroup = cgroup_of(instance.serving.id());
        let finish = Finish {
            tracer: Some(tracer),
            before: self.daemon.cgroups.usage(&cgroup).unwrap_or_default(),
            ready: started.elapsed(),
            cgroup,
            function: self.clone(),
            instance: instance.clone(),
            _slot: slot,
        };
        let path = wafer_engine::forward(&mut parts, mount);
        parts.uri = path
            .parse()
            .map_err(|e| Error::InvalidRequest(format!("the request path is not valid: {e}")))?;
        if let Some(client) = mount.client {
            if let Ok(value) = http::HeaderValue::from_str(&client.ip().to_string()) {
                parts.headers.append("x-forwarded-for", value);
            }
        }
        let request = http::Request::from_parts(parts, Full::new(body));
        let exchange = async {
            let stream = instance
                .namespace
                .connect(instances.port, timeout)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())
        };
        let response = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(self.failure(&instance, e).await),
            Err(_) => return Err(InvokeError::Timeout(timeout).into()),
        };
        // The record completes once the body is sent (or abandoned), as for an http component.
        let response = response.map(|body| {
            let frames =
                futures_util::stream::unfold(Some((body, finish)), move |state| async move {
                    let (mut body, finish) = state?;
                    match tokio::time::timeout_at(deadline, body.frame()).await {
                        Ok(Some(Ok(frame))) => Some((Ok(frame), Some((body, finish)))),
                        Ok(Some(Err(e))) => Some((Err(boxed(e.to_string())), None)),
                        Ok(None) => None,
                        Err(_) => Some((
                            Err(boxed(format!("the body did not finish within {timeout:?}"))),
                            None,
                        )),
                    }
                });
            StreamBody::new(frames)
        });
        let response = wafer_engine::cap_body(response, self.template.output_cap)?;
        Ok((response, warm))
    }

    /// Why a request to `instance` failed: its process was killed for memory, or exited, or
    /// did not answer properly.
    async fn failure(&self, instance: &Instance, error: String) -> Error {
        // The exit is reported a moment after the connection drops.
        let _ = tokio::time::timeout(Duration::from_millis(500), instance.serving.wait()).await;
        if let Some(killed) = self.killed_for_memory(&instance.serving) {
            return killed;
        }
        match instance.serving.exited() {
            Some(status) => InvokeError::Failed(format!(
                "the container exited (status {status}) while answering: {error}"
            ))
            .into(),
            None => InvokeError::BadResponse(format!("the container's server: {error}")).into(),
        }
    }

    /// The error of a container the kernel killed for going over its memory limit, if it was.
    fn killed_for_memory(&self, serving: &Serving) -> Option<Error> {
        let usage = self
            .daemon
            .cgroups
            .usage(&cgroup_of(serving.id()))
            .unwrap_or_default();
        (usage.oom_kills > 0).then(|| InvokeError::MemoryLimit(self.template.limits.memory).into())
    }

    /// A slot on a running instance, starting one when none is free and there is room for another;
    /// whether the instance was already running.
    async fn acquire(
        self: &Arc<Self>,
        instances: &Instances,
    ) -> Result<(Arc<Instance>, Slot, bool), Error> {
        let mut cold = false;
        loop {
            let changed = instances.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let start = {
                let mut state = instances.state();
                state.running.retain(|i| i.serving.exited().is_none());
                let free = state.running.iter().find_map(|instance| {
                    let permit = instance.slots.clone().try_acquire_owned().ok()?;
                    Some((instance.clone(), permit))
                });
                if let Some((instance, permit)) = free {
                    instance.touch();
                    let slot = Slot {
                        permit: Some(permit),
                        changed: instances.changed.clone(),
                    };
                    return Ok((instance, slot, !cold));
                }
                // Instances on their way will take as many waiting requests as they have slots:
                // one more is started only for requests beyond those.
                let covered = state.starting * instances.per_instance > state.waiting;
                let room = state.running.len() + state.starting < instances.max_replicas;
                if room && !covered {
                    state.starting += 1;
                } else {
                    state.waiting += 1;
                }
                room && !covered
            };
            if start {
                cold = true;
                // In a task of its own: a caller that gives up leaves the instance to the next.
                let function = self.clone();
                tokio::spawn(async move { function.add_instance().await })
                    .await
                    .map_err(|e| Error::Internal(format!("starting an instance failed: {e}")))??;
                continue;
            }
            let _waiting = Waiting(instances);
            changed.await;
        }
    }

    /// Starts one more instance (counted in `starting` already) and adds it to the running ones.
    async fn add_instance(self: Arc<Self>) -> Result<(), Error> {
        let Some(instances) = self.instances() else {
            return Ok(());
        };
        let started = self.start_instance(instances).await;
        {
            let mut state = instances.state();
            state.starting -= 1;
            match &started {
                Ok(instance) => state.running.push(instance.clone()),
                Err(_) => state.failed_at = Some(Instant::now()),
            }
        }
        instances.changed.notify_waiters();
        started.map(drop)
    }

    /// A new instance, listening on its port.
    async fn start_instance(&self, instances: &Instances) -> Result<Arc<Instance>, Error> {
        let Prepared {
            created,
            namespace,
            proxy,
        } = self.create(true).await?;
        let Some(namespace) = namespace else {
            return Err(Error::Internal(
                "no way into the container's network".into(),
            ));
        };
        let logs = Arc::new(Mutex::new(Logs::default()));
        let sink = logs.clone();
        let output: Output = Arc::new(move |pipe, line: String| {
            let stream = match pipe {
                Pipe::Stdout => Stream::Stdout,
                Pipe::Stderr => Stream::Stderr,
            };
            let mut logs = locked(&sink);
            if logs.bytes + line.len() > LOG_BUFFER {
                logs.dropped = true;
                return;
            }
            logs.bytes += line.len();
            logs.lines.push(stream.line(&line));
        });
        let serving = created.serve(output).await?;
        let ready_by = Instant::now() + instances.start_timeout;
        loop {
            if let Some(status) = serving.exited() {
                if let Some(killed) = self.killed_for_memory(&serving) {
                    return Err(killed);
                }
                let said = last_lines(&logs);
                return Err(InvokeError::Failed(format!(
                    "the container exited (status {status}) before it listened on port {}{said}",
                    instances.port
                ))
                .into());
            }
            let left = ready_by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                serving.stop(STOP_GRACE).await;
                return Err(InvokeError::Failed(format!(
                    "the container did not listen on port {} within {:?}",
                    instances.port, instances.start_timeout
                ))
                .into());
            }
            match namespace
                .connect(instances.port, left.min(Duration::from_millis(250)))
                .await
            {
                Ok(_) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        tracing::debug!(function = %self.template.function, container = %serving.id(), "instance started");
        Ok(Arc::new(Instance {
            serving,
            namespace,
            _proxy: proxy,
            slots: Arc::new(Semaphore::new(instances.per_instance)),
            last_used: Mutex::new(Instant::now()),
            logs,
        }))
    }

    /// One round of upkeep: drops exited instances, stops those idle past the timeout (keeping
    /// `min_warm`), and starts what `min_warm` misses.
    fn tend(self: &Arc<Self>) {
        let Some(instances) = self.instances() else {
            return;
        };
        let (idle, missing) = {
            let mut state = instances.state();
            state.running.retain(|i| i.serving.exited().is_none());
            let mut idle = Vec::new();
            let mut index = 0;
            while index < state.running.len() {
                let instance = &state.running[index];
                let spare = state.running.len() > instances.min_warm;
                if spare
                    && !instance.busy(instances.per_instance)
                    && instance.idle_for() >= instances.idle
                {
                    idle.push(state.running.remove(index));
                } else {
                    index += 1;
                }
            }
            let retry = state
                .failed_at
                .is_none_or(|at| at.elapsed() >= RETRY_AFTER_FAILURE);
            let have = state.running.len() + state.starting;
            let missing = match retry {
                true => instances.min_warm.saturating_sub(have),
                false => 0,
            };
            state.starting += missing;
            (idle, missing)
        };
        if !idle.is_empty() {
            instances.changed.notify_waiters();
        }
        for instance in idle {
            tokio::spawn(async move {
                // An instance no request holds is stopped gently; one still held goes when it is let go.
                if let Ok(instance) = Arc::try_unwrap(instance) {
                    instance.serving.stop(STOP_GRACE).await;
                }
            });
        }
        for _ in 0..missing {
            let function = self.clone();
            tokio::spawn(async move {
                let name = function.template.function.clone();
                if let Err(e) = function.add_instance().await {
                    tracing::warn!(function = %name, "cannot keep an instance running: {e}");
                }
            });
        }
    }
}

/// What a proxied request leaves for its record once its body is done: its share of the instance's
/// CPU, the instance's peak memory, and the output the instance wrote since the last record took it.
struct Finish {
    tracer: Option<Tracer>,
    before: CgroupUsage,
    ready: Duration,
    cgroup: String,
    function: Arc<ContainerFunction>,
    instance: Arc<Instance>,
    _slot: Slot,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let Some(tracer) = self.tracer.take() else {
            return;
        };
        self.instance.touch();
        let after = self
            .function
            .daemon
            .cgroups
            .usage(&self.cgroup)
            .unwrap_or_default();
        let (logs, dropped) = {
            let mut logs = locked(&self.instance.logs);
            let taken = std::mem::take(&mut *logs);
            (taken.lines, taken.dropped)
        };
        tracer.send(Trace {
            usage: Usage {
                instantiate: self.ready,
                cpu: after
                    .cpu
                    .unwrap_or_default()
                    .saturating_sub(self.before.cpu.unwrap_or_default()),
                peak_memory_bytes: after.peak_memory.unwrap_or_default(),
                fuel_consumed: None,
            },
            logs,
            logs_truncated: dropped,
        });
    }
}

/// The last lines an instance wrote, for the error of one that did not start.
fn last_lines(logs: &Mutex<Logs>) -> String {
    let logs = locked(logs);
    let tail: Vec<&str> = logs
        .lines
        .iter()
        .rev()
        .take(5)
        .map(|l| l.text.as_str())
        .collect();
    if tail.is_empty() {
        return String::new();
    }
    let mut tail = tail;
    tail.reverse();
    format!("; it wrote: {}", tail.join(" / "))
}

fn boxed(message: String) -> Box<dyn std::error::Error + Send + Sync> {
    message.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_admitted_up_to_every_slot_of_every_instance() {
        let config = FunctionConfig {
            port: Some(8080),
            ..FunctionConfig::default()
        };
        assert_eq!(slots(&config), Some(DEFAULT_CONCURRENCY * DEFAULT_REPLICAS));
        let config = FunctionConfig {
            port: Some(8080),
            max_concurrency: Some(2),
            max_replicas: Some(3),
            ..FunctionConfig::default()
        };
        assert_eq!(slots(&config), Some(6));
        assert_eq!(slots(&FunctionConfig::default()), None);
    }
}
