//! A throwaway PostgreSQL server for tests: `initdb` into a temporary directory, `pg_ctl start` on a free
//! loopback port (as user `postgres` when running as root, since PostgreSQL refuses to run as root), and
//! stopped when the test process ends — a watchdog process waits for the end of its standard input,
//! which closes when this process exits however it exits, then stops the server.
//!
//! [`TestPostgres::start`] returns `None` with a printed reason when PostgreSQL is not installed, so
//! the tests that need it skip locally; under `CI=true` it panics instead, so CI always runs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A running test server.
pub struct TestPostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// Server settings beyond the defaults (`-c name=value …`).
    settings: String,
    _watchdog: Child,
}

impl TestPostgres {
    /// Starts a server of its own; `None` (with the reason printed) when PostgreSQL is missing outside
    /// CI.
    pub fn start() -> Option<Self> {
        Self::start_with(false)
    }

    /// Starts a server of its own that speaks TLS with a certificate for `127.0.0.1` signed by a CA of
    /// its own, whose PEM file it returns beside it.
    pub fn start_tls() -> Option<(Self, PathBuf)> {
        let server = Self::start_with(true)?;
        let ca = server.dir.path().join("ca.pem");
        Some((server, ca))
    }

    fn start_with(tls: bool) -> Option<Self> {
        let Some(bin) = binaries() else {
            let reason = "PostgreSQL (initdb, pg_ctl) is not installed";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{reason}, and CI must run these tests: .ci/run installs it"
            );
            eprintln!("skipped: {reason}");
            return None;
        };
        Some(Self::launch(bin, tls))
    }

    /// The server every test of this process shares, started on first use.
    pub fn shared() -> Option<&'static TestPostgres> {
        static SHARED: OnceLock<Option<TestPostgres>> = OnceLock::new();
        SHARED.get_or_init(Self::start).as_ref()
    }

    fn launch(bin: PathBuf, tls: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("wafer-pg-")
            .tempdir()
            .expect("a temp dir for PostgreSQL");
        let data = dir.path().join("data");
        let settings = if tls {
            certificates(dir.path());
            format!(
                "-c ssl=on -c ssl_cert_file={0}/server.pem -c ssl_key_file={0}/server.key",
                dir.path().display()
            )
        } else {
            String::new()
        };
        if as_root() {
            run(Command::new("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(dir.path()));
        }
        run(as_postgres(&bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--locale=C",
            ])
            .arg("-D")
            .arg(&data));
        let port = free_port();
        let server = Self {
            _watchdog: watchdog(&bin, &data),
            dir,
            port,
            bin,
            settings,
        };
        server.pg_ctl("start");
        server
    }

    /// Runs `pg_ctl ACTION` (`start`, `stop`, `restart`) on the server, waiting for it to finish.
    pub fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=300 {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        run(as_postgres(&self.bin.join("pg_ctl"))
            .args([action, "-w", "-m", "fast", "-l"])
            .arg(self.dir.path().join("log"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-o", &options]));
    }

    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a new, empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let (client, connection) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
                .await
                .expect("connect to the test server");
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = connection.await;
        self.url(&name)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // The watchdog stops the server once its input closes; wait for it, so the directory goes after.
        drop(self._watchdog.stdin.take());
        let _ = self._watchdog.wait();
    }
}

/// Writes, in `dir`, a CA (`ca.pem`) and a server certificate for `127.0.0.1` it signed (`server.pem`,
/// `server.key`), with the `openssl` command.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=wafer test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write san.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("key permissions");
}

/// Where `initdb` and `pg_ctl` are: on `PATH`, or in the newest of Debian's `/usr/lib/postgresql/*/bin`.
fn binaries() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.extend(debian.into_iter().rev());
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program` run as user `postgres` when this process is root.
fn as_postgres(program: &Path) -> Command {
    if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A process that stops the server in `data` once this process's end closes its standard input.
fn watchdog(bin: &Path, data: &Path) -> Child {
    let stop = format!(
        "cat >/dev/null; {} stop -m immediate -D {} >/dev/null 2>&1; rm -rf {}",
        bin.join("pg_ctl").display(),
        data.display(),
        data.parent().unwrap_or(data).display()
    );
    let mut command = if as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "sh", "-c", &stop]);
        command
    } else {
        let mut command = Command::new("sh");
        command.args(["-c", &stop]);
        command
    };
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start the PostgreSQL watchdog")
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a PostgreSQL tool");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
