//! SQL both stores share: the fragments that say the same thing in SQLite's and PostgreSQL's dialects,
//! given each one's expression for "now in milliseconds" (the store's clock).

/// The final statuses, as an SQL list.
pub(crate) const FINAL: &str = "('succeeded', 'failed', 'dead')";

/// The `SET` list that releases a running execution whose claim ended without a recorded attempt (its
/// lease expired, or its node restarted): back in the queue and due at `now`, or — when it has had its
/// `max_attempts` — `dead`, owing its callback, with its request dropped like any finished execution's.
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
         request = CASE WHEN {dead} THEN NULL ELSE request END,
         body = CASE WHEN {dead} THEN NULL ELSE body END,
         lease_until = NULL"
    )
}

/// The callback state a delivery leaves: `delivered`, `pending` for a retry, or `failed` (given up).
pub(crate) fn callback_state(
    delivered: bool,
    retry_in: Option<std::time::Duration>,
) -> &'static str {
    match (delivered, retry_in) {
        (true, _) => "delivered",
        (false, Some(_)) => "pending",
        (false, None) => "failed",
    }
}

/// The columns of a stored version, in the order both stores read them.
pub(crate) const VERSION_COLUMNS: &str = "name, version, kind, config, digest, size, created_at";

/// `SELECT` of functions joined with their live version: `created_at, updated_at, latest, <version
/// columns>`; `tail` adds `WHERE`/`ORDER BY`.
pub(crate) fn function_query(tail: &str) -> String {
    let columns = VERSION_COLUMNS
        .split(", ")
        .map(|c| format!("v.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT f.created_at, f.updated_at,
                (SELECT MAX(version) FROM versions WHERE name = f.name), {columns}
         FROM functions f JOIN versions v ON v.name = f.name AND v.version = f.live_version {tail}"
    )
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
