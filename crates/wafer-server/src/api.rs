//! The management API under `/v1`: deploy, list, get, delete, versions, rollback and sync invoke.

use crate::app::App;
use crate::error::ApiError;
use crate::trigger;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::StatusCode;
use std::sync::Arc;
use wafer_api::{FunctionConfig, FunctionInfo, FunctionList, RollbackRequest, VersionList};
use wafer_engine::Mount;

/// `POST /v1/functions/{name}/versions`: multipart (`module`, optional `config`) or a raw wasm body.
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
    let (module, config) = if content_type.starts_with("multipart/form-data") {
        read_multipart(request).await?
    } else if content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream")
    {
        let module = trigger::read_body(request.into_body(), limit, "the module").await?;
        (module, FunctionConfig::default())
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
    let function = app.deploy(&name, module, config).await?;
    Ok((StatusCode::CREATED, Json(function.live.to_info(true))).into_response())
}

/// Reads the `module` and `config` parts of a multipart deploy.
async fn read_multipart(request: Request) -> Result<(Bytes, FunctionConfig), ApiError> {
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
    let (mut module, mut config) = (None, None);
    while let Some(field) = multipart.next_field().await.map_err(part_error)? {
        match field.name().unwrap_or_default() {
            "module" if module.is_none() => module = Some(field.bytes().await.map_err(part_error)?),
            "config" if config.is_none() => {
                let bytes = field.bytes().await.map_err(part_error)?;
                config = Some(serde_json::from_slice::<FunctionConfig>(&bytes).map_err(|e| {
                    ApiError::bad_request("invalid_config", format!("the config part is not valid: {e}"))
                })?);
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("unexpected or repeated multipart part {other:?}: send one `module` and at most one `config`"),
                ))
            }
        }
    }
    let module = module.ok_or_else(|| {
        ApiError::bad_request("invalid_request", "the multipart body has no `module` part")
    })?;
    Ok((module, config.unwrap_or_default()))
}

/// `GET /v1/functions`.
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<FunctionList>, ApiError> {
    let functions = app.meta.list_functions().await?;
    Ok(Json(FunctionList {
        functions: functions.iter().map(|f| app.info(f)).collect(),
    }))
}

/// `GET /v1/functions/{name}`.
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
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.delete(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/functions/{name}/versions`.
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

/// `POST /v1/functions/{name}/invoke`: calls the live version synchronously. A command answers with its
/// exit code and output as JSON; an http or wagi function answers with its own response.
pub async fn invoke(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let entry = app.registry.get(&name).ok_or_else(|| unknown(&name))?;
    let mount = Mount {
        prefix: format!("/v1/functions/{name}/invoke"),
        strip_prefix: true,
        client: trigger::client_addr(&request),
    };
    trigger::call(&app, &entry, mount, request).await
}

fn unknown(name: &str) -> ApiError {
    ApiError::not_found(format!("function `{name}` does not exist"))
}
