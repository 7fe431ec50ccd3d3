//! One *job* run: a fresh container of an image, the request on its stdin, its output collected, and
//! everything it left removed, however it ended.
//!
//! The container's root file system is a snapshot prepared on the image's top layer (writable, so runc
//! can make the mount points an image lacks, then remounted read-only by the spec); stdin,
//! stdout and stderr are FIFOs in a directory of the run's own, which the runc shim opens when the
//! task is created; once the request is written, the shim is told to close its end of stdin (it
//! keeps one open for clients that reattach), so the process sees the end of its input. Output past the cap is read and dropped, so a chatty container never blocks on a
//! full pipe. What the container used is read from its cgroup after it exits and before its task is
//! deleted (deleting the task removes the cgroup).

use crate::cgroup::{Cgroups, Usage};
use crate::containerd::{Containerd, Image, SNAPSHOTTER};
use crate::error::ContainerError;
use crate::spec::{self, Limits, Process};
use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{ListSnapshotsRequest, PrepareSnapshotRequest};
use containerd_client::services::v1::{
    containers_client::ContainersClient, tasks_client::TasksClient, CloseIoRequest, Container,
    CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest, DeleteTaskRequest,
    KillRequest, ListContainersRequest, StartRequest, WaitRequest,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

/// The runtime every container runs under.
pub const RUNTIME: &str = "io.containerd.runc.v2";

/// The label every container of wafer's carries: the function it runs.
pub const FUNCTION_LABEL: &str = "io.wafer.function";

/// The label naming the wafer node that made a container.
pub const NODE_LABEL: &str = "io.wafer.node";

/// What the OCI runtime spec is, to containerd.
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The cgroup every container's own cgroup is made under.
pub const CGROUP_PARENT: &str = "/wafer";

/// How every container of one function version is made.
#[derive(Debug, Clone)]
pub struct Template {
    /// The function it belongs to (its label).
    pub function: String,
    /// The node that makes it (its label): what a restarted node removes as its own leftovers.
    pub node: String,
    /// The process to start.
    pub process: Process,
    /// What the kernel holds it to.
    pub limits: Limits,
    /// The most bytes kept of stdout, and of stderr.
    pub output_cap: usize,
}

/// One job to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// The container's id: unique per run.
    pub id: String,
    /// Its stdin.
    pub stdin: Vec<u8>,
    /// How long it may run before it is killed.
    pub timeout: Duration,
}

/// How a job ended.
#[derive(Debug, Clone, Default)]
pub struct Ended {
    /// Its exit status (128 + the signal when a signal ended it).
    pub exit_status: u32,
    /// Whether it was killed for running past its timeout.
    pub timed_out: bool,
    /// What it wrote to stdout, up to the cap, and whether more was dropped.
    pub stdout: Vec<u8>,
    pub stdout_truncated: bool,
    /// What it wrote to stderr, up to the cap, and whether more was dropped.
    pub stderr: Vec<u8>,
    pub stderr_truncated: bool,
    /// What its cgroup says it used.
    pub usage: Usage,
}

impl Ended {
    /// Whether the kernel killed it for going over its memory limit.
    pub fn out_of_memory(&self) -> bool {
        self.usage.oom_kills > 0
    }
}

/// Runs `job` in a fresh container of `image`, made from `template`, with its FIFOs under `work`.
pub async fn run(
    containerd: &Containerd,
    cgroups: &Cgroups,
    work: &Path,
    image: &Image,
    template: &Template,
    job: Job,
) -> Result<Ended, ContainerError> {
    create(containerd, work, image, template, job.id)
        .await?
        .run(cgroups, job.stdin, job.timeout)
        .await
}

/// The cgroup of container `id`.
pub fn cgroup_of(id: &str) -> String {
    format!("{CGROUP_PARENT}/{id}")
}

/// A container whose task is created and not started: its process exists, stopped before the
/// program runs, in its own namespaces and cgroup. Starting it is all that is left (the warm pool
/// keeps these). Dropped without being run or discarded, it is removed in the background.
pub struct Created {
    pub(crate) containerd: Containerd,
    pub(crate) id: String,
    dir: PathBuf,
    pid: u32,
    output_cap: usize,
    pub(crate) pipes: Option<Pipes>,
}

pub(crate) struct Pipes {
    pub(crate) stdin: pipe::Sender,
    pub(crate) stdout: pipe::Receiver,
    pub(crate) stderr: pipe::Receiver,
}

