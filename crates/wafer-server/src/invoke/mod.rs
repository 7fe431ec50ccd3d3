//! The invocation core: how every trigger — an HTTP route, the management API, a queue worker (async and
//! cron executions), a function calling another — runs a live function. It knows nothing of HTTP
//! frameworks: a request is its parts and its body, already read.
//!
//! [`run`] checks the request (the function's body cap; the caller's right to invoke a private
//! function, on the triggers that come from outside), admits it (the function's concurrency and the
//! server's instance cap), runs a fresh instance, counts it in the metrics, and hands back the [`Answer`] with the
//! execution's [`Record`], which completes once the instance is gone. [`call`] is a whole synchronous
//! call on top of it: the answer now, the record written through the journal in the background. And
//! [`respond`] is an answer as an HTTP response, for the routes and for a calling function alike.

mod record;

pub use record::{Ended, Record};

use crate::admission::Permit;
use crate::app::App;
use crate::auth;
use crate::containers::Reply;
use crate::error::Error;
use crate::journal;
use crate::registry::{Entry, Runner};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::Instant;
use wafer_api::{CommandOutput, ExecutionStatus, Kind, Trigger};
use wafer_engine::{Mount, ResponseBody, Tracer};
use wafer_store::{Attempt, NewExecution, Write};

/// The header naming the execution record of a call, on the guest's request and on the response.
pub const EXECUTION_HEADER: &str = "x-wafer-execution-id";

/// The header naming the version that answered, on every response of a call.
pub const VERSION_HEADER: &str = "x-wafer-version";

/// The header on a command function's job reply, so clients know to read it as exit code and output.
pub const KIND_HEADER: &str = "x-wafer-kind";

/// One invocation of a live function, from any trigger.
pub struct Invocation {
    /// The live version to run.
    pub entry: Arc<Entry>,
    /// The execution's id.
    pub id: String,
    /// The request line and headers.
    pub parts: http::request::Parts,
    /// The request body (a command's stdin), already read, or why it could not be: a body over the cap
    /// is still a call, answered (after the token check) and recorded as refused.
    body: Result<Bytes, Error>,
    /// Where and from whom the request reached the function.
    pub mount: Mount,
    /// What started it.
    pub trigger: Trigger,
}

impl Invocation {
    /// An invocation of `entry` under a new execution id.
    pub fn new(
        entry: Arc<Entry>,
        parts: http::request::Parts,
        body: Bytes,
        mount: Mount,
        trigger: Trigger,
    ) -> Self {
        Self {
            entry,
            id: journal::new_id(),
            parts,
            body: Ok(body),
            mount,
            trigger,
        }
    }

    /// An invocation whose body could not be read (`error` says why), to answer and record as such.
    pub fn unread(
        entry: Arc<Entry>,
        parts: http::request::Parts,
        error: Error,
        mount: Mount,
        trigger: Trigger,
    ) -> Self {
        Self {
            body: Err(error),
            ..Self::new(entry, parts, Bytes::new(), mount, trigger)
        }
    }
}

/// What a function answered.
pub enum Answer {
    /// An http, wagi or proxy-wasm response, with the admission permit its body holds until it is sent.
    Http(http::Response<ResponseBody>, Permit),
    /// A command's job result.
    Command(CommandOutput),
}

impl Answer {
    /// The HTTP status the caller sees.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Http(response, _) => response.status().as_u16(),
            Answer::Command(_) => 200,
        }
    }
}

/// A run invocation: its id, what it answered, and its record to complete.
pub struct Invoked {
    /// The execution's id.
    pub id: String,
    /// The answer, or why there is none.
    pub answer: Result<Answer, Error>,
    /// The execution's record, complete once the instance is gone.
    pub record: Record,
}

/// Refuses a body over the function's cap.
pub fn check_body(entry: &Entry, body: &Bytes) -> Result<(), Error> {
    if body.len() > entry.max_request_bytes {
        return Err(too_large("the request body", entry.max_request_bytes));
    }
    Ok(())
}

/// The error of a body over `limit` bytes.
pub fn too_large(what: &str, limit: usize) -> Error {
    Error::TooLarge(format!("{what} is larger than the limit of {limit} bytes"))
}

/// Runs an invocation: checks, admission, a fresh instance. The answer comes as soon as the function
/// gives it; its record completes once the instance is gone (for a streamed body, after it ends).
pub async fn run(app: &App, invocation: Invocation) -> Invoked {
    let Invocation {
        entry,
        id,
        parts,
        body,
        mount,
        trigger,
    } = invocation;
    let started = Instant::now();
    let (tracer, trace) = Tracer::channel();
    let record = Record::start(entry.clone(), started, trace);
    let answer = async {
        // Queued executions were authorised when they were accepted (a destination's by the deploy
        // that named it), and carry no token.
        if entry.private
            && !matches!(
                trigger,
                Trigger::Async | Trigger::Cron | Trigger::Destination
            )
        {
            let caller = match parts.extensions.get::<auth::Caller>() {
                // The management API's guard or the Lambda API has already identified the caller.
                Some(caller) => caller.clone(),
                None => {
                    let token = app.config.token.as_deref();
                    auth::caller(&app.keys, token, &parts.headers, mount.client).await?
                }
            };
            caller.require(auth::Permission::Invoke, Some(&entry.settings.name))?;
        }
        let body = body?;
        check_body(&entry, &body)?;
        execute(app, &entry, parts, body, &mount, &id, tracer).await
    }
    .await;
    let status = match &answer {
        Ok(answer) => answer.status(),
        Err(e) => e.status().as_u16(),
    };
    app.metrics.invocation(
        &entry.settings.name,
        entry.kind.as_str(),
        status,
        started.elapsed(),
    );
    Invoked { id, answer, record }
}

