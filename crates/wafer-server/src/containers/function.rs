//! A container function version, ready to run: its image in containerd, the template every one of
//! its containers is made from, and its warm pool (a *job*) or its running instances (*http*, in
//! `http.rs`).
//!
//! A *job* invocation takes a container from the pool (warm: created, not started) or creates one
//! (cold), writes the request's CGI variables and its body to the container's stdin through the entry
//! program ([`wafer_container::entry`]), and waits for it; the container is removed whatever
//! happened, and never used for another request. The pool is filled again in the background.
//!
//! A container that may reach out (`allowed_outbound_hosts`) gets its proxy ([`super::outbound`])
//! between its creation and its start: bound in its network namespace, so it is there before the
//! container's program runs.

use super::http::{locked, Instances, Shape};
use super::outbound::{self, Proxy};
use super::{Containers, Daemon};
use crate::error::Error;
use bytes::Bytes;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use wafer_api::{CommandOutput, FunctionConfig};
use wafer_container::containerd::{parse_user, Image};
use wafer_container::job::{self, Created, Template};
use wafer_container::netns::Namespace;
use wafer_container::spec::{Limits, Process, NOBODY};
use wafer_container::{entry, ContainerError};
use wafer_engine::{InvokeError, Mount, ResponseBody, Settings, Stream, Trace, Tracer, Usage};

/// A container's processes and threads unless its function sets `pids`.
pub const DEFAULT_PIDS: u32 = 128;

/// The size of a container's `/tmp` (its pages count against its memory limit).
const TMP_BYTES: u64 = 64 << 20;

/// What a job container answered.
pub enum Reply {
    /// The job reply: exit code and output.
    Command(CommandOutput),
    /// Its stdout, parsed as a CGI response (`cgi`).
    Http(http::Response<ResponseBody>),
}

/// A container created and not started, with what it was given in its network namespace.
pub(super) struct Prepared {
    pub created: Created,
    /// A thread in its network namespace, when wafer needs to reach into it (*http*).
    pub namespace: Option<Namespace>,
    /// Its outbound proxy, when it may reach out.
    pub proxy: Option<Proxy>,
}

/// A loaded container function version.
pub struct ContainerFunction {
    pub(super) daemon: Daemon,
    image: Image,
    pub(super) template: Template,
    cgi: bool,
    /// What its outbound proxy lets through; none at all when empty.
    outbound: wafer_engine::OutboundPolicy,
    /// Containers created and not started, at most `min_warm` of them (*job*).
    warm: Mutex<Vec<Prepared>>,
    min_warm: usize,
    filling: std::sync::atomic::AtomicBool,
    /// A job, or an HTTP server with its running instances.
    pub(super) shape: Shape,
}

impl ContainerFunction {
    /// Imports the version's image tarball (`module`) and makes the function of `name` with
    /// `config`, whose invocations get `settings`.
    pub async fn load(
        containers: &Containers,
        module: Bytes,
        config: &FunctionConfig,
        settings: &Settings,
    ) -> Result<Arc<Self>, Error> {
        let (daemon, image) = containers.import(module).await?;
        let user = match config.user.as_deref() {
            Some(user) => parse_user(user).ok_or_else(|| {
                Error::InvalidConfig(format!("user {user:?} is not UID or UID:GID"))
            })?,
            None => NOBODY,
        };
        let mut env = image.config.env.clone();
        for (name, value) in &settings.env {
            env.retain(|pair| pair.split_once('=').map(|(n, _)| n) != Some(name));
            env.push(format!("{name}={value}"));
        }
        let shape = Shape::of(config, settings);
        if let Shape::Http(instances) = &shape {
            env.retain(|pair| !pair.starts_with("PORT="));
            env.push(format!("PORT={}", instances.port));
        }
        let outbound = settings.outbound.clone();
        if !outbound.is_empty() {
            env.retain(|pair| !pair.split_once('=').is_some_and(|(n, _)| outbound::sets(n)));
            env.extend(outbound::env());
        }
        let args = image.config.args(&config.args);
        if args.is_empty() {
            return Err(Error::Container(ContainerError::InvalidImage(
                "the image names no program (no Entrypoint or Cmd) and the config gives no `args`"
                    .into(),
            )));
        }
        let template = Template {
            function: settings.name.clone(),
            node: containers.node().to_string(),
            process: Process {
                args,
                env,
                cwd: image.config.cwd.clone(),
                user,
                // A server's environment is its own at creation: only jobs take a frame on stdin.
                entry: matches!(shape, Shape::Job).then(|| daemon.entry.clone()),
            },
            limits: Limits {
                memory: settings.limits.memory_bytes,
                cpu_millis: config.cpu,
                pids: config.pids.unwrap_or(DEFAULT_PIDS),
                tmp: TMP_BYTES,
            },
            output_cap: settings.limits.response_bytes,
        };
        let function = Arc::new(Self {
            daemon,
            image,
            template,
            cgi: config.cgi,
            outbound,
            warm: Mutex::new(Vec::new()),
            // A server's `min_warm` are running instances, which its `Instances` keep.
            min_warm: match shape {
                Shape::Job => config.min_warm.unwrap_or(0) as usize,
                Shape::Http(_) => 0,
            },
            filling: std::sync::atomic::AtomicBool::new(false),
            shape,
        });
        match function.shape {
            Shape::Job => function.fill(),
            Shape::Http(_) => Instances::tend_in_background(&function),
        }
        Ok(function)
    }

