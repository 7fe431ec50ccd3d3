//! The SQLite schema and its migrations: each step moves the database from one `user_version` to the
//! next in one transaction, so a database written by any earlier wafer opens with this one (the upgrade
//! fixture under `crates/wafer/tests/fixtures/upgrade` checks it).

use crate::StoreError;
use rusqlite::Connection;

/// The current schema; bumped with a migration step in [`migrate`].
const SCHEMA_VERSION: i64 = 12;

/// Creates or upgrades the schema.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE functions (
                 name TEXT PRIMARY KEY,
                 live_version INTEGER NOT NULL,
                 created_at TEXT NOT NULL,
                 updated_at TEXT NOT NULL
             );
             CREATE TABLE versions (
                 name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
                 version INTEGER NOT NULL,
                 kind TEXT NOT NULL,
                 config TEXT NOT NULL,
                 digest TEXT NOT NULL,
                 size INTEGER NOT NULL,
                 created_at TEXT NOT NULL,
                 PRIMARY KEY (name, version)
             );
             CREATE INDEX versions_by_digest ON versions(digest);
             CREATE TABLE routes (
                 path TEXT PRIMARY KEY,
                 name TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE executions (
                 id TEXT PRIMARY KEY,
                 function TEXT NOT NULL,
                 version INTEGER NOT NULL,
                 trigger TEXT NOT NULL,
                 status TEXT NOT NULL,
                 attempts INTEGER NOT NULL,
                 max_attempts INTEGER NOT NULL,
                 queued_at INTEGER NOT NULL,
                 next_at INTEGER,
                 started_at INTEGER,
                 finished_at INTEGER,
                 duration_us INTEGER,
                 http_status INTEGER,
                 exit_code INTEGER,
                 error TEXT,
                 output BLOB,
                 output_truncated INTEGER NOT NULL DEFAULT 0,
                 instantiate_us INTEGER,
                 cpu_us INTEGER,
                 peak_memory INTEGER,
                 fuel INTEGER,
                 request TEXT,
                 body BLOB,
                 callback_url TEXT,
                 callback_state TEXT,
                 callback_attempts INTEGER NOT NULL DEFAULT 0,
                 callback_at INTEGER
             );
             CREATE INDEX executions_by_function ON executions(function, id);
             CREATE INDEX executions_queue ON executions(status, next_at);
             CREATE INDEX executions_finished ON executions(finished_at);
             CREATE INDEX executions_callbacks ON executions(callback_state, callback_at);
             CREATE TABLE logs (
                 seq INTEGER PRIMARY KEY AUTOINCREMENT,
                 execution_id TEXT NOT NULL,
                 function TEXT NOT NULL,
                 at INTEGER NOT NULL,
                 stream TEXT NOT NULL,
                 line TEXT NOT NULL
             );
             CREATE INDEX logs_by_function ON logs(function, seq);
             CREATE INDEX logs_by_execution ON logs(execution_id, seq);
             CREATE TABLE schedules (
                 function TEXT PRIMARY KEY,
                 last_tick INTEGER NOT NULL
             );
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    if version < 3 {
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE kv (
                 store TEXT NOT NULL,
                 key TEXT NOT NULL,
                 value BLOB NOT NULL,
                 PRIMARY KEY (store, key)
             ) WITHOUT ROWID;
             CREATE TABLE kv_stores (
                 store TEXT PRIMARY KEY,
                 bytes INTEGER NOT NULL
             );
             CREATE TABLE variables (
                 function TEXT NOT NULL,
                 name TEXT NOT NULL,
                 value TEXT NOT NULL,
                 secret INTEGER NOT NULL,
                 PRIMARY KEY (function, name)
             ) WITHOUT ROWID;
             PRAGMA user_version = 3;
             COMMIT;",
        )?;
    }
    if version < 4 {
        // A log line's level as its rank (LogLevel::rank): 2 is info, which every earlier line was.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE logs ADD COLUMN level INTEGER NOT NULL DEFAULT 2;
             PRAGMA user_version = 4;
             COMMIT;",
        )?;
    }
    if version < 5 {
        // A claim names its node and holds a lease (ms since the epoch, in the store's clock). Rows a
        // crash left running before claims named their node have neither; a node's start requeues them.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE executions ADD COLUMN claimed_by TEXT;
             ALTER TABLE executions ADD COLUMN lease_until INTEGER;
             PRAGMA user_version = 5;
             COMMIT;",
        )?;
    }
    if version < 6 {
        // The change feed (see crate::cluster), the nodes that beat, and callbacks claimed by a node.
        conn.execute_batch(
            "BEGIN;
             ALTER TABLE executions ADD COLUMN callback_by TEXT;
             CREATE TABLE change_feed (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
             INSERT INTO change_feed (id, seq) VALUES (1, 0);
             CREATE TABLE function_changes (function TEXT PRIMARY KEY, seq INTEGER NOT NULL);
             CREATE INDEX function_changes_by_seq ON function_changes(seq);
             CREATE TABLE nodes (
                 id TEXT PRIMARY KEY,
                 address TEXT NOT NULL,
                 version TEXT NOT NULL,
                 applied INTEGER NOT NULL,
                 lagging TEXT NOT NULL,
                 started_at TEXT NOT NULL,
                 heartbeat_ms INTEGER NOT NULL
             );
             PRAGMA user_version = 6;
             COMMIT;",
        )?;
    }
    if version < 7 {
        // Per-minute rollups of finished attempts (wafer_api::rollup): durations is a JSON array.
        conn.execute_batch(
            "BEGIN;
             CREATE TABLE rollups (
                 function TEXT NOT NULL,
                 minute INTEGER NOT NULL,
                 succeeded INTEGER NOT NULL,
                 failed INTEGER NOT NULL,
                 durations TEXT NOT NULL,
                 PRIMARY KEY (function, minute)
             ) WITHOUT ROWID;
             CREATE INDEX rollups_by_minute ON rollups(minute);
             PRAGMA user_version = 7;
             COMMIT;",
        )?;
    }
    if version < 8 {
        conn.execute_batch(&format!("BEGIN; {STEP_8} PRAGMA user_version = 8; COMMIT;"))?;
    }
    if version < 9 {
        conn.execute_batch(&format!("BEGIN; {STEP_9} PRAGMA user_version = 9; COMMIT;"))?;
    }
    if version < 10 {
        conn.execute_batch(&format!(
            "BEGIN; {STEP_10} PRAGMA user_version = 10; COMMIT;"
        ))?;
    }
    if version < 11 {
        conn.execute_batch(&format!(
            "BEGIN; {STEP_11} PRAGMA user_version = 11; COMMIT;"
        ))?;
    }
    if version < 12 {
        conn.execute_batch(&format!(
            "BEGIN; {STEP_12} PRAGMA user_version = 12; COMMIT;"
        ))?;
    }
    Ok(())
}

