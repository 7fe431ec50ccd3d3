//! A journal batch's executions written one statement per kind rather than one per row: the executions
//! it queues in one `INSERT … SELECT FROM unnest(…)`, the sync calls that already ran in another, with
//! their attempts, and the attempts it ends in one `UPDATE … FROM unnest(…)`. A statement per row made
//! a batch of sync records two round trips per record, one after the other, so under load the journal
//! fell behind and dropped most of them.

use super::{big, millis, NOW_MS};
use crate::executions::{Attempt, Claim, NewExecution};
use crate::sql::{new_row, owed, owed_values};
use crate::StoreError;
use deadpool_postgres::Transaction;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;
use tokio_postgres::types::{ToSql, Type};
use wafer_api::ExecutionStatus;

/// New executions, inserted in the order added: the queued in one statement, those that already ran
/// (sync calls) with their attempt in another, so a sync call's record is one row written once.
#[derive(Default)]
pub(super) struct NewRows<'a> {
    queued: Columns<'a>,
    ended: Columns<'a>,
    /// The attempts of `ended`, row for row.
    attempts: Round<'a>,
}

/// The columns of new executions that do not depend on whether they ran.
#[derive(Default)]
struct Columns<'a> {
    ids: Vec<&'a str>,
    functions: Vec<&'a str>,
    versions: Vec<i64>,
    triggers: Vec<&'static str>,
    max_attempts: Vec<i64>,
    queued_at: Vec<i64>,
    requests: Vec<Option<String>>,
    bodies: Vec<&'a [u8]>,
    callback_urls: Vec<Option<&'a str>>,
    qualifiers: Vec<Option<&'a str>>,
    hops: Vec<i64>,
}

/// A statement parameter.
type Param<'p> = &'p (dyn ToSql + Sync);

impl<'a> Columns<'a> {
    /// The columns but `version`, in the order `insert_queued` and `insert_ended` unnest them.
    fn params(&self) -> [Param<'_>; 10] {
        [
            &self.ids,
            &self.functions,
            &self.triggers,
            &self.max_attempts,
            &self.queued_at,
            &self.requests,
            &self.bodies,
            &self.callback_urls,
            &self.qualifiers,
            &self.hops,
        ]
    }

    fn add(&mut self, new: &'a NewExecution, request: Option<String>) {
        self.ids.push(&new.id);
        self.functions.push(&new.function);
        self.versions.push(i64::from(new.version));
        self.triggers.push(new.trigger.as_str());
        self.max_attempts.push(i64::from(new.max_attempts));
        self.queued_at.push(new.queued_at);
        self.requests.push(request);
        self.bodies.push(&new.body);
        self.callback_urls.push(new.callback_url.as_deref());
        self.qualifiers.push(new.qualifier.as_deref());
        self.hops.push(i64::from(new.hops));
    }
}

impl<'a> NewRows<'a> {
    /// Adds `new`: queued and due now, or, with its attempt, as that attempt left it.
    pub(super) fn add(&mut self, new: &'a NewExecution) -> Result<(), StoreError> {
        let (request, _, _, _) = new_row(new)?;
        match &new.attempt {
            None => self.queued.add(new, request),
            Some(attempt) => {
                self.ended.add(new, request);
                self.attempts.add(&new.id, attempt, None);
            }
        }
        Ok(())
    }

    /// Inserts the rows whose ids are not stored yet, the first `take` queued ones already claimed
    /// by `claim`'s node (running their first attempt under its lease).
    pub(super) async fn insert(
        &self,
        tx: &Transaction<'_>,
        claim: Option<&Claim>,
        take: usize,
    ) -> Result<Inserted, StoreError> {
        let (mut inserted, ended) =
            tokio::try_join!(self.insert_queued(tx, claim, take), self.insert_ended(tx))?;
        inserted.ids.extend(ended);
        Ok(inserted)
    }

