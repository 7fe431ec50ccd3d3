//! The AWS Lambda Invoke API over wafer's functions, so Lambda clients (the AWS SDKs, the AWS CLI) call
//! them unchanged: what a `FunctionName` names, the invocation types, how a function's answer becomes
//! Lambda's (`X-Amz-Function-Error`, `X-Amz-Executed-Version`, the log tail), Lambda's error shapes,
//! and who may call (a SigV4 signature with the server's AWS keys, or the wafer token). The routes are
//! in `routes/lambda.rs`; a call goes through the invocation core like any other.

pub mod sigv4;

use crate::error::Error;
use base64::Engine;
use http::StatusCode;
use wafer_api::FunctionInfo;
use wafer_store::NewLog;

/// The account id wafer's ARNs carry: there is no account.
pub const ACCOUNT: &str = "000000000000";

/// The region wafer's ARNs carry when a request names none.
pub const REGION: &str = "us-east-1";

/// The most of an execution's log `X-Amz-Log-Result` carries, as Lambda does.
const TAIL_BYTES: usize = 4096;

/// What a `FunctionName` names: `NAME`, `NAME:QUALIFIER`, or
/// `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionName {
    /// The function.
    pub name: String,
    /// An alias or version.
    pub qualifier: Option<String>,
}

impl FunctionName {
    /// Parses a `FunctionName` path parameter.
    pub fn parse(raw: &str) -> Result<Self, LambdaError> {
        let rest = match raw.strip_prefix("arn:") {
            Some(arn) => {
                let parts: Vec<&str> = arn.splitn(6, ':').collect();
                match parts.as_slice() {
                    [_partition, "lambda", _region, _account, function] => {
                        function.strip_prefix("function:").ok_or_else(|| {
                            LambdaError::invalid(format!("{raw:?} is no function ARN"))
                        })?
                    }
                    [_partition, "lambda", _region, _account, "function", name] => name,
                    _ => return Err(LambdaError::invalid(format!("{raw:?} is no function ARN"))),
                }
            }
            None => raw,
        };
        let (name, qualifier) = match rest.split_once(':') {
            Some((name, qualifier)) => (name, Some(qualifier.to_string())),
            None => (rest, None),
        };
        if name.is_empty() || qualifier.as_deref() == Some("") {
            return Err(LambdaError::invalid(format!("{raw:?} names no function")));
        }
        Ok(Self {
            name: name.to_string(),
            qualifier,
        })
    }
}

/// `X-Amz-Invocation-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    /// Run it and answer with its payload (the default).
    RequestResponse,
    /// Queue it and answer 202.
    Event,
    /// Check that it could be called, and answer 204.
    DryRun,
}

impl InvocationType {
    /// Parses the header's value (absent: `RequestResponse`).
    pub fn parse(value: Option<&str>) -> Result<Self, LambdaError> {
        match value {
            None | Some("RequestResponse") => Ok(Self::RequestResponse),
            Some("Event") => Ok(Self::Event),
            Some("DryRun") => Ok(Self::DryRun),
            Some(other) => Err(LambdaError::invalid(format!(
                "X-Amz-Invocation-Type {other:?} is not RequestResponse, Event or DryRun"
            ))),
        }
    }
}

/// The last 4 KB of an execution's log lines, base64, as `X-Amz-Log-Result` carries them.
pub fn log_tail(logs: &[NewLog]) -> String {
    let mut text = String::new();
    for log in logs {
        text.push_str(&log.line);
        text.push('\n');
    }
    let bytes = text.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(TAIL_BYTES)..];
    base64::engine::general_purpose::STANDARD.encode(tail)
}

/// The payload of a function error: Lambda's `{"errorMessage", "errorType"}`.
pub fn error_payload(message: &str, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "errorMessage": message, "errorType": kind }))
        .unwrap_or_default()
}

