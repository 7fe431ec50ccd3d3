//! The server's errors: one enum, [`Error`], for everything that can go wrong inside (a deploy, a call,
//! the queue, admission, the stores), and — in this one place — the HTTP status, the stable `code` and
//! the headers each answers with ([`Error::response`]). Domain code says what went wrong; only here does
//! that become HTTP.

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use wafer_api::ErrorBody;
use wafer_container::ContainerError;
use wafer_engine::{CompileError, InvokeError};
use wafer_store::StoreError;

/// The header on every error answer of wafer's own, carrying its code; a function's own failing responses
/// never have it, so clients can tell the two apart.
pub const ERROR_HEADER: &str = "x-wafer-error";

/// Seconds a client is told to wait before retrying a load-shedding answer (429, 503).
const RETRY_AFTER_SECS: u32 = 1;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A function name does not follow the naming rule.
    #[error("{0}")]
    InvalidName(String),
    /// A deploy's configuration, or a configuration update, is invalid.
    #[error("{0}")]
    InvalidConfig(String),
    /// A key-value store's name is invalid.
    #[error("{0}")]
    InvalidStore(String),
    /// A request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// An async invocation's callback URL is not allowed.
    #[error("{0}")]
    InvalidCallback(String),
    /// A module cannot run as deployed (besides what compiling finds).
    #[error("{0}")]
    UnsupportedModule(String),
    /// A binary is not wasm, or fits no kind.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// A function, version, execution, key or path does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request's credentials are missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// An API key whose scopes do not allow the request.
    #[error("{0}")]
    Forbidden(String),
    /// An API key over its rate limit.
    #[error("{0}")]
    RateLimited(String),
    /// A browser sent a state-changing management request from another site's page.
    #[error("{0}")]
    CrossSite(String),
    /// A proxy-wasm id another function holds.
    #[error("{0}")]
    IdTaken(String),
    /// A body is over its cap.
    #[error("{0}")]
    TooLarge(String),
    /// The request target is too long.
    #[error("{0}")]
    UriTooLong(String),
    /// The request headers are too large.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// A body of a type the endpoint does not take.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A known path with the wrong method.
    #[error("this path does not accept that method")]
    MethodNotAllowed,
    /// The function has `max_queued` async executions waiting.
    #[error("{0}")]
    QueueFull(String),
    /// An idempotency key came again with a different request.
    #[error("{0}")]
    KeyReused(String),
    /// A queued execution waited past its function's `max_event_age_ms`.
    #[error("{0}")]
    Expired(String),
    /// An execution that cannot be retried: not a dead letter, or its request was not kept.
    #[error("{0}")]
    NotRetryable(String),
    /// The function runs as many invocations as its `max_concurrency` allows.
    #[error("{0}")]
    ConcurrencyLimit(String),
    /// The server runs its maximum of instances.
    #[error("{0}")]
    AtCapacity(String),
    /// A part of the server has stopped (it is shutting down).
    #[error("{0}")]
    Unavailable(String),
    /// The function's invocation failed.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    /// The store failed or refused.
    #[error("{}", store_message(.0))]
    Store(#[from] StoreError),
    /// A container function's image, daemon or run failed.
    #[error(transparent)]
    Container(#[from] wafer_container::ContainerError),
    /// Something failed on our side.
    #[error("{0}")]
    Internal(String),
    /// What went wrong with one function of several deployed together; it answers as that error does.
    #[error("function `{function}`: {error}")]
    Within { function: String, error: Box<Error> },
}

/// What a store error tells the caller.
fn store_message(err: &StoreError) -> String {
    match err {
        StoreError::NotFound(what) => format!("{what} does not exist"),
        other => other.to_string(),
    }
}

impl From<wafer_formats::multipart::FormError> for Error {
    fn from(e: wafer_formats::multipart::FormError) -> Self {
        use wafer_formats::multipart::FormError;
        match e {
            FormError::Malformed(message) => Error::InvalidRequest(message),
            FormError::TooLarge { what, cap } => crate::invoke::too_large(&what, cap),
            FormError::InvalidConfig(message) => Error::InvalidConfig(message),
        }
    }
}

impl Error {
    /// The error for function `name`, which does not exist.
    pub fn unknown_function(name: &str) -> Self {
        Error::NotFound(format!("function `{name}` does not exist"))
    }

    /// This error, as what went wrong with `function` among several deployed together.
    pub fn within(self, function: &str) -> Self {
        Error::Within {
            function: function.to_string(),
            error: Box::new(self),
        }
    }

    /// The HTTP status and the stable code this error answers with.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Within { error, .. } => error.status_and_code(),
            Error::InvalidName(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
            Error::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "invalid_config"),
            Error::InvalidStore(_) => (StatusCode::BAD_REQUEST, "invalid_store"),
            Error::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::InvalidCallback(_) => (StatusCode::BAD_REQUEST, "invalid_callback"),
            Error::UnsupportedModule(_) | Error::Compile(CompileError::Unsupported(_)) => {
                (StatusCode::BAD_REQUEST, "unsupported_module")
            }
            Error::Compile(CompileError::Invalid(_)) => (StatusCode::BAD_REQUEST, "invalid_module"),
            Error::NotFound(_) | Error::Store(StoreError::NotFound(_)) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::CrossSite(_) => (StatusCode::FORBIDDEN, "cross_site"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Error::IdTaken(_) => (StatusCode::CONFLICT, "id_taken"),
            Error::Store(StoreError::RouteTaken { .. }) => (StatusCode::CONFLICT, "route_taken"),
            Error::TooLarge(_) | Error::Store(StoreError::Full { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            Error::Store(StoreError::NotANumber(_)) => (StatusCode::BAD_REQUEST, "not_a_number"),
            Error::Store(StoreError::NoSpace(_)) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            Error::UriTooLong(_) => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            Error::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
            ),
            Error::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::ConcurrencyLimit(_) => (StatusCode::TOO_MANY_REQUESTS, "concurrency_limit"),
            Error::QueueFull(_) => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            Error::KeyReused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
            Error::NotRetryable(_) => (StatusCode::CONFLICT, "not_retryable"),
            Error::Expired(_) => (StatusCode::GONE, "expired"),
            Error::AtCapacity(_) => (StatusCode::SERVICE_UNAVAILABLE, "at_capacity"),
            Error::Unavailable(_) | Error::Store(StoreError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Error::Invoke(e) => e.status(),
            Error::Container(e) => match e {
                ContainerError::InvalidImage(_) => (StatusCode::BAD_REQUEST, "invalid_image"),
                ContainerError::Daemon(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "containerd_unavailable")
                }
                ContainerError::Registry(_) => (StatusCode::BAD_GATEWAY, "registry_unavailable"),
                ContainerError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
                ContainerError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            Error::Store(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status_and_code().0
    }

    /// `code: message`, as an execution record keeps it.
    pub fn describe(&self) -> String {
        format!("{}: {self}", self.status_and_code().1)
    }

    /// The answer this error gives over HTTP: its status; `x-wafer-error` with its code; `Retry-After`
    /// on every 429 and 503, which shed load and are worth retrying; `WWW-Authenticate` on a 401; and
    /// the JSON error body.
    pub fn response(&self) -> http::Response<Bytes> {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            match self {
                Error::Store(e) => tracing::error!("store failure: {e}"),
                _ => tracing::warn!(code, "{self}"),
            }
        }
        let body = serde_json::to_vec(&ErrorBody::new(code, self.to_string()))
            .unwrap_or_else(|_| br#"{"error":{"code":"internal","message":""}}"#.to_vec());
        let mut response = http::Response::new(Bytes::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(ERROR_HEADER, HeaderValue::from_static(code));
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: Error) -> (u16, String, Option<String>, String) {
        let response = error.response();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body["error"]["code"].as_str(),
            header(ERROR_HEADER).as_deref(),
            "the body and the header carry the same code"
        );
        (
            response.status().as_u16(),
            header(ERROR_HEADER).unwrap_or_default(),
            header(http::header::RETRY_AFTER.as_str()),
            body["error"]["message"].as_str().unwrap_or_default().into(),
        )
    }

    #[test]
    fn every_error_maps_to_one_status_and_code() {
        let m = || "m".to_string();
        let cases: Vec<(Error, u16, &str)> = vec![
            (Error::InvalidName(m()), 400, "invalid_name"),
            (Error::InvalidConfig(m()), 400, "invalid_config"),
            (Error::InvalidStore(m()), 400, "invalid_store"),
            (Error::InvalidRequest(m()), 400, "invalid_request"),
            (Error::InvalidCallback(m()), 400, "invalid_callback"),
            (Error::UnsupportedModule(m()), 400, "unsupported_module"),
            (CompileError::Invalid(m()).into(), 400, "invalid_module"),
            (
                CompileError::Unsupported(m()).into(),
                400,
                "unsupported_module",
            ),
            (Error::NotFound(m()), 404, "not_found"),
            (StoreError::NotFound(m()).into(), 404, "not_found"),
            (Error::Unauthorized(m()), 401, "unauthorized"),
            (Error::CrossSite(m()), 403, "cross_site"),
            (Error::IdTaken(m()), 409, "id_taken"),
            (
                StoreError::RouteTaken {
                    route: "/x".into(),
                    owner: "a".into(),
                }
                .into(),
                409,
                "route_taken",
            ),
            (Error::TooLarge(m()), 413, "payload_too_large"),
            (StoreError::NoSpace(m()).into(), 507, "insufficient_storage"),
            (
                StoreError::from(std::io::Error::from(std::io::ErrorKind::StorageFull)).into(),
                507,
                "insufficient_storage",
            ),
            (
                StoreError::Full {
                    store: "s".into(),
                    would: 2,
                    limit: 1,
                }
                .into(),
                413,
                "payload_too_large",
            ),
            (StoreError::NotANumber(m()).into(), 400, "not_a_number"),
            (Error::UriTooLong(m()), 414, "uri_too_long"),
            (Error::HeadersTooLarge(m()), 431, "headers_too_large"),
            (
                Error::UnsupportedMediaType(m()),
                415,
                "unsupported_media_type",
            ),
            (Error::MethodNotAllowed, 405, "method_not_allowed"),
            (Error::ConcurrencyLimit(m()), 429, "concurrency_limit"),
            (Error::QueueFull(m()), 429, "queue_full"),
            (Error::KeyReused(m()), 422, "idempotency_key_reused"),
            (Error::NotRetryable(m()), 409, "not_retryable"),
            (Error::Expired(m()), 410, "expired"),
            (Error::AtCapacity(m()), 503, "at_capacity"),
            (Error::Unavailable(m()), 503, "unavailable"),
            (StoreError::Unavailable(m()).into(), 503, "unavailable"),
            (StoreError::Database(m()).into(), 500, "internal"),
            (
                StoreError::NewerSchema { found: 2, known: 1 }.into(),
                500,
                "internal",
            ),
            (InvokeError::Trap(m()).into(), 500, "trap"),
            (
                InvokeError::Timeout(std::time::Duration::from_secs(1)).into(),
                504,
                "timeout",
            ),
            (
                InvokeError::MemoryLimit(1 << 20).into(),
                500,
                "memory_limit",
            ),
            (InvokeError::FuelExhausted(1).into(), 500, "fuel_exhausted"),
            (InvokeError::BadResponse(m()).into(), 502, "bad_response"),
            (InvokeError::Failed(m()).into(), 500, "function_failed"),
            (InvokeError::Busy(m()).into(), 503, "busy"),
            (InvokeError::Internal(m()).into(), 500, "internal"),
            (StoreError::Corrupt(m()).into(), 500, "internal"),
            (
                ContainerError::InvalidImage(m()).into(),
                400,
                "invalid_image",
            ),
            (
                ContainerError::Daemon(m()).into(),
                503,
                "containerd_unavailable",
            ),
            (
                ContainerError::Registry(m()).into(),
                502,
                "registry_unavailable",
            ),
            (
                ContainerError::Timeout(std::time::Duration::from_secs(1)).into(),
                504,
                "timeout",
            ),
            (
                ContainerError::Io(std::io::Error::other("disk")).into(),
                500,
                "internal",
            ),
            (Error::Internal(m()), 500, "internal"),
        ];
        for (error, status, code) in cases {
            let described = error.describe();
            let (got_status, got_code, retry_after, _) = answer(error);
            assert_eq!(
                (got_status, got_code.as_str()),
                (status, code),
                "{described}"
            );
            assert!(described.starts_with(&format!("{code}: ")), "{described}");
            // Every load-shedding answer says when to come back, and nothing else does.
            let sheds = status == 429 || status == 503;
            assert_eq!(retry_after.as_deref(), sheds.then_some("1"), "{described}");
        }
    }

    #[test]
    fn messages_say_what_was_not_found_and_401_asks_for_the_bearer_token() {
        let (_, _, _, message) = answer(StoreError::NotFound("function `f`".into()).into());
        assert_eq!(message, "function `f` does not exist");
        let response = Error::Unauthorized("no".into()).response();
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
}