    async fn insert_queued(
        &self,
        tx: &Transaction<'_>,
        claim: Option<&Claim>,
        take: usize,
    ) -> Result<Inserted, StoreError> {
        let rows = &self.queued;
        if rows.ids.is_empty() {
            return Ok(Inserted::default());
        }
        // Row `n` (from 1) is claimed when `n <= $12`.
        static SQL: LazyLock<String> = LazyLock::new(|| {
            let claimed = |then: &str, otherwise: &str| {
                format!("CASE WHEN n <= $12 THEN {then} ELSE {otherwise} END")
            };
            format!(
                "INSERT INTO executions (id, function, version, trigger, status, attempts,
                     max_attempts, queued_at, next_at, started_at, claimed_by, lease_until,
                     request, body, callback_url, qualifier, hops, replayable)
                 SELECT id, function, version, trigger, {status}, {attempts}, max_attempts,
                     queued_at, {next_at}, {started_at}, {claimed_by}, {lease_until}, request,
                     body, callback_url, qualifier, hops, TRUE
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[],
                          $6::TEXT[], $7::BYTEA[], $8::TEXT[], $9::TEXT[], $10::BIGINT[],
                          $11::BIGINT[])
                      WITH ORDINALITY AS r(id, function, trigger, max_attempts, queued_at, request,
                          body, callback_url, qualifier, hops, version, n)
                 ORDER BY n
                 ON CONFLICT DO NOTHING
                 RETURNING id, status = 'running'",
                status = claimed("'running'", "'queued'"),
                attempts = claimed("1", "0"),
                next_at = claimed("NULL", NOW_MS),
                started_at = claimed(NOW_MS, "NULL"),
                claimed_by = claimed("$13::TEXT", "NULL"),
                lease_until = claimed(&format!("{NOW_MS} + $14::BIGINT"), "NULL"),
            )
        });
        let statement = tx.prepare_cached(&SQL).await?;
        let take = i64::try_from(take).unwrap_or(i64::MAX);
        let node = claim.map(|claim| claim.node.as_str());
        let lease = claim.map_or(0, |claim| millis(claim.lease));
        let params: Vec<Param<'_>> = rows
            .params()
            .into_iter()
            .chain([&rows.versions as Param<'_>, &take, &node, &lease])
            .collect();
        let mut inserted = Inserted::default();
        for row in tx.query(&statement, &params).await? {
            let id: String = row.try_get(0)?;
            if row.try_get(1)? {
                inserted.claimed.insert(id.clone());
            }
            inserted.ids.insert(id);
        }
        Ok(inserted)
    }

    async fn insert_ended(&self, tx: &Transaction<'_>) -> Result<HashSet<String>, StoreError> {
        static SQL: LazyLock<String> = LazyLock::new(|| {
            let (columns, values): (Vec<_>, Vec<_>) = owed_values(
                NOW_MS,
                "r.status",
                "r.destination",
                "r.callback_url",
                |column| match column {
                    "request" | "body" => format!("r.{column}"),
                    _ => "NULL".into(),
                },
            )
            .into_iter()
            .unzip();
            format!(
                "INSERT INTO executions (id, function, trigger, attempts, max_attempts, queued_at,
                     callback_url, qualifier, hops, status, version, started_at, finished_at,
                     duration_us, http_status, exit_code, error, output, output_truncated,
                     instantiate_us, cpu_us, peak_memory, fuel, next_at, {owed_columns})
                 SELECT id, function, trigger, 1, max_attempts, queued_at, callback_url, qualifier,
                     hops, status, version, started_at, finished_at, duration_us, http_status,
                     exit_code, error, output, output_truncated, instantiate_us, cpu_us,
                     peak_memory, fuel, CASE WHEN retry_in IS NOT NULL THEN {NOW_MS} + retry_in END,
                     {owed_values}
                 FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[],
                          $6::TEXT[], $7::BYTEA[], $8::TEXT[], $9::TEXT[], $10::BIGINT[],
                          $11::TEXT[], $12::BIGINT[], $13::BIGINT[], $14::BIGINT[], $15::BIGINT[],
                          $16::BIGINT[], $17::BIGINT[], $18::TEXT[], $19::BYTEA[],
                          $20::BOOLEAN[], $21::BIGINT[], $22::BIGINT[], $23::BIGINT[],
                          $24::BIGINT[], $25::BIGINT[], $26::BOOLEAN[])
                      WITH ORDINALITY AS r(id, function, trigger, max_attempts, queued_at, request,
                          body, callback_url, qualifier, hops, status, version, started_at,
                          finished_at, duration_us, http_status, exit_code, error, output,
                          output_truncated, instantiate_us, cpu_us, peak_memory, fuel, retry_in,
                          destination, n)
                 ORDER BY n
                 ON CONFLICT DO NOTHING
                 RETURNING id",
                owed_columns = columns.join(", "),
                owed_values = values.join(", "),
            )
        });
        let (rows, attempts) = (&self.ended, &self.attempts);
        if rows.ids.is_empty() {
            return Ok(HashSet::new());
        }
        let statement = tx.prepare_cached(&SQL).await?;
        let params: Vec<Param<'_>> = rows
            .params()
            .into_iter()
            .chain(attempts.attempt().map(|(param, _)| param))
            .chain([&attempts.destinations as Param<'_>])
            .collect();
        let rows = tx.query(&statement, &params).await?;
        ids(&rows)
    }
}

