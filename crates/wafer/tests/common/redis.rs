//! A throwaway Redis server (Debian's `redis-server`) for the tests: loopback, a free port, nothing
//! persisted, killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server on 127.0.0.1, killed on drop.
pub struct TestRedis {
    process: Child,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl TestRedis {
    /// Starts one, or `None` (with a message) when `redis-server` is missing outside CI.
    pub fn start() -> Option<Self> {
        let binary = Path::new("/usr/bin/redis-server");
        if !binary.is_file() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the Redis tests: redis-server is missing (.ci/run installs it)"
            );
            eprintln!("skipped: redis-server is not installed (apt install redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let process = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let started = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { process, address })
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
