//! Sockets inside a container's network namespace, made from wafer's side of it.
//!
//! A container's network namespace holds only its own loopback, so nothing on the host can reach it —
//! except a process that joins the namespace. Linux lets one thread of a process join another network
//! namespace (`setns(CLONE_NEWNET)`), and a socket keeps the namespace it was made in after its thread
//! leaves. A [`Namespace`] is such a thread, kept for one container: wafer connects to the container's
//! port through it (to proxy requests to a container serving HTTP) and binds listeners on the
//! container's loopback through it (an outbound proxy only that container can reach), while the
//! container itself gets no route anywhere. The containerd shim uses the same thread to bind a pod's
//! listener inside the pod's namespace, named by its path in the container's runtime spec.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

/// What the namespace's thread is asked to do.
enum Request {
    Connect(u16, Duration, oneshot::Sender<io::Result<TcpStream>>),
    Bind(SocketAddr, oneshot::Sender<io::Result<TcpListener>>),
}

/// The namespace a [`Namespace`] thread moves to.
enum Target {
    /// An existing one: a `/proc/PID/ns/net` or a bind-mounted namespace file.
    Existing(File),
    /// A new, empty one of its own.
    New,
}

/// A thread inside the network namespace of one container; it ends when this is dropped.
pub struct Namespace {
    requests: mpsc::Sender<Request>,
}

impl Namespace {
    /// Joins the network namespace of process `pid` (a container's first process).
    pub async fn of(pid: u32) -> io::Result<Self> {
        Self::at(Path::new(&format!("/proc/{pid}/ns/net"))).await
    }

    /// Joins the network namespace at `path` (`/proc/PID/ns/net`, or a file such as
    /// `/var/run/netns/NAME` that keeps one).
    pub async fn at(path: &Path) -> io::Result<Self> {
        Self::enter(Target::Existing(File::open(path)?)).await
    }

    /// A new network namespace with nothing in it but a loopback that is down: what a container
    /// whose spec asks for a network namespace without naming one gets.
    pub async fn new_empty() -> io::Result<Self> {
        Self::enter(Target::New).await
    }

    async fn enter(target: Target) -> io::Result<Self> {
        let (requests, inbox) = mpsc::channel::<Request>();
        let (joined, ready) = oneshot::channel();
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                let entered = match &target {
                    // SAFETY: `namespace` is an open descriptor of a network namespace; setns changes
                    // only this thread's namespace.
                    Target::Existing(namespace) => unsafe {
                        libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET)
                    },
                    // SAFETY: unshare with CLONE_NEWNET changes only this thread's network namespace.
                    Target::New => unsafe { libc::unshare(libc::CLONE_NEWNET) },
                };
                let entered = if entered == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                };
                let failed = entered.is_err();
                let _ = joined.send(entered);
                if failed {
                    return;
                }
                drop(target);
                for request in inbox {
                    match request {
                        Request::Connect(port, timeout, reply) => {
                            let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                            let _ = reply.send(TcpStream::connect_timeout(&address, timeout));
                        }
                        Request::Bind(address, reply) => {
                            let _ = reply.send(TcpListener::bind(address));
                        }
                    }
                }
            })?;
        ready
            .await
            .map_err(|_| io::Error::other("the namespace thread ended"))??;
        Ok(Self { requests })
    }

    /// A connection to `127.0.0.1:port` inside the namespace.
    pub async fn connect(&self, port: u16, timeout: Duration) -> io::Result<tokio::net::TcpStream> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Connect(port, timeout, reply))?;
        let stream = answer
            .await
            .map_err(|_| io::Error::other("the namespace thread ended"))??;
        stream.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(stream)
    }

    /// A listener on `127.0.0.1:port` inside the namespace (port 0 picks one).
    pub async fn bind(&self, port: u16) -> io::Result<tokio::net::TcpListener> {
        let listener = self
            .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await?;
        listener.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listener)
    }

    /// A listener on `address` inside the namespace, blocking, as the kernel made it: to use here or
    /// to hand to another process.
    pub async fn listen(&self, address: SocketAddr) -> io::Result<TcpListener> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Bind(address, reply))?;
        answer
            .await
            .map_err(|_| io::Error::other("the namespace thread ended"))?
    }

    fn send(&self, request: Request) -> io::Result<()> {
        self.requests
            .send(request)
            .map_err(|_| io::Error::other("the namespace thread ended"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A process alone in a new network namespace, killed when dropped.
    struct Alone(std::process::Child);

    impl Drop for Alone {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn alone() -> Option<Alone> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var_os("CI").is_none(), "CI runs as root");
            eprintln!("skipping: joining a network namespace needs root");
            return None;
        }
        let child = std::process::Command::new("unshare")
            .args(["--net", "sleep", "30"])
            .spawn()
            .expect("unshare (util-linux)");
        // unshare execs sleep once the namespace is made.
        std::thread::sleep(Duration::from_millis(200));
        Some(Alone(child))
    }

    #[tokio::test]
    async fn a_listener_bound_inside_is_reached_from_inside_and_not_from_the_host() {
        let Some(process) = alone() else {
            return;
        };
        let namespace = Namespace::of(process.0.id()).await.expect("join");
        // Its loopback is down until a container's runtime brings it up: bring it up here.
        let up = std::process::Command::new("nsenter")
            .args(["--net=/proc/".to_string() + &process.0.id().to_string() + "/ns/net"])
            .args(["ip", "link", "set", "lo", "up"])
            .status()
            .expect("nsenter");
        assert!(up.success());
        let listener = namespace.bind(0).await.expect("bind inside");
        let port = listener.local_addr().expect("addr").port();
        let accepted = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            stream.write_all(b"inside").await.expect("write");
        });
        let mut stream = namespace
            .connect(port, Duration::from_secs(2))
            .await
            .expect("connect inside");
        let mut got = String::new();
        stream.read_to_string(&mut got).await.expect("read");
        assert_eq!(got, "inside");
        accepted.await.expect("accepted");
        // The host's loopback is another one: nothing listens on that port there.
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
