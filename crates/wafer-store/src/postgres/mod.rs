//! The cluster store: one PostgreSQL database behind every store trait, shared by every node.
//!
//! - `schema.rs` creates and migrates the tables, under an advisory lock so nodes may start together;
//! - `meta.rs` is the [`crate::MetaStore`] (functions, versions, routes, and module bytes in the
//!   database, cached on each node's disk);
//! - `executions.rs` is the [`crate::ExecutionStore`] (records, logs, the queue, callbacks, ticks);
//! - `state.rs` is the [`crate::StateStore`] (key-value stores, variables and secrets);
//! - `cluster.rs` is the [`crate::ClusterStore`] (the change feed and the nodes table);
//! - `access.rs` is the [`crate::AccessStore`] (API keys and the audit log);
//! - `listen.rs` holds the connection that `LISTEN`s, turning other nodes' notifications into
//!   [`Events`].
//!
//! Every time compared is the database's (`wafer_now_ms()`), never a node's. Connections come from a
//! pool; a statement that finds the database gone fails with [`StoreError::Unavailable`], and the pool
//! connects again when it is back.
//!
//! TLS: a URL with `sslmode=require` connects over TLS and verifies the server's certificate and name
//! against the system's roots plus an optional CA file; without it (or with `sslmode=disable`) the
//! connection is plain, for a database on the same host or a private network.

mod access;
mod batch;
mod cluster;
mod executions;
mod lines;
mod listen;
mod meta;
mod queue;
mod rollups;
mod rows;
mod schema;
mod state;

use crate::blobs::DirBlobs;
use crate::cluster::Events;
use crate::{KeySource, SecretsKey, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

/// SQL for "now" in milliseconds since the Unix epoch, by the database's clock.
const NOW_MS: &str = "wafer_now_ms()";

/// SQL for "now" as RFC 3339 UTC with milliseconds.
const NOW: &str = "wafer_now_text()";

/// How long a statement waits for a connection, and a connection for the server, before the database
/// counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The connection URL (`postgres://user:password@host:port/db?sslmode=require`).
    pub url: String,
    /// A PEM file of CA certificates to trust besides the system's, for `sslmode=require`.
    pub ca_file: Option<PathBuf>,
    /// The most connections this node holds.
    pub pool_size: usize,
    /// Where the key secrets are sealed with comes from; every node of a cluster needs the same one.
    pub secrets: KeySource,
}

impl PgOptions {
    /// Options for `url` with the default pool.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_string(),
            ca_file: None,
            pool_size: 16,
            secrets: KeySource::DataDir,
        }
    }
}

/// How connections are secured.
#[derive(Clone)]
enum Tls {
    Plain,
    Verified(MakeRustlsConnect),
}

/// wafer's state in PostgreSQL, with this node's cache of module bytes on its disk.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    cache: DirBlobs,
    events: Events,
    /// The key secrets are sealed with.
    secrets: Arc<SecretsKey>,
    _listener: Arc<listen::Listener>,
    _lock: Arc<std::fs::File>,
}

impl PgStore {
    /// Connects to the database, migrates its schema (waiting for another node's migration to finish),
    /// and starts listening for other nodes' notifications. Module bytes read from the database are
    /// cached under `data_dir/modules/sha256`; the directory is this node's alone, and fails with
    /// [`StoreError::Locked`] while another process has it open.
    pub async fn connect(options: &PgOptions, data_dir: &Path) -> Result<Self, StoreError> {
        let lock = crate::lock_data_dir(data_dir)?;
        let mut config: tokio_postgres::Config = options
            .url
            .parse()
            .map_err(|e| StoreError::Database(format!("invalid database URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("wafer");
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Tls::Verified(verifier(options.ca_file.as_deref())?),
            // Without `sslmode=require` (libpq's default, `prefer`, included) the connection is plain.
            _ => {
                config.ssl_mode(SslMode::Disable);
                Tls::Plain
            }
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::Plain => Manager::from_config(config.clone(), NoTls, manager_config),
            Tls::Verified(make) => {
                Manager::from_config(config.clone(), make.clone(), manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Database(format!("cannot set up the connection pool: {e}")))?;
        let secrets = {
            let mut client = pool.get().await?;
            schema::migrate(&mut client).await?;
            let recorded = state::recorded_key(&client).await?;
            let secrets = options
                .secrets
                .load(data_dir, recorded.as_deref())
                .map_err(StoreError::SecretsKey)?;
            state::adopt_key(&mut client, &secrets).await?;
            secrets
        };
        let events = Events::default();
        let listener = listen::Listener::start(config, tls, events.clone()).await?;
        Ok(Self {
            pool,
            cache: DirBlobs::open(data_dir)?,
            events,
            secrets: Arc::new(secrets),
            _listener: Arc::new(listener),
            _lock: Arc::new(lock),
        })
    }

    /// A pooled connection.
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// A TLS connector that verifies the server against the system's roots and `ca_file`.
fn verifier(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot use is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let bad = |e: String| StoreError::Database(format!("CA file {}: {e}", path.display()));
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Database(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// A database URL fit for logs and listings: any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // A `key=value` connection string.
        return url
            .split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***",
                _ => pair,
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A duration in the milliseconds SQL adds to [`NOW_MS`].
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A count or size as the `BIGINT` the schema stores.
fn big(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A stored `BIGINT` back as a count or size.
fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_leave_the_url() {
        assert_eq!(
            redact_url("postgres://wafer:s3cr@t@db:5432/wafer?sslmode=require"),
            "postgres://wafer:***@db:5432/wafer?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://wafer@db/wafer"),
            "postgres://wafer@db/wafer"
        );
        assert_eq!(
            redact_url("host=db user=x password=y"),
            "host=db user=x password=***"
        );
    }
}
