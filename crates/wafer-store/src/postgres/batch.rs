//! A journal batch's executions written one statement per kind rather than one per row: the executions
//! it adds in one `INSERT … SELECT FROM unnest(…)`, the attempts it ends in one `UPDATE … FROM
//! unnest(…)`. PostgreSQL spends about as much on a statement's messages, snapshot and executor start as
//! on the row it writes, so under load a statement per row doubled the database's work.

use super::{big, millis, NOW_MS};
use crate::executions::{Attempt, NewExecution};
use crate::sql::{new_row, owed};
use crate::StoreError;
use deadpool_postgres::Transaction;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use tokio_postgres::types::Type;
use wafer_api::ExecutionStatus;

/// New executions, column by column, inserted in the order added.
#[derive(Default)]
pub(super) struct NewRows<'a> {
    ids: Vec<&'a str>,
    functions: Vec<&'a str>,
    versions: Vec<i64>,
    triggers: Vec<&'static str>,
    statuses: Vec<&'static str>,
    attempts: Vec<i64>,
    max_attempts: Vec<i64>,
    queued_at: Vec<i64>,
    queued: Vec<bool>,
    requests: Vec<Option<String>>,
    bodies: Vec<&'a [u8]>,
    callback_urls: Vec<Option<&'a str>>,
    qualifiers: Vec<Option<&'a str>>,
    hops: Vec<i64>,
}

impl<'a> NewRows<'a> {
    /// Adds `new`: queued and due now, or, with its attempt, as it was before that attempt ended (the
    /// attempt is then written by [`Ends`]).
    pub(super) fn add(&mut self, new: &'a NewExecution) -> Result<(), StoreError> {
        let (request, status, attempts, queued) = new_row(new)?;
        self.ids.push(&new.id);
        self.functions.push(&new.function);
        self.versions.push(i64::from(new.version));
        self.triggers.push(new.trigger.as_str());
        self.statuses.push(status.as_str());
        self.attempts.push(i64::from(attempts));
        self.max_attempts.push(i64::from(new.max_attempts));
        self.queued_at.push(new.queued_at);
        self.queued.push(queued);
        self.requests.push(request);
        self.bodies.push(&new.body);
        self.callback_urls.push(new.callback_url.as_deref());
        self.qualifiers.push(new.qualifier.as_deref());
        self.hops.push(i64::from(new.hops));
        Ok(())
    }

    /// Inserts the rows whose ids are not stored yet; returns the ids inserted.
    pub(super) async fn insert(&self, tx: &Transaction<'_>) -> Result<HashSet<String>, StoreError> {
        if self.ids.is_empty() {
            return Ok(HashSet::new());
        }
        let statement = tx
            .prepare_cached(&format!(
                "INSERT INTO executions (id, function, version, trigger, status, attempts,
                     max_attempts, queued_at, next_at, request, body, callback_url, qualifier, hops,
                     replayable)
                 SELECT id, function, version, trigger, status, attempts, max_attempts, queued_at,
                     CASE WHEN queued THEN {NOW_MS} END, request, body, callback_url, qualifier, hops,
                     queued
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[],
                          $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::BOOLEAN[], $10::TEXT[],
                          $11::BYTEA[], $12::TEXT[], $13::TEXT[], $14::BIGINT[])
                      WITH ORDINALITY AS r(id, function, version, trigger, status, attempts,
                          max_attempts, queued_at, queued, request, body, callback_url, qualifier,
                          hops, n)
                 ORDER BY n
                 ON CONFLICT DO NOTHING
                 RETURNING id"
            ))
            .await?;
        let rows = tx
            .query(
                &statement,
                &[
                    &self.ids,
                    &self.functions,
                    &self.versions,
                    &self.triggers,
                    &self.statuses,
                    &self.attempts,
                    &self.max_attempts,
                    &self.queued_at,
                    &self.queued,
                    &self.requests,
                    &self.bodies,
                    &self.callback_urls,
                    &self.qualifiers,
                    &self.hops,
                ],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get::<_, String>(0).map_err(StoreError::from))
            .collect()
    }
}

/// Attempts' ends, in rounds: an execution's first end in the batch goes in the first round, a second
/// end of the same execution (a late attempt, a duplicate) in the second, and so on, each round written
/// after the one before, so every end sees the row as the ends before it left it.
#[derive(Default)]
pub(super) struct Ends<'a> {
    rounds: Vec<Round<'a>>,
    seen: HashMap<&'a str, usize>,
}