/// Admits the invocation and runs it in a fresh instance. The guest sees the execution id in the
/// `x-wafer-execution-id` request header.
async fn execute(
    app: &App,
    entry: &Entry,
    mut parts: http::request::Parts,
    body: Bytes,
    mount: &Mount,
    id: &str,
    tracer: Tracer,
) -> Result<Answer, Error> {
    let permit = app
        .admission
        .admit(&entry.settings.name, entry.slots.as_ref())
        .await?;
    let function = match app.function(entry).await? {
        Runner::Wasm(function) => function,
        Runner::Container(container) => {
            if let Ok(value) = http::HeaderValue::from_str(id) {
                parts.headers.insert(EXECUTION_HEADER, value);
            }
            let (reply, warm) = if container.serves_http() {
                let (response, warm) = container
                    .serve_http(parts, body, mount, &entry.settings, tracer)
                    .await?;
                (Reply::Http(response), warm)
            } else {
                container
                    .run_job(&parts, body, mount, &entry.settings, tracer)
                    .await?
            };
            app.metrics.start(&entry.settings.name, !warm);
            return Ok(match reply {
                Reply::Command(output) => Answer::Command(output),
                Reply::Http(response) => Answer::Http(response, permit),
            });
        }
    };
    let cold = entry.cold.swap(false, std::sync::atomic::Ordering::Relaxed);
    app.metrics.start(&entry.settings.name, cold);
    if function.kind() == Kind::Command {
        let output = function
            .run_command(body, &[], &entry.settings, tracer)
            .await?;
        return Ok(Answer::Command(output));
    }
    if let Ok(value) = http::HeaderValue::from_str(id) {
        parts.headers.insert(EXECUTION_HEADER, value);
    }
    let request = http::Request::from_parts(parts, body);
    let response = function
        .serve_http(request, mount, &entry.settings, tracer)
        .await?;
    Ok(Answer::Http(response, permit))
}

/// A synchronous call: runs the invocation and answers at once; its record, with the trigger's name, is
/// written through the journal once the instance is gone.
pub async fn call(app: &Arc<App>, invocation: Invocation) -> (String, Result<Answer, Error>) {
    let trigger = invocation.trigger;
    let Invoked { id, answer, record } = run(app, invocation).await;
    let ended = Ended::of(&answer);
    let app = app.clone();
    let execution = id.clone();
    tokio::spawn(async move {
        settle(&app, execution, trigger, record, ended, |_| ()).await;
    });
    (id, answer)
}

/// Completes a synchronous call's record once its instance is gone: counts it in the rollups, lets
/// `look` read the attempt (its logs among it) and returns what it found, and hands the attempt to the
/// journal as execution `id` (started by `trigger`).
pub async fn settle<T>(
    app: &App,
    id: String,
    trigger: Trigger,
    record: Record,
    ended: Ended,
    look: impl FnOnce(&Attempt) -> T,
) -> T {
    let entry = record.entry().clone();
    let started_at = record.started_at();
    let succeeded = ended.succeeded();
    let mut attempt = record.finish(&app.config.executions, ended).await;
    attempt.status = Some(if succeeded {
        ExecutionStatus::Succeeded
    } else {
        ExecutionStatus::Failed
    });
    app.rollups.record(
        &entry.settings.name,
        succeeded,
        attempt.duration_us,
        attempt.finished_at,
    );
    let found = look(&attempt);
    app.journal.record(Write::Insert(NewExecution {
        attempt: Some(attempt),
        ..NewExecution::queued(
            id,
            entry.settings.name.clone(),
            entry.version,
            trigger,
            1,
            started_at,
        )
    }));
    found
}

/// An answer as the HTTP response a caller gets, naming execution `id` and the `version` that ran: an
/// http function's own response (holding its admission permit until the body is sent), a command's job
/// reply as JSON, or the error.
pub fn respond(
    id: &str,
    version: u32,
    answer: Result<Answer, Error>,
) -> http::Response<ResponseBody> {
    let mut response = match answer {
        // The instance may still be streaming the body: keep its slots until the body is done.
        Ok(Answer::Http(response, permit)) => response.map(|body| {
            body.map_frame(move |frame| {
                let _held = &permit;
                frame
            })
            .boxed_unsync()
        }),
        Ok(Answer::Command(output)) => match serde_json::to_vec(&output) {
            Ok(json) => {
                let mut response = http::Response::new(full(Bytes::from(json)));
                let headers = response.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                headers.insert(
                    KIND_HEADER,
                    http::HeaderValue::from_static(Kind::Command.as_str()),
                );
                response
            }
            Err(e) => Error::Internal(format!("the job reply does not serialise: {e}"))
                .response()
                .map(full),
        },
        Err(e) => e.response().map(full),
    };
    let headers = response.headers_mut();
    if let Ok(value) = http::HeaderValue::from_str(id) {
        headers.insert(EXECUTION_HEADER, value);
    }
    headers.insert(VERSION_HEADER, http::HeaderValue::from(version));
    response
}

/// Reads a whole response body, refusing one past `cap` bytes.
pub async fn read_response(mut body: ResponseBody, cap: usize) -> Result<Bytes, String> {
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > cap {
                return Err(format!("the response is larger than {cap} bytes"));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes.freeze())
}

/// A whole body as a [`ResponseBody`].
fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}