    /// The image's manifest digest.
    pub fn digest(&self) -> &str {
        &self.image.digest
    }

    /// Whether it serves HTTP on a port (rather than running jobs).
    pub fn serves_http(&self) -> bool {
        matches!(self.shape, Shape::Http(_))
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Vec<Prepared>> {
        locked(&self.warm)
    }

    /// A new container of the version, created and not started, with its proxy when it may reach
    /// out, and a way into its network namespace when `reach_in`.
    pub(super) async fn create(&self, reach_in: bool) -> Result<Prepared, Error> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let created = job::create(
            &self.daemon.containerd,
            &self.daemon.work,
            &self.image,
            &self.template,
            id,
        )
        .await?;
        let reach_out = !self.outbound.is_empty();
        if !reach_in && !reach_out {
            return Ok(Prepared {
                created,
                namespace: None,
                proxy: None,
            });
        }
        let namespace = Namespace::of(created.pid()).await.map_err(|e| {
            Error::Internal(format!(
                "cannot enter the container's network namespace: {e}"
            ))
        })?;
        let proxy = match reach_out {
            true => Some(
                outbound::start(&namespace, self.outbound.clone())
                    .await
                    .map_err(|e| {
                        Error::Internal(format!("cannot start the container's proxy: {e}"))
                    })?,
            ),
            false => None,
        };
        Ok(Prepared {
            created,
            namespace: reach_in.then_some(namespace),
            proxy,
        })
    }

    /// A container to run: one from the pool (warm), or a new one (cold).
    async fn take(self: &Arc<Self>) -> Result<(Prepared, bool), Error> {
        let pooled = self.pool().pop();
        self.fill();
        match pooled {
            Some(created) => Ok((created, true)),
            None => Ok((self.create(false).await?, false)),
        }
    }

    /// Fills the pool to `min_warm` in the background, unless it is being filled already. The task
    /// stops when the version is no longer loaded.
    fn fill(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.min_warm == 0 || self.filling.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(function) = weak.upgrade() else {
                    return;
                };
                if function.pool().len() >= function.min_warm {
                    function.filling.store(false, Ordering::Release);
                    return;
                }
                match function.create(false).await {
                    Ok(created) => function.pool().push(created),
                    Err(e) => {
                        tracing::warn!(function = %function.template.function, "cannot keep a warm container: {e}");
                        function.filling.store(false, Ordering::Release);
                        return;
                    }
                }
            }
        });
    }

    /// Runs one job: a container of its own, the request on its stdin and in its environment.
    /// Returns the reply and whether the container was warm.
    pub async fn run_job(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        body: Bytes,
        mount: &Mount,
        settings: &Settings,
        tracer: Tracer,
    ) -> Result<(Reply, bool), Error> {
        let mut variables = wafer_engine::cgi_env(parts, body.len(), mount, settings);
        if !self.outbound.is_empty() {
            // The container's proxy settings are wafer's, fixed at its creation.
            variables.retain(|(name, _)| !outbound::sets(name));
        }
        let mut stdin = entry::frame(variables.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .ok_or_else(|| {
                Error::InvalidRequest(
                    "the request's headers cannot be passed to a container as environment \
                     variables (too large, or holding NUL)"
                        .into(),
                )
            })?;
        stdin.extend_from_slice(&body);
        let started = Instant::now();
        let (prepared, warm) = self.take().await?;
        let ready = started.elapsed();
        let timeout = settings.limits.timeout;
        // The proxy serves the container for as long as it runs.
        let _proxy = prepared.proxy;
        let ended = prepared
            .created
            .run(&self.daemon.cgroups, stdin, timeout)
            .await?;
        let mut trace = Trace {
            usage: Usage {
                instantiate: ready,
                cpu: ended.usage.cpu.unwrap_or_default(),
                peak_memory_bytes: ended.usage.peak_memory.unwrap_or_default(),
                fuel_consumed: None,
            },
            ..Trace::default()
        };
        let stderr = String::from_utf8_lossy(&ended.stderr);
        trace
            .logs
            .extend(stderr.lines().map(|line| Stream::Stderr.line(line)));
        trace.logs_truncated = ended.stderr_truncated;
        tracer.send(trace);
        if ended.timed_out {
            return Err(InvokeError::Timeout(timeout).into());
        }
        if ended.out_of_memory() {
            return Err(InvokeError::MemoryLimit(self.template.limits.memory).into());
        }
        let exit_code = i32::try_from(ended.exit_status).unwrap_or(i32::MAX);
        let reply = if self.cgi {
            Reply::Http(wafer_engine::cgi_answer(
                exit_code,
                Bytes::from(ended.stdout),
                ended.stdout_truncated,
                &ended.stderr,
                self.template.output_cap,
            )?)
        } else {
            Reply::Command(CommandOutput {
                exit_code,
                stdout: String::from_utf8_lossy(&ended.stdout).into_owned(),
                stderr: stderr.into_owned(),
                stdout_truncated: ended.stdout_truncated,
                stderr_truncated: ended.stderr_truncated,
            })
        };
        Ok((reply, warm))
    }
}

impl Drop for ContainerFunction {
    fn drop(&mut self) {
        // Each warm container, and each running instance, removes itself when dropped.
        self.pool().clear();
    }
}
