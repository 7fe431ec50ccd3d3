//! The AWS Lambda Invoke API under `/2015-03-31`: `POST …/functions/{FunctionName}/invocations`
//! (`RequestResponse`, `Event`, `DryRun`), and `GET …/functions` and `GET …/functions/{FunctionName}`,
//! enough for `aws lambda invoke`, `list-functions` and `get-function` and the SDKs' `Invoke`.
//!
//! A caller signs with SigV4 and the server's `--aws-access-key`/`--aws-secret-key` or an API key (its
//! id as the access key id, its secret as the secret access key), or sends the wafer token or an API
//! key as a bearer; a server with none of them takes unsigned calls from its own host. A key may
//! invoke, list and get only the functions its scopes name.
//! The payload is the function's request body, POSTed to its root as JSON; an answer of 400 or more, a
//! trap or a non-zero exit is a function error (`X-Amz-Function-Error: Unhandled`), and every answer
//! names the version that ran (`X-Amz-Executed-Version`).

use super::client_addr;
use super::extract::Path;
use crate::app::App;
use crate::auth::{self, Caller, Permission};
use crate::error::Error;
use crate::invoke::{self, Answer, Ended, Invocation, Invoked};
use crate::lambda::sigv4::{self, Refused};
use crate::lambda::{self, FunctionName, InvocationType, LambdaError};
use crate::queue;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use std::sync::Arc;
use wafer_api::{CommandOutput, Trigger};
use wafer_engine::Mount;

/// The largest payload Lambda takes synchronously, and the largest answer it returns: 6 MB.
const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        let mut response = Response::new(Body::from(self.body()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from(1));
        }
        response
    }
}

/// Who a Lambda API call comes from: a valid SigV4 signature with the server's AWS keys (everything)
/// or an API key's id and secret (what its scopes name); a bearer, as on the management API; or — on
/// a server with neither a token nor AWS keys — a loopback client. Never a browser's cross-site write.
async fn authorize(
    app: &App,
    method: &http::Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
    client: Option<std::net::SocketAddr>,
) -> Result<Caller, LambdaError> {
    auth::check_same_origin(method, headers).map_err(LambdaError::from)?;
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if authorization.starts_with("AWS4-HMAC-SHA256 ") {
        let refused = |refused| match refused {
            Refused::UnknownKey => LambdaError::denied(
                "UnrecognizedClientException",
                "the security token included in the request is invalid".into(),
            ),
            Refused::Invalid(why) | Refused::Malformed(why) => {
                LambdaError::denied("InvalidSignatureException", why)
            }
        };
        let access = sigv4::access_key(headers).map_err(refused)?;
        let verify = |access: &str, secret: &str| {
            let now = chrono::Utc::now().timestamp();
            let (path, query) = (uri.path(), uri.query());
            sigv4::verify(
                (access, secret),
                method.as_str(),
                path,
                query,
                headers,
                body,
                now,
            )
            .map_err(refused)
        };
        if let Some((server_access, secret)) = &app.config.aws_keys {
            if *server_access == access {
                verify(server_access, secret)?;
                return Ok(Caller::Token);
            }
        }
        let key = app.keys.get(&access).await?;
        let Some(key) = key else {
            return Err(LambdaError::denied(
                "UnrecognizedClientException",
                match app.config.aws_keys {
                    Some(_) => "the security token included in the request is invalid".into(),
                    None => format!(
                        "{access} is no API key of this server, and it takes no AWS keys \
                         (--aws-access-key and --aws-secret-key)"
                    ),
                },
            ));
        };
        verify(&key.stored.id, &key.stored.secret)?;
        return auth::admit(key).map_err(LambdaError::from);
    }
    let token = app.config.token.as_deref();
    let signed_only = token.is_none() && app.config.aws_keys.is_some();
    match auth::caller(&app.keys, token, headers, client).await {
        Ok(caller @ (Caller::Token | Caller::Key(_))) => Ok(caller),
        Ok(Caller::Local) if !signed_only => Ok(Caller::Local),
        Err(e @ Error::RateLimited(_)) => Err(e.into()),
        // A server with AWS keys and no token takes signed calls, or the API keys it knows.
        _ if signed_only => Err(LambdaError::denied(
            "MissingAuthenticationTokenException",
            "sign the request with AWS Signature Version 4".into(),
        )),
        Ok(Caller::Anonymous(why)) => Err(LambdaError::denied(
            "AccessDeniedException",
            why.to_string(),
        )),
        Ok(caller) => Ok(caller),
        Err(e) => Err(LambdaError::denied("AccessDeniedException", e.to_string())),
    }
}

