//! SQL both stores share: the fragments that say the same thing in SQLite's and PostgreSQL's dialects,
//! given each one's expression for "now in milliseconds" (the store's clock).

/// The final statuses, as an SQL list.
pub(crate) const FINAL: &str = "('succeeded', 'failed', 'dead', 'expired')";

/// The statuses of dead letters: queued executions that ended without succeeding, kept with their
/// request (by their own retention) so they can be retried.
pub(crate) const DEAD_LETTERS: &str = "('dead', 'expired')";

/// The `SET` list that releases a running execution whose claim ended without a recorded attempt (its
/// lease expired, or its node restarted): back in the queue and due at `now`, or — when it has had its
/// `max_attempts` — `dead`, owing its callback and its destination, with its request kept like any
/// dead letter's.
pub(crate) fn release(now: &str) -> String {
    let dead = "attempts >= max_attempts";
    format!(
        "status = CASE WHEN {dead} THEN 'dead' ELSE 'queued' END,
         next_at = CASE WHEN {dead} THEN NULL ELSE {now} END,
         finished_at = CASE WHEN {dead} THEN {now} ELSE finished_at END,
         error = CASE WHEN {dead} THEN 'its node stopped during the last attempt' ELSE error END,
         callback_state = CASE WHEN {dead} AND callback_url IS NOT NULL THEN 'pending'
                          ELSE callback_state END,
         callback_at = {now},
         destination_state = CASE WHEN {dead} THEN 'pending' ELSE destination_state END,
         destination_at = {now},
         lease_until = NULL"
    )
}

/// The `SET` list that gives back a claim on a running execution whose attempt did not end: queued,
/// due at `now`, the attempt not counted.
pub(crate) fn give_back(now: &str) -> String {
    format!(
        "status = 'queued', attempts = attempts - 1, next_at = {now},
         claimed_by = NULL, lease_until = NULL"
    )
}

/// The `SET` list that puts a dead letter back in the queue, due at `now`, with `budget` (a parameter)
/// more attempts; what it owed when it ended is owed again when it ends again.
pub(crate) fn requeue(now: &str, budget: &str) -> String {
    format!(
        "status = 'queued', next_at = {now}, queued_at = {now}, max_attempts = attempts + {budget},
         claimed_by = NULL, lease_until = NULL,
         callback_state = NULL, callback_attempts = 0, callback_at = NULL, callback_by = NULL,
         destination_state = NULL, destination_attempts = 0, destination_at = NULL,
         destination_by = NULL"
    )
}

/// The `SET` fragment an attempt's end writes for what the execution owes (parameters `status` and
/// `destination`, whether its function has a destination for this end): a callback when it has a URL,
/// a destination when its function has one; and its request and body, dropped once nothing will run it
/// again — kept for a dead letter, so it can be retried.
pub(crate) fn owed(now: &str, status: &str, destination: &str) -> String {
    owed_values(now, status, destination, "callback_url", |column| {
        column.to_string()
    })
    .map(|(column, value)| format!("{column} = {value}"))
    .join(", ")
}

/// What [`owed`] writes, as columns and their values, for a row whose callback URL is `callback_url`
/// and whose columns held `before(column)` until now: the columns themselves for an update, the new
/// row's values (or `NULL`) for an insert.
pub(crate) fn owed_values(
    now: &str,
    status: &str,
    destination: &str,
    callback_url: &str,
    before: impl Fn(&str) -> String,
) -> [(&'static str, String); 6] {
    let done = format!("{status} IN ('succeeded', 'failed')");
    [
        (
            "callback_state",
            format!(
                "CASE WHEN {callback_url} IS NOT NULL AND {status} IN {FINAL} THEN 'pending' \
                 ELSE {} END",
                before("callback_state")
            ),
        ),
        ("callback_at", now.to_string()),
        (
            "destination_state",
            format!(
                "CASE WHEN {destination} AND {status} IN {FINAL} THEN 'pending' ELSE {} END",
                before("destination_state")
            ),
        ),
        ("destination_at", now.to_string()),
        (
            "request",
            format!("CASE WHEN {done} THEN NULL ELSE {} END", before("request")),
        ),
        (
            "body",
            format!("CASE WHEN {done} THEN NULL ELSE {} END", before("body")),
        ),
    ]
}

/// The condition under which a finished execution is pruned, given the parameters of [`crate::Retention`]
/// (`keep`, `age` for the rest; `dead_keep`, `dead_age` for dead letters) over a ranking `n` per
/// function and kind: never while a delivery is pending.
pub(crate) fn prunable(
    now: &str,
    keep: &str,
    age: &str,
    dead_keep: &str,
    dead_age: &str,
) -> String {
    format!(
        "(CASE WHEN status IN {DEAD_LETTERS} THEN n > {dead_keep} OR finished_at < {now} - {dead_age}
               ELSE n > {keep} OR finished_at < {now} - {age} END)
         AND callback_state IS DISTINCT FROM 'pending'
         AND destination_state IS DISTINCT FROM 'pending'"
    )
}