/// A function's configuration as Lambda's `FunctionConfiguration`.
pub fn configuration(info: &FunctionInfo) -> serde_json::Value {
    let arn = format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}", info.name);
    let code_sha256 = (0..info.digest.len() / 2)
        .filter_map(|i| u8::from_str_radix(info.digest.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Vec<u8>>();
    serde_json::json!({
        "FunctionName": info.name,
        "FunctionArn": arn,
        "Runtime": format!("wasm-{}", info.kind),
        "Handler": info.kind.as_str(),
        "Version": info.live_version.to_string(),
        "CodeSha256": base64::engine::general_purpose::STANDARD.encode(code_sha256),
        "MemorySize": info.limits.memory_mb,
        "Timeout": info.limits.timeout_ms.div_ceil(1000),
        "LastModified": info.updated_at,
        "PackageType": "Zip",
        "State": "Active",
        "Description": format!("wafer {} function, live version {}", info.kind, info.live_version),
    })
}

/// An error in Lambda's shape: a status, the type clients read from `x-amzn-ErrorType`, and a
/// message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Lambda's error type (`ResourceNotFoundException` …).
    pub kind: &'static str,
    /// What went wrong.
    pub message: String,
}

impl LambdaError {
    /// A parameter Lambda would call invalid.
    pub fn invalid(message: String) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            kind: "InvalidParameterValueException",
            message,
        }
    }

    /// No function `name`.
    pub fn not_found(name: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            kind: "ResourceNotFoundException",
            message: format!(
                "Function not found: arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
            ),
        }
    }

    /// A refused caller.
    pub fn denied(kind: &'static str, message: String) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            kind,
            message,
        }
    }

    /// The body: `{"Type": "User"|"Service", "message": …}`.
    pub fn body(&self) -> Vec<u8> {
        let side = if self.status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        serde_json::to_vec(&serde_json::json!({ "Type": side, "message": self.message }))
            .unwrap_or_default()
    }
}

impl From<Error> for LambdaError {
    fn from(error: Error) -> Self {
        let status = error.status();
        let kind = match status {
            StatusCode::NOT_FOUND => "ResourceNotFoundException",
            StatusCode::PAYLOAD_TOO_LARGE => "RequestTooLargeException",
            StatusCode::TOO_MANY_REQUESTS => "TooManyRequestsException",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "AccessDeniedException",
            s if s.is_client_error() => "InvalidParameterValueException",
            _ => "ServiceException",
        };
        let status = match status {
            StatusCode::UNAUTHORIZED => StatusCode::FORBIDDEN,
            s if s.is_client_error() => s,
            StatusCode::SERVICE_UNAVAILABLE => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            kind,
            message: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_name_may_be_a_name_a_qualified_name_or_an_arn() {
        let parse = |s| FunctionName::parse(s).map(|f| (f.name, f.qualifier));
        assert_eq!(parse("hello"), Ok(("hello".into(), None)));
        assert_eq!(
            parse("hello:beta"),
            Ok(("hello".into(), Some("beta".into())))
        );
        assert_eq!(
            parse("arn:aws:lambda:eu-west-1:123456789012:function:hello"),
            Ok(("hello".into(), None))
        );
        assert_eq!(
            parse("arn:aws:lambda:eu-west-1:123456789012:function:hello:3"),
            Ok(("hello".into(), Some("3".into())))
        );
        assert!(parse("arn:aws:s3:::bucket").is_err());
        assert!(parse("hello:").is_err());
    }

    #[test]
    fn the_log_tail_is_the_last_four_kilobytes_in_base64() {
        let line = |l: &str| NewLog {
            stream: "stderr",
            level: wafer_api::LogLevel::Info,
            line: l.into(),
        };
        let decoded = |s: String| base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(decoded(log_tail(&[line("a"), line("b")])), b"a\nb\n");
        let long = "x".repeat(5000);
        assert_eq!(decoded(log_tail(&[line(&long), line("end")])).len(), 4096);
    }
}