/// `POST /2015-03-31/functions/{FunctionName}/invocations`.
#[utoipa::path(post, path = "/2015-03-31/functions/{FunctionName}/invocations", operation_id = "lambdaInvoke", tag = "lambda",
    params(("FunctionName" = String, Path, description = "NAME, NAME:QUALIFIER or a function ARN"),
        ("Qualifier" = Option<String>, Query, description = "An alias or version"),
        ("X-Amz-Invocation-Type" = Option<String>, Header,
            description = "RequestResponse (default), Event (queued: 202) or DryRun (204)"),
        ("X-Amz-Log-Type" = Option<String>, Header,
            description = "Tail: the last 4 KB of the log, base64, in X-Amz-Log-Result")),
    request_body(description = "The payload: the function's request body", content((Vec<u8> = "application/json"))),
    responses((status = 200, description = "The function's answer (X-Amz-Function-Error on a function error)"),
        (status = 202, description = "Queued"), (status = 204, description = "It could be called"),
        (status = "default", description = "Lambda's error shape: x-amzn-ErrorType and {\"Type\", \"message\"}")))]
pub async fn invoke(
    State(app): State<Arc<App>>,
    Path(function): Path<String>,
    request: Request,
) -> Result<Response, LambdaError> {
    let client = client_addr(&request);
    let (parts, body) = request.into_parts();
    let payload = http_body_util::Limited::new(body, MAX_PAYLOAD)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|_| LambdaError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "RequestTooLargeException",
            message: format!("the payload is larger than {MAX_PAYLOAD} bytes"),
        })?;
    let caller = authorize(
        &app,
        &parts.method,
        &parts.uri,
        &parts.headers,
        &payload,
        client,
    )
    .await?;
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let kind = InvocationType::parse(header("x-amz-invocation-type"))?;
    let tail = header("x-amz-log-type") == Some("Tail");
    let mut target = FunctionName::parse(&function)?;
    if let Some(qualifier) = query_value(parts.uri.query(), "Qualifier") {
        target.qualifier = Some(qualifier);
    }
    caller.require(Permission::Invoke, Some(&target.name))?;
    let not_found = || LambdaError::not_found(&target.name);
    let live = app.named(&target.name).await.ok_or_else(not_found)?;
    let entry = app
        .version_for(live, target.qualifier.as_deref())
        .await
        .map_err(|e| match e {
            Error::NotFound(_) => not_found(),
            other => other.into(),
        })?;
    let version = entry.version;
    // The function sees a JSON POST to its root.
    let (mut request_parts, ()) = http::Request::post("/")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(())
        .map_err(|e| LambdaError::from(Error::Internal(e.to_string())))?
        .into_parts();
    // A private function is the caller's to invoke: checked above, for the invocation core to see.
    request_parts.extensions.insert(caller);
    match kind {
        InvocationType::DryRun => Ok(StatusCode::NO_CONTENT.into_response()),
        InvocationType::Event => {
            let submission = queue::Submission {
                callback_url: None,
                qualifier: target.qualifier,
            };
            queue::submit(&app, &entry, &request_parts, payload, submission).await?;
            Ok(StatusCode::ACCEPTED.into_response())
        }
        InvocationType::RequestResponse => {
            let mount = Mount {
                prefix: String::new(),
                strip_prefix: true,
                client,
            };
            let invocation = Invocation::new(entry, request_parts, payload, mount, Trigger::Api);
            let Invoked { id, answer, record } = invoke::run(&app, invocation).await;
            let (ended, payload, error) = match answer {
                Ok(Answer::Http(response, permit)) => {
                    let status = response.status().as_u16();
                    let body = invoke::read_response(response.into_body(), MAX_PAYLOAD).await;
                    drop(permit);
                    match body {
                        Ok(body) if status < 400 => (
                            Ended {
                                http_status: status,
                                ..Ended::default()
                            },
                            body.to_vec(),
                            None,
                        ),
                        Ok(body) => (
                            Ended {
                                http_status: status,
                                ..Ended::default()
                            },
                            lambda::error_payload(
                                &String::from_utf8_lossy(&body),
                                &format!("HTTP{status}"),
                            ),
                            Some("Unhandled"),
                        ),
                        Err(e) => {
                            let error = Error::Invoke(wafer_engine::InvokeError::BadResponse(e));
                            let payload = lambda::error_payload(&error.to_string(), "BadResponse");
                            (Ended::failed(&error), payload, Some("Unhandled"))
                        }
                    }
                }
                Ok(Answer::Command(output)) => command_payload(output),
                Err(error @ Error::Invoke(_)) => {
                    let payload =
                        lambda::error_payload(&error.to_string(), error.status_and_code().1);
                    (Ended::failed(&error), payload, Some("Unhandled"))
                }
                // wafer refused the call (its concurrency, a body cap): Lambda's own error.
                Err(refused) => {
                    let ended = Ended::failed(&refused);
                    invoke::settle(&app, id, Trigger::Api, record, ended, |_| ()).await;
                    return Err(refused.into());
                }
            };
            let log_tail =
                invoke::settle(&app, id.clone(), Trigger::Api, record, ended, |attempt| {
                    tail.then(|| lambda::log_tail(&attempt.logs))
                })
                .await;
            let mut response = Response::new(Body::from(payload));
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert("x-amz-executed-version", HeaderValue::from(version));
            if let Ok(value) = HeaderValue::from_str(&id) {
                headers.insert(invoke::EXECUTION_HEADER, value.clone());
                headers.insert("x-amzn-requestid", value);
            }
            if let Some(error) = error {
                headers.insert("x-amz-function-error", HeaderValue::from_static(error));
            }
            if let Some(value) = log_tail.and_then(|t| HeaderValue::from_str(&t).ok()) {
                headers.insert("x-amz-log-result", value);
            }
            Ok(response)
        }
    }
}