/// API keys (the hash of each secret and a sealed copy; scopes as a JSON array; times in ms since the
/// epoch) and the audit log (`crate::access`). PostgreSQL's sixth step is the same.
const STEP_12: &str = "
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL,
        secret TEXT NOT NULL,
        scopes TEXT NOT NULL,
        rate_limit INTEGER,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER,
        revoked_ms INTEGER,
        created_by TEXT NOT NULL
    );
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        status INTEGER NOT NULL,
        client TEXT
    );
    CREATE INDEX audit_by_time ON audit(at_ms);
";

/// Settings the store keeps about itself: the id of the key its secrets are sealed with. PostgreSQL's
/// fifth step is the same.
const STEP_11: &str = "
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
";

/// The queue's, the leases' and the deliveries' indexes hold only the rows they look for (queued,
/// running, a delivery pending), as PostgreSQL's always have; `executions_finished` served no query. A
/// finished execution (every sync call's record) is then written to four B-trees rather than eight.
/// Counting queued or running rows names its index (`INDEXED BY`): the planner would count them by
/// scanning `executions_by_status` whole. PostgreSQL needs no step.
const STEP_10: &str = "
    DROP INDEX executions_queue;
    DROP INDEX executions_finished;
    DROP INDEX executions_callbacks;
    DROP INDEX executions_destinations;
    CREATE INDEX executions_due ON executions(next_at, id) WHERE status = 'queued';
    CREATE INDEX executions_running ON executions(lease_until) WHERE status = 'running';
    CREATE INDEX executions_callbacks ON executions(callback_at) WHERE callback_state = 'pending';
    CREATE INDEX executions_destinations ON executions(destination_at)
        WHERE destination_state = 'pending';
";

/// A version's read-only files: the digest of their bundle (a tar stored beside the modules), or none.
/// PostgreSQL's fourth step is the same.
const STEP_9: &str = "
    ALTER TABLE versions ADD COLUMN files TEXT;
    CREATE INDEX versions_by_files ON versions(files) WHERE files IS NOT NULL;
";

/// Aliases (JSON, `live` among them); an execution's qualifier, idempotency key and the digest of its
/// request, whether its request is kept for a retry after it ends `dead` or `expired` (rows from
/// before are not), how many destinations led to it, and the destination delivery it owes, claimed
/// like a callback. PostgreSQL's third step is the same.
const STEP_8: &str = "
    ALTER TABLE functions ADD COLUMN aliases TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE executions ADD COLUMN qualifier TEXT;
    ALTER TABLE executions ADD COLUMN idempotency_key TEXT;
    ALTER TABLE executions ADD COLUMN request_digest TEXT;
    ALTER TABLE executions ADD COLUMN replayable INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN hops INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN destination_state TEXT;
    ALTER TABLE executions ADD COLUMN destination_attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN destination_at INTEGER;
    ALTER TABLE executions ADD COLUMN destination_by TEXT;
    CREATE UNIQUE INDEX executions_by_key ON executions(function, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX executions_destinations ON executions(destination_state, destination_at);
    CREATE INDEX executions_by_status ON executions(function, status, id);
    UPDATE executions SET replayable = 1 WHERE status IN ('queued', 'running');
";
