//! The PostgreSQL schema and its migrations. Each step moves the database from one version to the next
//! in one transaction; the whole migration holds an advisory lock, so nodes starting together migrate
//! once, one after the other. A node refuses a schema newer than it knows (a newer wafer migrated it):
//! nodes of adjacent versions share a database during a rolling upgrade only while the schema stays
//! one both know.

use crate::StoreError;

/// The current schema; bumped with a step in [`STEPS`].
const SCHEMA_VERSION: i64 = 6;

/// The advisory lock migrations hold (any number the database's other users do not take).
const MIGRATION_LOCK: i64 = 0x7761_6665_7200_0001;

/// The steps, in order: `STEPS[n]` moves the schema from version `n` to `n + 1`. Names, ids and keys
/// sort bytewise (`COLLATE "C"`), as in SQLite, whatever the database's locale.
const STEPS: &[&str] = &[
    r#"
    CREATE FUNCTION wafer_now_ms() RETURNS BIGINT LANGUAGE sql VOLATILE
        AS $$ SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT $$;
    CREATE FUNCTION wafer_now_text() RETURNS TEXT LANGUAGE sql VOLATILE
        AS $$ SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

    CREATE TABLE functions (
        name TEXT COLLATE "C" PRIMARY KEY,
        live_version BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE versions (
        name TEXT COLLATE "C" NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        version BIGINT NOT NULL,
        kind TEXT NOT NULL,
        config TEXT NOT NULL,
        digest TEXT NOT NULL,
        size BIGINT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE INDEX versions_by_digest ON versions(digest);
    CREATE TABLE modules (
        digest TEXT PRIMARY KEY,
        bytes BYTEA NOT NULL
    );
    CREATE TABLE routes (
        path TEXT COLLATE "C" PRIMARY KEY,
        name TEXT COLLATE "C" NOT NULL REFERENCES functions(name) ON DELETE CASCADE
    );

    CREATE TABLE executions (
        id TEXT COLLATE "C" PRIMARY KEY,
        function TEXT NOT NULL,
        version BIGINT NOT NULL,
        trigger TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        max_attempts BIGINT NOT NULL,
        queued_at BIGINT NOT NULL,
        next_at BIGINT,
        started_at BIGINT,
        finished_at BIGINT,
        duration_us BIGINT,
        http_status BIGINT,
        exit_code BIGINT,
        error TEXT,
        output BYTEA,
        output_truncated BOOLEAN NOT NULL DEFAULT FALSE,
        instantiate_us BIGINT,
        cpu_us BIGINT,
        peak_memory BIGINT,
        fuel BIGINT,
        request TEXT,
        body BYTEA,
        callback_url TEXT,
        callback_state TEXT,
        callback_attempts BIGINT NOT NULL DEFAULT 0,
        callback_at BIGINT,
        callback_by TEXT,
        claimed_by TEXT,
        lease_until BIGINT
    );
    CREATE INDEX executions_by_function ON executions(function, id);
    CREATE INDEX executions_due ON executions(next_at, id) WHERE status = 'queued';
    CREATE INDEX executions_running ON executions(lease_until) WHERE status = 'running';
    CREATE INDEX executions_finished ON executions(finished_at);
    CREATE INDEX executions_callbacks ON executions(callback_at) WHERE callback_state = 'pending';
    CREATE TABLE logs (
        seq BIGSERIAL PRIMARY KEY,
        execution_id TEXT NOT NULL,
        function TEXT NOT NULL,
        at BIGINT NOT NULL,
        stream TEXT NOT NULL,
        line TEXT NOT NULL,
        level BIGINT NOT NULL
    );
    CREATE INDEX logs_by_function ON logs(function, seq);
    CREATE INDEX logs_by_execution ON logs(execution_id, seq);
    CREATE TABLE schedules (
        function TEXT PRIMARY KEY,
        last_tick BIGINT NOT NULL
    );

    CREATE TABLE kv (
        store TEXT NOT NULL,
        key TEXT COLLATE "C" NOT NULL,
        value BYTEA NOT NULL,
        PRIMARY KEY (store, key)
    );
    CREATE TABLE kv_stores (
        store TEXT PRIMARY KEY,
        bytes BIGINT NOT NULL
    );
    CREATE TABLE variables (
        function TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        secret BOOLEAN NOT NULL,
        PRIMARY KEY (function, name)
    );

    CREATE TABLE change_feed (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL);
    INSERT INTO change_feed (id, seq) VALUES (1, 0);
    CREATE TABLE function_changes (function TEXT PRIMARY KEY, seq BIGINT NOT NULL);
    CREATE INDEX function_changes_by_seq ON function_changes(seq);
    CREATE TABLE nodes (
        id TEXT COLLATE "C" PRIMARY KEY,
        address TEXT NOT NULL,
        version TEXT NOT NULL,
        applied BIGINT NOT NULL,
        lagging TEXT NOT NULL,
        started_at TEXT NOT NULL,
        heartbeat_ms BIGINT NOT NULL
    );
"#,
    r#"
    CREATE FUNCTION wafer_add_counts(a BIGINT[], b BIGINT[]) RETURNS BIGINT[] LANGUAGE sql IMMUTABLE
        AS $$ SELECT ARRAY(SELECT COALESCE(x, 0) + COALESCE(y, 0)
                           FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) ORDER BY i) $$;
    CREATE TABLE rollups (
        function TEXT COLLATE "C" NOT NULL,
        minute BIGINT NOT NULL,
        succeeded BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        durations BIGINT[] NOT NULL,
        PRIMARY KEY (function, minute)
    );
    CREATE INDEX rollups_by_minute ON rollups(minute);
"#,
    // Aliases; an execution's qualifier, idempotency key, request digest, whether its request is kept
    // for a retry once it ends dead or expired, destination hops and the destination delivery it owes.
    r#"
    ALTER TABLE functions ADD COLUMN aliases TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE executions ADD COLUMN qualifier TEXT;
    ALTER TABLE executions ADD COLUMN idempotency_key TEXT;
    ALTER TABLE executions ADD COLUMN request_digest TEXT;
    ALTER TABLE executions ADD COLUMN replayable BOOLEAN NOT NULL DEFAULT FALSE;
    ALTER TABLE executions ADD COLUMN hops BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN destination_state TEXT;
    ALTER TABLE executions ADD COLUMN destination_attempts BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN destination_at BIGINT;
    ALTER TABLE executions ADD COLUMN destination_by TEXT;
    CREATE UNIQUE INDEX executions_by_key ON executions(function, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX executions_destinations ON executions(destination_at)
        WHERE destination_state = 'pending';
    CREATE INDEX executions_by_status ON executions(function, status, id);
    UPDATE executions SET replayable = TRUE WHERE status IN ('queued', 'running');
"#,
    // A version's read-only files: the digest of their bundle (a tar kept in `modules`), or none.
    r#"
    ALTER TABLE versions ADD COLUMN files TEXT;
    CREATE INDEX versions_by_files ON versions(files) WHERE files IS NOT NULL;
"#,
    // Settings the store keeps about itself: the id of the key its secrets are sealed with.
    r#"
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"#,
    // API keys (the hash of each secret and a sealed copy) and the audit log, as in SQLite's step 12.
    r#"
    CREATE TABLE api_keys (
        id TEXT COLLATE "C" PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL,
        secret TEXT NOT NULL,
        scopes TEXT NOT NULL,
        rate_limit BIGINT,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT,
        revoked_ms BIGINT,
        created_by TEXT NOT NULL
    );
    CREATE TABLE audit (
        seq BIGSERIAL PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT,
        status INTEGER NOT NULL,
        client TEXT
    );
    CREATE INDEX audit_by_time ON audit(at_ms);
"#,
];

/// Creates or upgrades the schema, holding the migration lock.
pub(super) async fn migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let migrated = steps(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    migrated?;
    unlocked?;
    Ok(())
}

async fn steps(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS wafer_schema (version BIGINT NOT NULL)")
        .await?;
    let version: i64 = client
        .query_opt("SELECT version FROM wafer_schema", &[])
        .await?
        .map(|row| row.get(0))
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    for (from, step) in STEPS.iter().enumerate().skip(version as usize) {
        let to = from as i64 + 1;
        let tx = client.transaction().await?;
        tx.batch_execute(step).await?;
        tx.execute("DELETE FROM wafer_schema", &[]).await?;
        tx.execute("INSERT INTO wafer_schema (version) VALUES ($1)", &[&to])
            .await?;
        tx.commit().await?;
        tracing::info!(schema = to, "database migrated");
    }
    Ok(())
}