/// What [`NewRows::insert`] stored.
#[derive(Default)]
pub(super) struct Inserted {
    /// The ids of the rows inserted.
    pub ids: HashSet<String>,
    /// Of those, the ones inserted claimed.
    pub claimed: HashSet<String>,
}

/// The ids a statement's `RETURNING id` gave.
fn ids(rows: &[tokio_postgres::Row]) -> Result<HashSet<String>, StoreError> {
    rows.iter()
        .map(|row| row.try_get::<_, String>(0).map_err(StoreError::from))
        .collect()
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
    /// Adds `attempt`'s end of execution `id`, written only while the row is still running that
    /// attempt under that node's claim (`claim`: node, attempt number). Returns its round.
    pub(super) fn add(
        &mut self,
        id: &'a str,
        attempt: &'a Attempt,
        claim: (&'a str, u32),
    ) -> usize {
        let round = self.seen.entry(id).or_insert(0);
        let at = *round;
        *round += 1;
        if self.rounds.len() <= at {
            self.rounds.push(Round::default());
        }
        self.rounds[at].add(id, attempt, Some(claim));
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
    /// The attempt's own columns with their types, in the order `insert_ended` and `record` unnest
    /// them: status, version, started_at, finished_at, duration_us, http_status, exit_code, error,
    /// output, output_truncated, instantiate_us, cpu_us, peak_memory, fuel, retry_in.
    fn attempt(&self) -> [(Param<'_>, Type); 15] {
        let (text, big) = (Type::TEXT_ARRAY, Type::INT8_ARRAY);
        [
            (&self.statuses, text.clone()),
            (&self.versions, big.clone()),
            (&self.started_at, big.clone()),
            (&self.finished_at, big.clone()),
            (&self.duration_us, big.clone()),
            (&self.http_statuses, big.clone()),
            (&self.exit_codes, big.clone()),
            (&self.errors, text),
            (&self.outputs, Type::BYTEA_ARRAY),
            (&self.output_truncated, Type::BOOL_ARRAY),
            (&self.instantiate_us, big.clone()),
            (&self.cpu_us, big.clone()),
            (&self.peak_memory, big.clone()),
            (&self.fuel, big.clone()),
            (&self.retry_in, big),
        ]
    }

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
                 WHERE e.id = a.id AND e.status = 'running' AND e.attempts = a.claim_attempt
                   AND e.claimed_by = a.claim_node
                 RETURNING e.id",
                owed = owed(NOW_MS, "a.status", "a.destination")
            )
        });
        let params: Vec<(Param<'_>, Type)> = [(&self.ids as Param<'_>, Type::TEXT_ARRAY)]
            .into_iter()
            .chain(self.attempt())
            .chain([
                (&self.claim_attempts as Param<'_>, Type::INT8_ARRAY),
                (&self.claim_nodes, Type::TEXT_ARRAY),
                (&self.destinations, Type::BOOL_ARRAY),
            ])
            .collect();
        let rows = tx.query_typed(&SQL, &params).await?;
        ids(&rows)
    }
}