/// A command's job reply as Lambda's payload: its stdout, or — for a non-zero exit — a function error
/// carrying its stderr.
fn command_payload(output: CommandOutput) -> (Ended, Vec<u8>, Option<&'static str>) {
    let ended = Ended {
        http_status: 200,
        exit_code: Some(output.exit_code),
        ..Ended::default()
    };
    if output.exit_code == 0 {
        return (ended, output.stdout.into_bytes(), None);
    }
    let message = format!(
        "exit code {}: {}",
        output.exit_code,
        output.stderr.trim_end()
    );
    (
        ended,
        lambda::error_payload(&message, "ExitCode"),
        Some("Unhandled"),
    )
}

/// The decoded value of query parameter `name`.
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| sigv4::percent_decode(value))
    })
}

/// Who a read of the Lambda API, which has no body, comes from.
async fn authorize_read(app: &App, request: Request) -> Result<Caller, LambdaError> {
    let client = client_addr(&request);
    let (parts, _) = request.into_parts();
    authorize(app, &parts.method, &parts.uri, &parts.headers, b"", client).await
}

/// `GET /2015-03-31/functions`: every function as Lambda's `FunctionConfiguration`.
#[utoipa::path(get, path = "/2015-03-31/functions", operation_id = "lambdaListFunctions", tag = "lambda",
    responses((status = 200, description = "{\"Functions\": [FunctionConfiguration]}"),
        (status = "default", description = "Lambda's error shape")))]
pub async fn list(State(app): State<Arc<App>>, request: Request) -> Result<Response, LambdaError> {
    let caller = authorize_read(&app, request).await?;
    let functions = app.meta.list_functions().await.map_err(Error::from)?;
    let configurations: Vec<_> = functions
        .iter()
        .filter(|f| caller.allows(Permission::Read, Some(&f.live.name)))
        .map(|f| lambda::configuration(&app.info(f)))
        .collect();
    Ok(axum::Json(serde_json::json!({ "Functions": configurations })).into_response())
}

/// `GET /2015-03-31/functions/{FunctionName}`: one function's configuration.
#[utoipa::path(get, path = "/2015-03-31/functions/{FunctionName}", operation_id = "lambdaGetFunction", tag = "lambda",
    params(("FunctionName" = String, Path, description = "NAME or a function ARN")),
    responses((status = 200, description = "{\"Configuration\": FunctionConfiguration, \"Code\": …}"),
        (status = "default", description = "Lambda's error shape")))]
pub async fn get(
    State(app): State<Arc<App>>,
    Path(function): Path<String>,
    request: Request,
) -> Result<Response, LambdaError> {
    let caller = authorize_read(&app, request).await?;
    let target = FunctionName::parse(&function)?;
    caller.require(Permission::Read, Some(&target.name))?;
    let stored = app
        .meta
        .get_function(&target.name)
        .await
        .map_err(Error::from)?
        .ok_or_else(|| LambdaError::not_found(&target.name))?;
    let configuration = lambda::configuration(&app.info(&stored));
    Ok(axum::Json(serde_json::json!({
        "Configuration": configuration,
        "Code": { "RepositoryType": "wafer", "Location": format!("/v1/functions/{}", target.name) },
    }))
    .into_response())
}
