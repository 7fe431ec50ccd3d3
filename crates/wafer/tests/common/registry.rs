//! A throwaway OCI registry (Debian's `docker-registry`) for the tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A registry on 127.0.0.1 with its storage in a temporary directory, killed on drop.
pub struct Registry {
    process: Child,
    _dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub address: String,
}

impl Registry {
    /// Starts one, or `None` (with a message) when `docker-registry` is missing outside CI.
    pub fn start() -> Option<Self> {
        let binary = Path::new("/usr/bin/docker-registry");
        if !binary.is_file() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the registry test: docker-registry is missing"
            );
            eprintln!("skipping the registry test: apt install docker-registry to run it");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {address}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).expect("config");
        let process = Command::new(binary)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let started = Instant::now();
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self {
            process,
            _dir: dir,
            address,
        })
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