/// Creates a container of `image` from `template` and its task, not started, with id `id`.
pub async fn create(
    containerd: &Containerd,
    work: &Path,
    image: &Image,
    template: &Template,
    id: String,
) -> Result<Created, ContainerError> {
    let dir = work.join(&id);
    tokio::fs::create_dir_all(&dir).await?;
    let mut created = Created {
        containerd: containerd.clone(),
        id,
        dir,
        pid: 0,
        output_cap: template.output_cap,
        pipes: None,
    };
    match created.make(image, template).await {
        Ok((pid, pipes)) => {
            created.pid = pid;
            created.pipes = Some(pipes);
            Ok(created)
        }
        Err(e) => {
            created.discard().await;
            Err(e)
        }
    }
}

impl Created {
    /// The container's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host pid of its first process (`/proc/PID/ns/net` is its network namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn make(
        &self,
        image: &Image,
        template: &Template,
    ) -> Result<(u32, Pipes), ContainerError> {
        let containerd = &self.containerd;
        let id = self.id.clone();
        let spec = spec::runtime_spec(&template.process, &template.limits, &cgroup_of(&id));
        ContainersClient::new(containerd.channel())
            .create(containerd.request(CreateContainerRequest {
                container: Some(Container {
                    id: id.clone(),
                    labels: HashMap::from([
                        (FUNCTION_LABEL.to_string(), template.function.clone()),
                        (NODE_LABEL.to_string(), template.node.clone()),
                    ]),
                    image: image.digest.clone(),
                    runtime: Some(Runtime {
                        name: RUNTIME.into(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: SPEC_TYPE.into(),
                        value: spec.to_string().into_bytes(),
                    }),
                    snapshotter: SNAPSHOTTER.into(),
                    snapshot_key: snapshot_key(&id),
                    ..Default::default()
                }),
            }))
            .await?;

        // Made after the container that names it: an active snapshot nothing refers to is containerd's
        // garbage collector's to take, and a collection may run at any moment.
        let mounts = SnapshotsClient::new(containerd.channel())
            .prepare(containerd.request(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: snapshot_key(&id),
                parent: image.chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await?
            .into_inner()
            .mounts;
        let [stdin, stdout, stderr] = ["stdin", "stdout", "stderr"].map(|name| self.dir.join(name));
        for fifo in [&stdin, &stdout, &stderr] {
            mkfifo(fifo)?;
        }
        // Held open for reading and writing so that neither side's open waits for the other.
        let input = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&stdin)?;
        let outputs = [&stdout, &stderr].map(|fifo| pipe::OpenOptions::new().open_receiver(fifo));
        let [out, err] = outputs;
        let pipes = Pipes {
            stdin: input,
            stdout: out?,
            stderr: err?,
        };
        let pid = TasksClient::new(containerd.channel())
            .create(containerd.request(CreateTaskRequest {
                container_id: id,
                rootfs: mounts,
                stdin: path_text(&stdin),
                stdout: path_text(&stdout),
                stderr: path_text(&stderr),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .pid;
        Ok((pid, pipes))
    }

    /// Starts the container with `stdin` as its input, waits for it to end (killing it past
    /// `timeout`), collects its output and usage, and removes it.
    pub async fn run(
        mut self,
        cgroups: &Cgroups,
        stdin: Vec<u8>,
        timeout: Duration,
    ) -> Result<Ended, ContainerError> {
        let pipes = self.pipes.take();
        let ran = match pipes {
            Some(pipes) => self.run_task(pipes, cgroups, stdin, timeout).await,
            None => Err(ContainerError::Daemon(
                "the container was not created".into(),
            )),
        };
        // A run that ended has waited for its task; one cut short may have left it running.
        remove(&self.containerd, &self.id, ran.is_err()).await;
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        self.id.clear();
        ran
    }

    /// Removes the container without running it.
    pub async fn discard(mut self) {
        self.pipes = None;
        remove(&self.containerd, &self.id, true).await;
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
        self.id.clear();
    }

    async fn run_task(
        &self,
        pipes: Pipes,
        cgroups: &Cgroups,
        stdin: Vec<u8>,
        timeout: Duration,
    ) -> Result<Ended, ContainerError> {
        let containerd = &self.containerd;
        let id = self.id.clone();
        let mut tasks = TasksClient::new(containerd.channel());
        let cap = self.output_cap;
        let stdout_reader = tokio::spawn(read_capped(pipes.stdout, cap));
        let stderr_reader = tokio::spawn(read_capped(pipes.stderr, cap));
        let close = containerd.request(CloseIoRequest {
            container_id: id.clone(),
            exec_id: String::new(),
            stdin: true,
        });
        let mut closer = tasks.clone();
        let mut input = pipes.stdin;
        let writer = tokio::spawn(async move {
            // A process that does not read its stdin closes it early: that is not an error.
            let _ = input.write_all(&stdin).await;
            drop(input);
            // The shim holds the FIFO open for writing too, until it is told the input is over.
            let _ = closer.close_io(close).await;
        });

        let waiting = {
            let mut tasks = tasks.clone();
            let request = containerd.request(WaitRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            });
            tokio::spawn(async move { tasks.wait(request).await })
        };
        tasks
            .start(containerd.request(StartRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            }))
            .await?;
        let (waited, timed_out) = match tokio::time::timeout(timeout, waiting).await {
            Ok(waited) => (waited, false),
            Err(_) => {
                signal(containerd, &id, libc::SIGKILL, true).await?;
                let again = tasks
                    .wait(containerd.request(WaitRequest {
                        container_id: id.clone(),
                        exec_id: String::new(),
                    }))
                    .await;
                (Ok(again), true)
            }
        };
        let exit_status = waited
            .map_err(|e| ContainerError::Daemon(format!("waiting for the task failed: {e}")))??
            .into_inner()
            .exit_status;
        let usage = cgroups.usage(&cgroup_of(&id)).unwrap_or_default();
        writer.abort();
        let (stdout, stdout_truncated) = stdout_reader.await.unwrap_or_default();
        let (stderr, stderr_truncated) = stderr_reader.await.unwrap_or_default();
        Ok(Ended {
            exit_status,
            timed_out,
            stdout,
            stdout_truncated,
            stderr,
            stderr_truncated,
            usage,
        })
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if self.id.is_empty() {
            return;
        }
        let (containerd, id, dir) = (self.containerd.clone(), self.id.clone(), self.dir.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                remove(&containerd, &id, true).await;
                let _ = tokio::fs::remove_dir_all(&dir).await;
            });
        }
    }
}

