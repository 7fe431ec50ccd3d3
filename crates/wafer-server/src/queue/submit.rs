//! What goes into the queue and what comes back: an async submission (durable before its 202, within
//! its function's `max_queued`, once per idempotency key), and the retry or redrive of dead letters.

use super::ATTEMPT_HEADER;
use crate::app::App;
use crate::error::Error;
use crate::invoke;
use crate::journal::{self, now_ms};
use crate::registry::Entry;
use crate::validate;
use bytes::Bytes;
use std::time::Duration;
use wafer_api::oci::sha256_hex;
use wafer_api::{AsyncAccepted, Trigger};
use wafer_store::{Admit, Enqueued, NewExecution, Retried, StoreError, StoredRequest, Write};

/// The header that makes an async submission idempotent.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// How long an idempotency key names its execution.
pub const KEY_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The longest idempotency key.
const MAX_KEY_BYTES: usize = 255;

/// How an async invocation asks to be run.
#[derive(Debug, Default)]
pub struct Submission {
    /// Where to POST the finished execution.
    pub callback_url: Option<String>,
    /// The alias or version to run instead of `live`, resolved when each attempt runs.
    pub qualifier: Option<String>,
}

/// Stores an async invocation of `entry`'s function (its request `parts` and `body`) and answers with
/// its id once it is durable: the first submission's id again for an idempotency key it has seen
/// within a day.
pub async fn submit(
    app: &App,
    entry: &Entry,
    parts: &http::request::Parts,
    body: Bytes,
    submission: Submission,
) -> Result<AsyncAccepted, Error> {
    if let Some(url) = &submission.callback_url {
        check_url(app, &entry.settings.outbound, url, "callback_url")
            .await
            .map_err(Error::InvalidCallback)?;
    }
    invoke::check_body(entry, &body)?;
    let key = idempotency_key(&parts.headers)?;
    let id = journal::new_id();
    let path = match parts.uri.query().map(without_invoke_params) {
        Some(query) if !query.is_empty() => format!("/?{query}"),
        _ => "/".to_string(),
    };
    let request = StoredRequest {
        method: parts.method.to_string(),
        path,
        headers: parts
            .headers
            .iter()
            .filter(|(name, _)| *name != http::header::AUTHORIZATION)
            .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
            .collect(),
    };
    let digest = key
        .as_ref()
        .map(|_| request_digest(&request.method, &request.path, &body));
    let new = NewExecution {
        request: Some(request),
        body: body.to_vec(),
        callback_url: submission.callback_url,
        qualifier: submission.qualifier,
        ..NewExecution::queued(
            id.clone(),
            entry.settings.name.clone(),
            entry.version,
            Trigger::Async,
            entry.max_attempts,
            now_ms(),
        )
    };
    let max_queued = entry.config.max_queued;
    if key.is_none() && max_queued.is_none() {
        // Nothing to decide against the store: batched with other writes, one commit for many, which
        // also claims it for a free worker if there is one.
        app.journal
            .commit(Write::Insert(new))
            .await
            .map_err(not_accepted)?;
        return Ok(AsyncAccepted { execution_id: id });
    }
    let name = new.function.clone();
    let admit = Admit {
        key: key.zip(digest),
        key_window: KEY_WINDOW,
        max_queued,
    };
    match app
        .executions
        .enqueue(new, admit)
        .await
        .map_err(|e| not_accepted(e.into()))?
    {
        Enqueued::Queued => {
            app.queue.wake();
            Ok(AsyncAccepted { execution_id: id })
        }
        Enqueued::Existing {
            id,
            same_request: true,
        } => Ok(AsyncAccepted { execution_id: id }),
        Enqueued::Existing { id, .. } => Err(Error::KeyReused(format!(
            "the Idempotency-Key was used within the last day for execution {id}, with another \
             request: use a new key for a new request"
        ))),
        Enqueued::Full => {
            app.metrics.refused_full(&name);
            Err(Error::QueueFull(format!(
                "function `{name}` has {} executions waiting (its max_queued); try again later",
                max_queued.unwrap_or_default()
            )))
        }
    }
}

/// A submission the store could not take, as its client hears of it: a full disk is the server's
/// trouble for now, a 503 worth retrying (never a 202 for what was not stored).
fn not_accepted(e: Error) -> Error {
    match e {
        Error::Store(StoreError::NoSpace(m)) | Error::Unavailable(m) => {
            Error::Unavailable(format!("the invocation was not accepted: {m}"))
        }
        other => other,
    }
}

/// The submission's idempotency key, if it has one: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &http::HeaderMap) -> Result<Option<String>, Error> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if !key.is_empty()
                && key.len() <= MAX_KEY_BYTES
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key.to_string()))
        }
        _ => Err(Error::InvalidRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters"
        ))),
    }
}

