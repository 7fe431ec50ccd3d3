//! Writing execution rows on SQLite: a new execution (queued, or a sync call's that already ran, in one
//! statement) and an attempt's end, with the attempt's log lines. The rest of [`ExecutionStore`] on
//! SQLite is in `executions.rs`.
//!
//! [`ExecutionStore`]: crate::executions::ExecutionStore

use super::rows::i64_of;
use super::{millis, NOW_MS};
use crate::executions::{Attempt, Claim, NewExecution};
use crate::sql::{new_row, owed, owed_values};
use crate::StoreError;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params, ToSql};
use wafer_api::ExecutionStatus;

/// Stores `new` (with its attempt, for a sync execution) under idempotency `key` (with its request's
/// digest), if any; `false` when its id (or its key) is stored already.
pub(super) fn insert(
    tx: &rusqlite::Transaction<'_>,
    new: &NewExecution,
    key: Option<&(String, String)>,
) -> Result<bool, StoreError> {
    let Some(attempt) = &new.attempt else {
        return insert_queued(tx, new, key, None);
    };
    let inserted = insert_ended(tx, new, attempt, key)?;
    if inserted {
        write_logs(tx, &new.id, Some(&new.function), attempt)?;
    }
    Ok(inserted)
}

/// Stores an execution that has not run yet (async, cron): queued and due now, or, with `claim`,
/// already claimed by its node, running its first attempt under the claim's lease.
fn insert_queued(
    tx: &rusqlite::Transaction<'_>,
    new: &NewExecution,
    key: Option<&(String, String)>,
    claim: Option<&Claim>,
) -> Result<bool, StoreError> {
    let (request, ..) = new_row(new)?;
    // ?14 is the claiming node, NULL for a queued row.
    let inserted =
        tx.prepare_cached(&format!(
            "INSERT INTO executions (id, function, version, trigger, status, attempts, max_attempts,
                 queued_at, next_at, started_at, claimed_by, lease_until, request, body,
                 callback_url, qualifier, hops, replayable, idempotency_key, request_digest)
             VALUES (?1, ?2, ?3, ?4, CASE WHEN ?14 IS NULL THEN 'queued' ELSE 'running' END,
                 CASE WHEN ?14 IS NULL THEN 0 ELSE 1 END, ?5, ?6,
                 CASE WHEN ?14 IS NULL THEN {NOW_MS} END, CASE WHEN ?14 IS NOT NULL THEN {NOW_MS} END,
                 ?14, CASE WHEN ?14 IS NOT NULL THEN {NOW_MS} + ?15 END, ?7, ?8, ?9, ?10, ?11, 1,
                 ?12, ?13)
             ON CONFLICT DO NOTHING"
        ))?
        .execute(params![
            new.id,
            new.function,
            new.version,
            new.trigger.as_str(),
            new.max_attempts,
            new.queued_at,
            request,
            new.body,
            new.callback_url,
            new.qualifier,
            new.hops,
            key.map(|(key, _)| key),
            key.map(|(_, digest)| digest),
            claim.map(|claim| claim.node.as_str()),
            claim.map(|claim| millis(claim.lease)),
        ])? > 0;
    Ok(inserted)
}

/// Stores queued execution `new` already claimed by `claim`'s node, running its first attempt under
/// its lease; `false` when its id is stored already.
pub(super) fn insert_claimed(
    tx: &rusqlite::Transaction<'_>,
    new: &NewExecution,
    claim: &Claim,
) -> Result<bool, StoreError> {
    insert_queued(tx, new, None, Some(claim))
}

/// The columns of an attempt's result that [`attempt_values`] gives, in its order.
const ATTEMPT_COLUMNS: &str = "status, version, started_at, finished_at, duration_us, http_status, \
     exit_code, error, output, output_truncated, instantiate_us, cpu_us, peak_memory, fuel, next_at";

/// The values of [`ATTEMPT_COLUMNS`] for `attempt`, `next_at` as the milliseconds from now it is due
/// (the statement adds the database's now).
fn attempt_values(attempt: &Attempt) -> [ToSqlOutput<'_>; 15] {
    let status = attempt.status.unwrap_or(ExecutionStatus::Failed);
    let usage = attempt.usage;
    let int = |value: Option<i64>| ToSqlOutput::Owned(value.map_or(Value::Null, Value::Integer));
    [
        ToSqlOutput::Borrowed(ValueRef::Text(status.as_str().as_bytes())),
        int(Some(i64::from(attempt.version))),
        int(Some(attempt.started_at)),
        int(Some(attempt.finished_at)),
        int(Some(i64_of(attempt.duration_us))),
        int(attempt.http_status.map(i64::from)),
        int(attempt.exit_code.map(i64::from)),
        match &attempt.error {
            Some(error) => ToSqlOutput::Borrowed(ValueRef::Text(error.as_bytes())),
            None => ToSqlOutput::Owned(Value::Null),
        },
        match &attempt.output {
            Some(output) => ToSqlOutput::Borrowed(ValueRef::Blob(output)),
            None => ToSqlOutput::Owned(Value::Null),
        },
        int(Some(i64::from(attempt.output_truncated))),
        int(usage.map(|u| i64_of(u.instantiate_us))),
        int(usage.map(|u| i64_of(u.cpu_us))),
        int(usage.map(|u| i64_of(u.peak_memory_bytes))),
        int(usage.and_then(|u| u.fuel_consumed).map(i64_of)),
        int(attempt.retry_in.map(millis)),
    ]
}