/// Sends `signal` to container `id`'s first process, or with `all` to every process of its task.
pub(crate) async fn signal(
    containerd: &Containerd,
    id: &str,
    signal: i32,
    all: bool,
) -> Result<(), ContainerError> {
    TasksClient::new(containerd.channel())
        .kill(containerd.request(KillRequest {
            container_id: id.into(),
            exec_id: String::new(),
            signal: signal as u32,
            all,
        }))
        .await?;
    Ok(())
}

/// Removes container `id`: its task (killed first when it may still run), its record and its
/// snapshot. What is not there is skipped.
pub async fn remove(containerd: &Containerd, id: &str, may_run: bool) {
    let mut tasks = TasksClient::new(containerd.channel());
    if may_run {
        let _ = signal(containerd, id, libc::SIGKILL, true).await;
    }
    let _ = tasks
        .delete(containerd.request(DeleteTaskRequest {
            container_id: id.into(),
        }))
        .await;
    let _ = ContainersClient::new(containerd.channel())
        .delete(containerd.request(DeleteContainerRequest { id: id.into() }))
        .await;
    containerd.remove_snapshot(&snapshot_key(id)).await;
}

/// Removes every container node `node` left behind (a crashed wafer's: they carry its label) and
/// every container snapshot no container uses; returns how many containers there were.
pub async fn remove_leftovers(
    containerd: &Containerd,
    node: &str,
) -> Result<usize, ContainerError> {
    let mut containers = ContainersClient::new(containerd.channel());
    let listed = containers
        .list(containerd.request(ListContainersRequest {
            filters: vec![format!("labels.\"{NODE_LABEL}\"=={node}")],
        }))
        .await?
        .into_inner()
        .containers;
    for container in &listed {
        remove(containerd, &container.id, true).await;
    }
    let remaining: Vec<String> = containers
        .list(containerd.request(ListContainersRequest::default()))
        .await?
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut snapshots = SnapshotsClient::new(containerd.channel())
        .list(containerd.request(ListSnapshotsRequest {
            snapshotter: SNAPSHOTTER.into(),
            filters: Vec::new(),
        }))
        .await?
        .into_inner();
    let mut orphans = Vec::new();
    while let Some(page) = snapshots.message().await? {
        for info in page.info {
            let orphan = info
                .name
                .strip_prefix("wafer-")
                .is_some_and(|id| !remaining.iter().any(|c| c == id));
            if orphan {
                orphans.push(info.name);
            }
        }
    }
    for key in orphans {
        containerd.remove_snapshot(&key).await;
    }
    Ok(listed.len())
}

fn snapshot_key(id: &str) -> String {
    format!("wafer-{id}")
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn mkfifo(path: &Path) -> std::io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a NUL-terminated path that lives across the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Reads `pipe` to its end, keeping the first `cap` bytes; whether more came.
async fn read_capped(mut pipe: pipe::Receiver, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buffer = vec![0; 64 * 1024];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return (kept, truncated),
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
}
