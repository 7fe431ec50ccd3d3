//! The errors this crate hands to its callers: one enum for deploy time, one for invocation time.

use std::time::Duration;

/// Why a binary was refused at deploy. Every variant is the deployer's to fix.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The bytes are not a valid WebAssembly module or component.
    #[error("not a valid WebAssembly binary: {0}")]
    Invalid(String),
    /// The binary is valid but fits no function kind (or not the forced one).
    #[error("{0}")]
    Unsupported(String),
}

/// Why an invocation failed. Each variant ends that invocation only.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow, a panic, …).
    #[error("the function trapped: {0}")]
    Trap(String),
    /// The guest ran past its deadline and was stopped.
    #[error("the function did not finish within {}ms", .0.as_millis())]
    Timeout(Duration),
    /// The guest asked for more memory than it is allowed.
    #[error("the function exceeded its memory limit of {} MiB", .0 / (1024 * 1024))]
    MemoryLimit(u64),
    /// The guest ran out of fuel.
    #[error("the function used up its fuel of {0}")]
    FuelExhausted(u64),
    /// The guest finished but its answer is not a valid response (e.g. malformed CGI output).
    #[error("the function returned an invalid response: {0}")]
    BadResponse(String),
    /// The guest exited without producing a response.
    #[error("the function failed: {0}")]
    Failed(String),
    /// The host had no room for another instance right now (the pooling allocator's slots are taken).
    #[error("no instance slot is free: {0}")]
    Busy(String),
    /// The host failed to run the guest.
    #[error("internal error running the function: {0}")]
    Internal(String),
}

impl InvokeError {
    /// The HTTP status a caller gets for this failure, and the error code that names it.
    pub fn status(&self) -> (http::StatusCode, &'static str) {
        use http::StatusCode;
        match self {
            Self::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, "trap"),
            Self::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Self::MemoryLimit(_) => (StatusCode::INTERNAL_SERVER_ERROR, "memory_limit"),
            Self::FuelExhausted(_) => (StatusCode::INTERNAL_SERVER_ERROR, "fuel_exhausted"),
            Self::BadResponse(_) => (StatusCode::BAD_GATEWAY, "bad_response"),
            Self::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "function_failed"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

/// Renders a wasmtime error with its whole chain of causes on one line.
pub(crate) fn describe(err: &wasmtime::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if !text.is_empty() {
            if text.contains(&cause) {
                continue;
            }
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
