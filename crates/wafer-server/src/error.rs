//! The one place where every failure becomes an HTTP status and a stable `code`.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use wafer_api::ErrorBody;
use wafer_engine::{CompileError, InvokeError};
use wafer_store::StoreError;

/// The header on every error answer of wafer's own, carrying its code; a function's own failing responses
/// never have it, so clients can tell the two apart.
pub const ERROR_HEADER: &str = "x-wafer-error";

/// An error answer of the API or of a function call.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds after which a retry may succeed (`Retry-After`), for load-shedding answers.
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request is malformed; `code` names what.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 for an unknown function, version or path.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401: the request lacks the server's token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 409: the request conflicts with what is deployed; `code` names how.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 405 for a known path with the wrong method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this path does not accept that method",
        )
    }

    /// 413: a body is over its cap.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 414: the request target is too long.
    pub fn uri_too_long(message: impl Into<String>) -> Self {
        Self::new(StatusCode::URI_TOO_LONG, "uri_too_long", message)
    }

    /// 431: the request headers are too large.
    pub fn headers_too_large(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            message,
        )
    }

    /// 415: a body of a type this endpoint does not take.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 429: the function is at its concurrency limit; retry after a second.
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "concurrency_limit", message)
        }
    }

    /// 503: the server is at its instance limit; retry after a second.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "at_capacity", message)
        }
    }

    /// 500: something failed on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// `code: message`, as an execution record keeps it.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

impl From<CompileError> for ApiError {
    fn from(err: CompileError) -> Self {
        let code = match err {
            CompileError::Invalid(_) => "invalid_module",
            CompileError::Unsupported(_) => "unsupported_module",
        };
        Self::new(StatusCode::BAD_REQUEST, code, err.to_string())
    }
}

impl From<InvokeError> for ApiError {
    fn from(err: InvokeError) -> Self {
        let (status, code) = err.status();
        Self::new(status, code, err.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => Self::not_found(format!("{what} does not exist")),
            StoreError::RouteTaken { .. } => {
                Self::new(StatusCode::CONFLICT, "route_taken", err.to_string())
            }
            StoreError::Full { .. } => Self::too_large(err.to_string()),
            StoreError::NotANumber(_) => Self::bad_request("not_a_number", err.to_string()),
            other => {
                tracing::error!("store failure: {other}");
                Self::internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, "{}", self.message);
        }
        let mut response = (
            self.status,
            [(ERROR_HEADER, self.code)],
            Json(ErrorBody::new(self.code, self.message)),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