impl<'a> Ends<'a> {
    /// Adds `attempt`'s end of execution `id`; with `claim` (node, attempt number), written only while
    /// the row is still running that attempt under that node's claim. Returns its round.
    pub(super) fn add(
        &mut self,
        id: &'a str,
        attempt: &'a Attempt,
        claim: Option<(&'a str, u32)>,
    ) -> usize {
        let round = self.seen.entry(id).or_insert(0);
        let at = *round;
        *round += 1;
        if self.rounds.len() <= at {
            self.rounds.push(Round::default());
        }
        self.rounds[at].add(id, attempt, claim);
        at
    }

    /// Writes the ends onto their rows, round by round; returns the ids each round wrote.
    pub(super) async fn record(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<HashSet<String>>, StoreError> {
        let mut written = Vec::with_capacity(self.rounds.len());
        for round in &self.rounds {
            written.push(round.record(tx).await?);
        }
        Ok(written)
    }
}

/// One round of [`Ends`], column by column: an execution at most once.
#[derive(Default)]
struct Round<'a> {
    ids: Vec<&'a str>,
    statuses: Vec<&'static str>,
    versions: Vec<i64>,
    started_at: Vec<i64>,
    finished_at: Vec<i64>,
    duration_us: Vec<i64>,
    http_statuses: Vec<Option<i64>>,
    exit_codes: Vec<Option<i64>>,
    errors: Vec<Option<&'a str>>,
    outputs: Vec<Option<&'a [u8]>>,
    output_truncated: Vec<bool>,
    instantiate_us: Vec<Option<i64>>,
    cpu_us: Vec<Option<i64>>,
    peak_memory: Vec<Option<i64>>,
    fuel: Vec<Option<i64>>,
    retry_in: Vec<Option<i64>>,
    claim_attempts: Vec<Option<i64>>,
    claim_nodes: Vec<Option<&'a str>>,
    destinations: Vec<bool>,
}

impl<'a> Round<'a> {
    fn add(&mut self, id: &'a str, attempt: &'a Attempt, claim: Option<(&'a str, u32)>) {
        let usage = attempt.usage;
        self.ids.push(id);
        self.statuses
            .push(attempt.status.unwrap_or(ExecutionStatus::Failed).as_str());
        self.versions.push(i64::from(attempt.version));
        self.started_at.push(attempt.started_at);
        self.finished_at.push(attempt.finished_at);
        self.duration_us.push(big(attempt.duration_us));
        self.http_statuses.push(attempt.http_status.map(i64::from));
        self.exit_codes.push(attempt.exit_code.map(i64::from));
        self.errors.push(attempt.error.as_deref());
        self.outputs.push(attempt.output.as_deref());
        self.output_truncated.push(attempt.output_truncated);
        self.instantiate_us
            .push(usage.map(|u| big(u.instantiate_us)));
        self.cpu_us.push(usage.map(|u| big(u.cpu_us)));
        self.peak_memory
            .push(usage.map(|u| big(u.peak_memory_bytes)));
        self.fuel.push(usage.and_then(|u| u.fuel_consumed).map(big));
        self.retry_in.push(attempt.retry_in.map(millis));
        self.claim_attempts
            .push(claim.map(|(_, attempt)| i64::from(attempt)));
        self.claim_nodes.push(claim.map(|(node, _)| node));
        self.destinations.push(attempt.destination);
    }

    /// Writes the ends onto their rows; returns the ids written.
    ///
    /// Sent unprepared, so PostgreSQL plans it for the table as it is now: a plan cached while the
    /// table was small joins by scanning all of it, which costs more with every row the table gains.
    async fn record(&self, tx: &Transaction<'_>) -> Result<HashSet<String>, StoreError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE executions e SET status = a.status, version = a.version,
                     started_at = a.started_at, finished_at = a.finished_at,
                     duration_us = a.duration_us, http_status = a.http_status,
                     exit_code = a.exit_code, error = a.error, output = a.output,
                     output_truncated = a.output_truncated, instantiate_us = a.instantiate_us,
                     cpu_us = a.cpu_us, peak_memory = a.peak_memory, fuel = a.fuel,
                     next_at = CASE WHEN a.retry_in IS NOT NULL THEN {NOW_MS} + a.retry_in END,
                     lease_until = NULL, {owed}
                 FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                          $17, $18, $19)
                      AS a(id, status, version, started_at, finished_at, duration_us, http_status,
                          exit_code, error, output, output_truncated, instantiate_us, cpu_us,
                          peak_memory, fuel, retry_in, claim_attempt, claim_node, destination)
                 WHERE e.id = a.id
                   AND (a.claim_attempt IS NULL
                        OR (e.status = 'running' AND e.attempts = a.claim_attempt
                            AND e.claimed_by = a.claim_node))
                 RETURNING e.id",
                owed = owed(NOW_MS, "a.status", "a.destination")
            )
        });
        let (text, big, bytes, flag) = (
            Type::TEXT_ARRAY,
            Type::INT8_ARRAY,
            Type::BYTEA_ARRAY,
            Type::BOOL_ARRAY,
        );
        let rows = tx
            .query_typed(
                &SQL,
                &[
                    (&self.ids, text.clone()),
                    (&self.statuses, text.clone()),
                    (&self.versions, big.clone()),
                    (&self.started_at, big.clone()),
                    (&self.finished_at, big.clone()),
                    (&self.duration_us, big.clone()),
                    (&self.http_statuses, big.clone()),
                    (&self.exit_codes, big.clone()),
                    (&self.errors, text.clone()),
                    (&self.outputs, bytes),
                    (&self.output_truncated, flag.clone()),
                    (&self.instantiate_us, big.clone()),
                    (&self.cpu_us, big.clone()),
                    (&self.peak_memory, big.clone()),
                    (&self.fuel, big.clone()),
                    (&self.retry_in, big.clone()),
                    (&self.claim_attempts, big),
                    (&self.claim_nodes, text),
                    (&self.destinations, flag),
                ],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get::<_, String>(0).map_err(StoreError::from))
            .collect()
    }
}
