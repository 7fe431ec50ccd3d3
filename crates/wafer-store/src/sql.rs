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
