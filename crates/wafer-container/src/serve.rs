//! A container that serves: a created container ([`Created`]) started as a long-running process, its
//! stdout and stderr handed over line by line as it writes them, until it exits or is stopped.
//!
//! Its stdin is closed at once (a server reads requests from its socket, not its input). Whoever
//! holds the [`Serving`] learns when the process exits, and dropping it removes the container like a
//! dropped [`Created`] (its output readers end with the pipes): nothing outlives its owner.

use crate::containerd::Containerd;
use crate::error::ContainerError;
use crate::job::{signal, Created};
use containerd_client::services::v1::{
    tasks_client::TasksClient, CloseIoRequest, StartRequest, WaitRequest,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest line handed over whole; a longer one comes in pieces of this size.
const MAX_LINE: usize = 16 * 1024;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    Stdout,
    Stderr,
}

/// What receives a serving container's output, one line at a time (without its newline).
pub type Output = Arc<dyn Fn(Pipe, String) + Send + Sync>;

/// A started container, serving until it exits or is stopped.
pub struct Serving {
    created: Created,
    exit: watch::Receiver<Option<u32>>,
    readers: [JoinHandle<()>; 2],
}

impl Created {
    /// Starts the container as a server: `output` gets each line it writes to stdout or stderr.
    pub async fn serve(mut self, output: Output) -> Result<Serving, ContainerError> {
        let Some(pipes) = self.pipes.take() else {
            return Err(ContainerError::Daemon(
                "the container was not created".into(),
            ));
        };
        let containerd = self.containerd.clone();
        let id = self.id.clone();
        let mut tasks = TasksClient::new(containerd.channel());
        let readers = [
            tokio::spawn(read_lines(pipes.stdout, Pipe::Stdout, output.clone())),
            tokio::spawn(read_lines(pipes.stderr, Pipe::Stderr, output)),
        ];
        let (exited, exit) = watch::channel(None);
        let waiting = {
            let mut tasks = tasks.clone();
            let request = containerd.request(WaitRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            });
            tokio::spawn(async move {
                // A wait that fails (the daemon went away) counts as an exit: the container is
                // no longer known to serve.
                let status = match tasks.wait(request).await {
                    Ok(response) => response.into_inner().exit_status,
                    Err(_) => u32::MAX,
                };
                let _ = exited.send(Some(status));
            })
        };
        let started = tasks
            .start(containerd.request(StartRequest {
                container_id: id.clone(),
                exec_id: String::new(),
            }))
            .await;
        if let Err(e) = started {
            waiting.abort();
            for reader in readers {
                reader.abort();
            }
            self.discard().await;
            return Err(e.into());
        }
        drop(pipes.stdin);
        // The shim keeps the FIFO open for writing until told the input is over.
        let _ = tasks
            .close_io(containerd.request(CloseIoRequest {
                container_id: id,
                exec_id: String::new(),
                stdin: true,
            }))
            .await;
        Ok(Serving {
            created: self,
            exit,
            readers,
        })
    }
}

impl Serving {
    /// The container's id.
    pub fn id(&self) -> &str {
        self.created.id()
    }

    /// The host pid of its first process.
    pub fn pid(&self) -> u32 {
        self.created.pid()
    }

    /// Its exit status, once it has exited.
    pub fn exited(&self) -> Option<u32> {
        *self.exit.borrow()
    }

    /// Waits until it has exited; its exit status.
    pub async fn wait(&self) -> u32 {
        let mut exit = self.exit.clone();
        let status = match exit.wait_for(Option::is_some).await {
            Ok(status) => status.unwrap_or(u32::MAX),
            Err(_) => u32::MAX,
        };
        status
    }

    /// Stops it: SIGTERM, up to `grace` to exit, then whatever is left is killed and the container
    /// removed.
    pub async fn stop(self, grace: Duration) {
        if self.exited().is_none()
            && signal(&self.containerd(), self.id(), libc::SIGTERM, false)
                .await
                .is_ok()
        {
            let _ = tokio::time::timeout(grace, self.wait()).await;
        }
        let Serving {
            created, readers, ..
        } = self;
        created.discard().await;
        for reader in readers {
            reader.abort();
        }
    }

    fn containerd(&self) -> Containerd {
        self.created.containerd.clone()
    }
}

/// Reads `pipe` to its end, handing each line to `output`.
async fn read_lines(mut pipe: pipe::Receiver, which: Pipe, output: Output) {
    let mut pending = Vec::new();
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let n = match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buffer[..n]);
        for line in split_lines(&mut pending) {
            output(which, line);
        }
    }
    if !pending.is_empty() {
        output(which, text(&pending));
    }
}

/// Takes the whole lines out of `pending` (and a line longer than [`MAX_LINE`] in pieces), leaving
/// the unfinished rest.
fn split_lines(pending: &mut Vec<u8>) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        lines.push(text(&line[..end]));
    }
    while pending.len() >= MAX_LINE {
        let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
        lines.push(text(&piece));
    }
    lines
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.strip_suffix(b"\r").unwrap_or(bytes)).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_cut_into_lines_and_overlong_ones_into_pieces() {
        let mut pending = b"one\r\ntwo\nthr".to_vec();
        assert_eq!(split_lines(&mut pending), ["one", "two"]);
        assert_eq!(pending, b"thr");
        pending.extend_from_slice(&vec![b'x'; MAX_LINE + 5]);
        let lines = split_lines(&mut pending);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(pending.len(), 8);
    }
}