/// The ranked finished executions [`prunable`] reads.
pub(crate) fn ranked_finished() -> String {
    format!(
        "SELECT id, status, finished_at, callback_state, destination_state,
                ROW_NUMBER() OVER (PARTITION BY function, status IN {DEAD_LETTERS}
                                   ORDER BY id DESC) AS n
         FROM executions WHERE status IN {FINAL}"
    )
}

/// The state a delivery leaves.
pub(crate) fn delivery_state(outcome: &crate::Delivered) -> &'static str {
    match outcome {
        crate::Delivered::Yes => "delivered",
        crate::Delivered::RetryIn(_) => "pending",
        crate::Delivered::GaveUp => "failed",
        crate::Delivered::Nothing => "none",
    }
}

/// The columns of a stored version, in the order both stores read them.
pub(crate) const VERSION_COLUMNS: &str =
    "name, version, kind, config, digest, size, created_at, files";

/// `SELECT` of functions joined with their live version: `created_at, updated_at, latest, <version
/// columns>, aliases`; `tail` adds `WHERE`/`ORDER BY`.
pub(crate) fn function_query(tail: &str) -> String {
    let columns = VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("v.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT f.created_at, f.updated_at,
                (SELECT MAX(version) FROM versions WHERE name = f.name), {columns}, f.aliases
         FROM functions f JOIN versions v ON v.name = f.name AND v.version = f.live_version {tail}"
    )
}

/// The column [`function_query`] reads the aliases from.
pub(crate) const ALIASES_COLUMN: usize = 11;

/// A function's aliases as stored (JSON), `live` among them with the live version.
pub(crate) fn aliases_from(
    json: &str,
    live: u32,
) -> Result<std::collections::BTreeMap<String, wafer_api::Alias>, crate::StoreError> {
    let mut aliases: std::collections::BTreeMap<String, wafer_api::Alias> =
        serde_json::from_str(json)
            .map_err(|e| crate::StoreError::Corrupt(format!("stored aliases: {e}")))?;
    let live_alias = aliases
        .entry(wafer_api::LIVE.to_string())
        .or_insert_with(|| wafer_api::Alias::to(live));
    if live_alias.version != live {
        *live_alias = wafer_api::Alias::to(live);
    }
    Ok(aliases)
}

/// Aliases as stored.
pub(crate) fn aliases_json(
    aliases: &std::collections::BTreeMap<String, wafer_api::Alias>,
) -> Result<String, crate::StoreError> {
    serde_json::to_string(aliases)
        .map_err(|e| crate::StoreError::Corrupt(format!("aliases do not serialise: {e}")))
}

/// `aliases` with `alias` pointed at `target` or (with `None`) removed, after checking that every
/// version it names is among `known`; a deploy that promotes passes `live` with its new version.
pub(crate) fn change_alias(
    mut aliases: std::collections::BTreeMap<String, wafer_api::Alias>,
    name: &str,
    alias: &str,
    target: Option<wafer_api::Alias>,
    latest: u32,
) -> Result<std::collections::BTreeMap<String, wafer_api::Alias>, crate::StoreError> {
    match target {
        Some(target) => {
            if let Some(missing) = target.versions().find(|v| *v == 0 || *v > latest) {
                return Err(crate::StoreError::NotFound(format!(
                    "version {missing} of `{name}`"
                )));
            }
            aliases.insert(alias.to_string(), target);
        }
        None => {
            if aliases.remove(alias).is_none() {
                return Err(crate::StoreError::NotFound(format!(
                    "alias `{alias}` of `{name}`"
                )));
            }
        }
    }
    Ok(aliases)
}

/// How a new execution's row starts: its request as JSON, its status and attempts counted, and whether
/// it is queued (due at once) — a sync execution that already ran is not in the queue.
pub(crate) fn new_row(
    new: &crate::NewExecution,
) -> Result<(Option<String>, wafer_api::ExecutionStatus, u32, bool), crate::StoreError> {
    use wafer_api::ExecutionStatus;
    let request = new
        .request
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| crate::StoreError::Corrupt(format!("request does not serialise: {e}")))?;
    Ok(match &new.attempt {
        Some(attempt) => (
            request,
            attempt.status.unwrap_or(ExecutionStatus::Failed),
            1,
            false,
        ),
        None => (request, ExecutionStatus::Queued, 0, true),
    })
}
