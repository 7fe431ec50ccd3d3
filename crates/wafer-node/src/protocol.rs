//! What a container's shim and the node agent say to each other over the agent's Unix socket.
//!
//! One connection per container, held for the container's life: the function is loaded while it is
//! open and unloaded when it closes, from either side. So a shim that dies takes its function with
//! it, and an agent that dies ends every container it ran (each shim reports its task as exited).
//!
//! ```text
//! shim                                   agent
//! Load {config, env, args, limits}  ──→  (wasm, stdout, stderr descriptors attached)
//!                                   ←──  Loaded {kind} | Failed
//! Start                             ──→  (the listener attached, for a function serving HTTP)
//!                                   ←──  Started | Failed
//! Kill {signal}                     ──→
//!                                   ←──  Exited {code}   (also unasked, when a command ends)
//! ```
//!
//! A frame is a big-endian `u32` length and that many bytes of JSON. Descriptors travel as
//! `SCM_RIGHTS` with the first byte of their frame; since each side reads one frame's bytes at a
//! time, the descriptors a read collects are exactly those of the frame it reads.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use tokio::net::UnixStream;
use wafer_api::{FunctionConfig, Kind};

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/wafer/node.sock";

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 4 << 20;

/// The most descriptors one frame carries.
pub const MAX_FDS: usize = 4;

/// What a shim asks of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Load a container's function. Descriptors: the wasm binary (an open file to read), then the
    /// container's stdout and stderr when [`Load::stdout`] and [`Load::stderr`] say it has them.
    Load(Box<Load>),
    /// Start it. Descriptor: for a function serving HTTP, the listening socket, already bound inside the
    /// container's network namespace.
    Start,
    /// Deliver a signal: SIGTERM or SIGINT stop an HTTP function gracefully, anything else stops a
    /// function at once.
    Kill { signal: u32 },
}

/// A container's function, as the shim found it in the container's spec and image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// The container's id.
    pub id: String,
    /// Its containerd namespace.
    pub namespace: String,
    /// The function's name (argv[0]): the wasm file's name without extension.
    pub name: String,
    /// The image's `/wafer.json`, if it has one.
    pub config: Option<FunctionConfig>,
    /// The container's environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// The container's arguments, the wasm file first.
    pub args: Vec<String>,
    /// The container's memory limit in bytes, if it has one.
    pub memory_limit: Option<u64>,
    /// The container's CPU limit in cores (quota over period), if it has one.
    pub cpu_limit: Option<f64>,
    /// Whether the container's stdout descriptor follows the wasm's.
    pub stdout: bool,
    /// Whether the container's stderr descriptor follows.
    pub stderr: bool,
}

/// What the agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// The function is compiled (or was already) and ready to start.
    Loaded {
        /// The kind it runs as: a function serving HTTP needs a listener at [`Request::Start`].
        kind: Kind,
    },
    /// It runs.
    Started,
    /// It ended with this exit code; the agent has unloaded it.
    Exited { code: u32 },
    /// The request failed; a failed load or start leaves nothing loaded.
    Failed { message: String },
}

/// One side of a connection: frames with descriptors.
pub struct Connection {
    stream: UnixStream,
}

impl Connection {
    /// Wraps a connected stream.
    pub fn new(stream: UnixStream) -> Self {
        Self { stream }
    }

    /// The stream, for its peer's credentials.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends `message` with `fds` attached.
    pub async fn send<T: Serialize>(&self, message: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        use sendfd::SendWithFd as _;
        let json = serde_json::to_vec(message).map_err(io::Error::other)?;
        let length = u32::try_from(json.len())
            .ok()
            .filter(|n| (*n as usize) <= MAX_FRAME)
            .ok_or_else(|| io::Error::other("message too large"))?;
        let mut frame = length.to_be_bytes().to_vec();
        frame.extend_from_slice(&json);
        let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let mut sent = 0;
        while sent < frame.len() {
            self.stream.writable().await?;
            let attach = if sent == 0 { &raw[..] } else { &[] };
            match self.stream.send_with_fd(&frame[sent..], attach) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next message with the descriptors that came with it, or `None` when the peer closed the
    /// connection between messages.
    pub async fn receive<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        let mut fds = Vec::new();
        let mut head = [0u8; 4];
        if !self.read_exact(&mut head, &mut fds, true).await? {
            return Ok(None);
        }
        let length = u32::from_be_bytes(head) as usize;
        if length > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a frame of {length} bytes is over the limit"),
            ));
        }
        let mut body = vec![0u8; length];
        self.read_exact(&mut body, &mut fds, false).await?;
        let message = serde_json::from_slice(&body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(Some((message, fds)))
    }

    /// Fills `buf`, collecting descriptors into `fds` (at most [`MAX_FDS`] per frame). Returns false at
    /// a clean end of stream before the first byte when `eof_ok`.
    async fn read_exact(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        eof_ok: bool,
    ) -> io::Result<bool> {
        use sendfd::RecvWithFd as _;
        let mut read = 0;
        while read < buf.len() {
            self.stream.readable().await?;
            let mut raw = [-1i32; MAX_FDS];
            match self.stream.recv_with_fd(&mut buf[read..], &mut raw) {
                Ok((n, received)) => {
                    for fd in raw.iter().take(received) {
                        // SAFETY: the kernel just installed this descriptor for this process, and
                        // nothing else owns it.
                        let fd = unsafe { OwnedFd::from_raw_fd(*fd) };
                        if fds.len() < MAX_FDS {
                            fds.push(fd);
                        }
                    }
                    if n == 0 {
                        return if read == 0 && eof_ok {
                            Ok(false)
                        } else {
                            Err(io::ErrorKind::UnexpectedEof.into())
                        };
                    }
                    read += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[tokio::test]
    async fn messages_carry_their_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let (shim, agent) = (Connection::new(a), Connection::new(b));
        let mut wasm = tempfile::tempfile().unwrap();
        wasm.write_all(b"\0asm").unwrap();
        wasm.rewind().unwrap();
        let load = Load {
            id: "c1".into(),
            args: vec!["/app.wasm".into()],
            memory_limit: Some(64 << 20),
            ..Load::default()
        };
        use std::os::fd::AsFd;
        shim.send(&Request::Load(Box::new(load.clone())), &[wasm.as_fd()])
            .await
            .unwrap();
        shim.send(&Request::Kill { signal: 15 }, &[]).await.unwrap();
        let (first, fds) = agent.receive::<Request>().await.unwrap().unwrap();
        assert_eq!(first, Request::Load(Box::new(load)));
        assert_eq!(fds.len(), 1);
        let mut bytes = Vec::new();
        std::fs::File::from(fds.into_iter().next().unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, b"\0asm");
        let (second, fds) = agent.receive::<Request>().await.unwrap().unwrap();
        assert_eq!((second, fds.len()), (Request::Kill { signal: 15 }, 0));
        drop(shim);
        assert!(
            agent.receive::<Request>().await.unwrap().is_none(),
            "closed"
        );
    }

    #[tokio::test]
    async fn an_oversized_or_garbled_frame_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        let agent = Connection::new(b);
        let mut a = a.into_std().unwrap();
        a.set_nonblocking(false).unwrap();
        a.write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(agent.receive::<Request>().await.is_err());
        let (a, b) = UnixStream::pair().unwrap();
        let agent = Connection::new(b);
        let mut a = a.into_std().unwrap();
        a.set_nonblocking(false).unwrap();
        a.write_all(&3u32.to_be_bytes()).unwrap();
        a.write_all(b"{x}").unwrap();
        assert!(agent.receive::<Request>().await.is_err());
    }
}
