//! The management API under `/v1`: deploy, list, get, delete, versions, rollback and invoke (sync or
//! async). The execution endpoints are in `executions.rs`.

use crate::app::App;
use crate::error::ApiError;
use crate::queue;
use crate::trigger;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use wafer_api::{
    AsyncAccepted, CommandOutput, ConfigUpdate, ErrorBody, FunctionConfig, FunctionInfo,
    FunctionList, RollbackRequest, Trigger, VersionInfo, VersionList,
};
use wafer_engine::Mount;
use wafer_store::FunctionVariables;

/// `POST /v1/functions/{name}/versions`: multipart (`module`, optional `config`) or a raw wasm body.
#[utoipa::path(post, path = "/v1/functions/{name}/versions", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    request_body(description = "multipart/form-data with a `module` part (the wasm binary) and an optional \
        `config` part (FunctionConfig as JSON) and an optional `variables` part (ConfigUpdate as JSON, added to \
        the function's configuration), or the raw module as application/wasm",
        content((Vec<u8> = "multipart/form-data"), (Vec<u8> = "application/wasm"))),
    responses((status = 201, body = VersionInfo), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
pub async fn deploy(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let limit = app.config.defaults.max_module_bytes;
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (module, config, variables) = if content_type.starts_with("multipart/form-data") {
        read_multipart(request).await?
    } else if content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream")
    {
        let module = trigger::read_body(request.into_body(), limit, "the module").await?;
        (module, FunctionConfig::default(), ConfigUpdate::default())
    } else {
        return Err(ApiError::unsupported_media_type(format!(
            "deploy takes multipart/form-data (parts `module` and optional `config`) or an \
             application/wasm body, not {:?}",
            if content_type.is_empty() {
                "no content type"
            } else {
                &content_type
            }
        )));
    };
    let variables = FunctionVariables {
        variables: variables.variables,
        secrets: variables
            .secrets
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect(),
    };
    let function = app.deploy(&name, module, config, variables).await?;
    Ok((StatusCode::CREATED, Json(function.live.to_info(true))).into_response())
}

/// Reads the `module`, `config` and `variables` parts of a multipart deploy.
async fn read_multipart(
    request: Request,
) -> Result<(Bytes, FunctionConfig, ConfigUpdate), ApiError> {
    let part_error = |e: MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(e.body_text())
        } else {
            ApiError::bad_request(
                "invalid_request",
                format!("malformed multipart body: {}", e.body_text()),
            )
        }
    };
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request("invalid_request", e.body_text()))?;
    let (mut module, mut config, mut variables) = (None, None, None);
    while let Some(field) = multipart.next_field().await.map_err(part_error)? {
        match field.name().unwrap_or_default() {
            "module" if module.is_none() => module = Some(field.bytes().await.map_err(part_error)?),
            "config" if config.is_none() => {
                let bytes = field.bytes().await.map_err(part_error)?;
                config = Some(serde_json::from_slice::<FunctionConfig>(&bytes).map_err(|e| {
                    ApiError::bad_request("invalid_config", format!("the config part is not valid: {e}"))
                })?);
            }
            "variables" if variables.is_none() => {
                let bytes = field.bytes().await.map_err(part_error)?;
                variables = Some(serde_json::from_slice::<ConfigUpdate>(&bytes).map_err(|e| {
                    ApiError::bad_request("invalid_config", format!("the variables part is not valid: {e}"))
                })?);
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("unexpected or repeated multipart part {other:?}: send one `module` and at most one `config` and one `variables`"),
                ))
            }
        }
    }
    let module = module.ok_or_else(|| {
        ApiError::bad_request("invalid_request", "the multipart body has no `module` part")
    })?;
    Ok((
        module,
        config.unwrap_or_default(),
        variables.unwrap_or_default(),
    ))
}

/// `GET /v1/functions`.
#[utoipa::path(get, path = "/v1/functions", tag = "functions",
    responses((status = 200, body = FunctionList)))]
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<FunctionList>, ApiError> {
    let functions = app.meta.list_functions().await?;
    Ok(Json(FunctionList {
        functions: functions.iter().map(|f| app.info(f)).collect(),
    }))
}

/// `GET /v1/functions/{name}`.
#[utoipa::path(get, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, body = FunctionInfo), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<FunctionInfo>, ApiError> {
    app.meta
        .get_function(&name)
        .await?
        .map(|f| Json(app.info(&f)))
        .ok_or_else(|| unknown(&name))
}

/// `DELETE /v1/functions/{name}`.
#[utoipa::path(delete, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 204, description = "Deleted with every version"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/functions/{name}/versions`.
#[utoipa::path(get, path = "/v1/functions/{name}/versions", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, body = VersionList), (status = 404, body = ErrorBody)))]
pub async fn versions(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<VersionList>, ApiError> {
    let function = app
        .meta
        .get_function(&name)
        .await?
        .ok_or_else(|| unknown(&name))?;
    let versions = app.meta.list_versions(&name).await?;
    Ok(Json(VersionList {
        versions: versions
            .iter()
            .map(|v| v.to_info(v.version == function.live.version))
            .collect(),
    }))
}

/// `POST /v1/functions/{name}/rollback` with `{"version": N}`.
#[utoipa::path(post, path = "/v1/functions/{name}/rollback", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    request_body = RollbackRequest,
    responses((status = 200, body = FunctionInfo), (status = 404, body = ErrorBody)))]
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<FunctionInfo>, ApiError> {
    let request: RollbackRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_request",
            format!("the body must be {{\"version\": N}}: {e}"),
        )
    })?;
    let function = app.rollback(&name, request.version).await?;
    Ok(Json(app.info(&function)))
}

/// How an invocation through the API runs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvokeQuery {
    /// Store the request and answer 202 at once; a queue worker runs it, with retries.
    #[serde(default, rename = "async")]
    run_async: bool,
    /// With `async=true`: where to POST the finished execution (its host must be allowed).
    callback_url: Option<String>,
}

/// `POST /v1/functions/{name}/invoke`: calls the live version. Synchronously, a command answers with its
/// exit code and output as JSON and an http or wagi function with its own response; with `async=true`
/// the request is stored and 202 names the execution to poll.
#[utoipa::path(post, path = "/v1/functions/{name}/invoke", tag = "invoke",
    params(("name" = String, Path, description = "The function's name"), InvokeQuery),
    request_body(description = "Handed to the function: the HTTP request body, or a command's stdin",
        content((Vec<u8> = "application/octet-stream"))),
    responses(
        (status = 200, description = "The function's own response, or a command's CommandOutput",
         body = CommandOutput),
        (status = 202, body = AsyncAccepted),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn invoke(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<InvokeQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let entry = app.registry.get(&name).ok_or_else(|| unknown(&name))?;
    if query.run_async {
        let accepted = queue::submit(&app, &entry, request, query.callback_url).await?;
        return Ok((StatusCode::ACCEPTED, Json(accepted)).into_response());
    }
    if query.callback_url.is_some() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "callback_url needs async=true",
        ));
    }
    let mount = Mount {
        prefix: format!("/v1/functions/{name}/invoke"),
        strip_prefix: true,
        client: trigger::client_addr(&request),
    };
    trigger::call(&app, &entry, mount, request, Trigger::Api).await
}

fn unknown(name: &str) -> ApiError {
    ApiError::not_found(format!("function `{name}` does not exist"))
}