/// `?first, ?first+1, …` for the values of [`ATTEMPT_COLUMNS`], `next_at` made a time.
fn attempt_placeholders(first: usize) -> String {
    let count = ATTEMPT_COLUMNS.split(',').count();
    let mut placeholders: Vec<String> = (first..first + count).map(|n| format!("?{n}")).collect();
    if let Some(next_at) = placeholders.last_mut() {
        *next_at = format!("CASE WHEN {next_at} IS NOT NULL THEN {NOW_MS} + {next_at} END");
    }
    placeholders.join(", ")
}

/// Stores an execution that has already run (a sync call) in one statement, as [`insert_queued`] and
/// then [`record`] would leave it: one write of the row and its indexes rather than two.
fn insert_ended(
    tx: &rusqlite::Transaction<'_>,
    new: &NewExecution,
    attempt: &Attempt,
    key: Option<&(String, String)>,
) -> Result<bool, StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        // ?1–?10 the execution, ?11–?25 the attempt, ?26 whether it owes its destination, ?27 and
        // ?28 its idempotency key and the digest of its request.
        let (columns, values): (Vec<_>, Vec<_>) =
            owed_values(NOW_MS, "?11", "?26", "?7", |column| match column {
                "request" => "?5".into(),
                "body" => "?6".into(),
                _ => "NULL".into(),
            })
            .into_iter()
            .unzip();
        format!(
            "INSERT INTO executions (id, function, trigger, attempts, max_attempts, callback_url,
                 qualifier, hops, queued_at, idempotency_key, request_digest, {ATTEMPT_COLUMNS},
                 {owed_columns})
             VALUES (?1, ?2, ?3, 1, ?4, ?7, ?8, ?9, ?10, ?27, ?28, {attempt}, {owed_values})
             ON CONFLICT DO NOTHING",
            attempt = attempt_placeholders(11),
            owed_columns = columns.join(", "),
            owed_values = values.join(", "),
        )
    });
    let (request, _, _, _) = new_row(new)?;
    let execution: [&dyn ToSql; 10] = [
        &new.id,
        &new.function,
        &new.trigger.as_str(),
        &new.max_attempts,
        &request,
        &new.body,
        &new.callback_url,
        &new.qualifier,
        &new.hops,
        &new.queued_at,
    ];
    let values = attempt_values(attempt);
    let owes: [&dyn ToSql; 3] = [
        &attempt.destination,
        &key.map(|(key, _)| key),
        &key.map(|(_, digest)| digest),
    ];
    let params = execution
        .into_iter()
        .chain(values.iter().map(|v| v as &dyn ToSql))
        .chain(owes);
    Ok(tx
        .prepare_cached(&SQL)?
        .execute(rusqlite::params_from_iter(params))?
        > 0)
}

/// Writes an attempt's result and logs onto its row. With `claim` (node, attempt number), only while the
/// row is still running that attempt under that node's claim; returns whether the row was written.
pub(super) fn record(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    attempt: &Attempt,
    claim: Option<(&str, u32)>,
) -> Result<bool, StoreError> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        // ?1 the id, ?2–?16 the attempt, ?17 and ?18 the claim, ?19 whether it owes its destination.
        format!(
            "UPDATE executions SET ({ATTEMPT_COLUMNS}) = ({attempt}), lease_until = NULL, {owed}
             WHERE id = ?1
               AND (?17 IS NULL OR (status = 'running' AND attempts = ?17 AND claimed_by = ?18))",
            attempt = attempt_placeholders(2),
            owed = owed(NOW_MS, "?2", "?19"),
        )
    });
    let values = attempt_values(attempt);
    let claim_attempt = claim.map(|(_, attempt)| attempt);
    let claim_node = claim.map(|(node, _)| node);
    let params = std::iter::once(&id as &dyn ToSql)
        .chain(values.iter().map(|v| v as &dyn ToSql))
        .chain([
            &claim_attempt as &dyn ToSql,
            &claim_node,
            &attempt.destination,
        ]);
    let written = tx
        .prepare_cached(&SQL)?
        .execute(rusqlite::params_from_iter(params))?;
    if written == 0 {
        return Ok(false);
    }
    write_logs(tx, id, None, attempt)?;
    Ok(true)
}

/// Writes an attempt's log lines for execution `id` of `function` (read from its row when `None`).
fn write_logs(
    tx: &rusqlite::Transaction<'_>,
    id: &str,
    function: Option<&str>,
    attempt: &Attempt,
) -> Result<(), StoreError> {
    if attempt.logs.is_empty() {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO logs (execution_id, function, at, stream, line, level)
         SELECT ?1, coalesce(?6, (SELECT function FROM executions WHERE id = ?1)), ?2, ?3, ?4, ?5",
    )?;
    for log in &attempt.logs {
        stmt.execute(params![
            id,
            attempt.finished_at,
            log.stream,
            log.line,
            log.level.rank(),
            function,
        ])?;
    }
    Ok(())
}