/// What makes two submissions with one key the same request: method, path with query, and body.
fn request_digest(method: &str, path: &str, body: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(method.len() + path.len() + body.len() + 2);
    bytes.extend_from_slice(method.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(path.as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(body);
    sha256_hex(&bytes)
}

/// A query string without the parameters that steer the invocation itself.
pub(super) fn without_invoke_params(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            !pair.is_empty() && !matches!(key, "async" | "callback_url" | "qualifier")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Checks a URL wafer will post an execution to (`field` says which): absolute http(s), and its host
/// one the server allows callbacks to or one the function may reach itself.
pub(crate) async fn check_url(
    app: &App,
    outbound: &wafer_engine::OutboundPolicy,
    url: &str,
    field: &str,
) -> Result<(), String> {
    let uri = validate::http_url(url).map_err(|e| format!("{field} {e}"))?;
    let server = wafer_engine::OutboundPolicy::parse(&app.config.executions.callback_hosts)?;
    if server.permits(&uri).await.is_ok() || outbound.permits(&uri).await.is_ok() {
        return Ok(());
    }
    Err(format!(
        "{field} {url:?} is not allowed: its host must be in the server's callback hosts or the \
         function's allowed_outbound_hosts"
    ))
}

/// Puts dead letter `id` back in the queue with a fresh budget of its function's `max_attempts`.
pub async fn retry(app: &App, id: &str) -> Result<(), Error> {
    let execution = app
        .executions
        .get_execution(id, false)
        .await?
        .ok_or_else(|| Error::NotFound(format!("execution {id} does not exist")))?;
    let budget = budget(app, &execution.function).await?;
    match app.executions.retry(id, budget).await? {
        Retried::Queued => {
            app.queue.wake();
            Ok(())
        }
        Retried::Missing => Err(Error::NotFound(format!("execution {id} does not exist"))),
        Retried::NotDead(status) => Err(Error::NotRetryable(format!(
            "execution {id} is {status}: only a dead or expired execution can be retried"
        ))),
        Retried::NotKept => Err(Error::NotRetryable(format!(
            "execution {id} ended before wafer kept the requests of dead executions, so there is \
             nothing to run again"
        ))),
    }
}

/// Puts every dead letter of `name` (that ended within `since`) back in the queue; how many.
pub async fn redrive(app: &App, name: &str, since: Option<Duration>) -> Result<u64, Error> {
    let budget = budget(app, name).await?;
    let redriven = app.executions.redrive(name, since, budget).await?;
    if redriven > 0 {
        app.queue.wake();
    }
    tracing::info!(function = name, executions = redriven, "redriven");
    Ok(redriven)
}

/// The attempts a retried execution of `name` gets: its live version's `max_attempts`.
async fn budget(app: &App, name: &str) -> Result<u32, Error> {
    let entry = app
        .named(name)
        .await
        .ok_or_else(|| Error::unknown_function(name))?;
    Ok(entry.max_attempts)
}

/// The stored request a claimed execution replays under `/fn/{name}`, with the attempt's number.
pub(super) fn replay_parts(
    name: &str,
    stored: Option<StoredRequest>,
    attempt: u32,
) -> Result<(http::request::Parts, String), Error> {
    let stored = stored.unwrap_or_else(|| StoredRequest {
        method: "POST".into(),
        path: "/".into(),
        headers: Vec::new(),
    });
    let prefix = format!("/fn/{name}");
    let mut builder = http::Request::builder()
        .method(stored.method.as_str())
        .uri(format!("{prefix}{}", stored.path));
    for (name, value) in &stored.headers {
        builder = builder.header(name, value);
    }
    builder = builder.header(ATTEMPT_HEADER, attempt);
    let (parts, ()) = builder
        .body(())
        .map_err(|e| Error::Internal(format!("the stored request is unusable: {e}")))?
        .into_parts();
    Ok((parts, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_parameters_are_not_passed_on() {
        assert_eq!(
            without_invoke_params("async=true&x=1&callback_url=http://a/&y&qualifier=beta"),
            "x=1&y"
        );
        assert_eq!(without_invoke_params("async=true"), "");
    }

    #[test]
    fn a_key_is_visible_ascii_and_the_digest_covers_the_request() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert(IDEMPOTENCY_HEADER, "order-42".parse().unwrap());
        assert_eq!(
            idempotency_key(&headers).unwrap().as_deref(),
            Some("order-42")
        );
        headers.insert(IDEMPOTENCY_HEADER, "a b".parse().unwrap());
        assert!(idempotency_key(&headers).is_err());
        let one = request_digest("POST", "/", b"x");
        assert_eq!(one, request_digest("POST", "/", b"x"));
        assert_ne!(one, request_digest("POST", "/", b"y"));
        assert_ne!(one, request_digest("PUT", "/", b"x"));
    }
}
