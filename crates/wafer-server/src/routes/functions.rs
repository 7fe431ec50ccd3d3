//! Functions under `/v1/functions`: deploy, list, get, delete, versions and rollback.

use super::read_body;
use crate::app::App;
use crate::error::Error;
use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::StatusCode;
use std::sync::Arc;
use wafer_api::{
    ConfigUpdate, ErrorBody, FunctionConfig, FunctionInfo, FunctionList, RollbackRequest,
    VersionInfo, VersionList,
};
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
) -> Result<Response, Error> {
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
        let module = read_body(request.into_body(), limit, "the module").await?;
        (module, FunctionConfig::default(), ConfigUpdate::default())
    } else {
        return Err(Error::UnsupportedMediaType(format!(
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
async fn read_multipart(request: Request) -> Result<(Bytes, FunctionConfig, ConfigUpdate), Error> {
    let part_error = |e: MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::TooLarge(e.body_text())
        } else {
            Error::InvalidRequest(format!("malformed multipart body: {}", e.body_text()))
        }
    };
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| Error::InvalidRequest(e.body_text()))?;
    let (mut module, mut config, mut variables) = (None, None, None);
    while let Some(field) = multipart.next_field().await.map_err(part_error)? {
        match field.name().unwrap_or_default() {
            "module" if module.is_none() => module = Some(field.bytes().await.map_err(part_error)?),
            "config" if config.is_none() => {
                let bytes = field.bytes().await.map_err(part_error)?;
                config = Some(serde_json::from_slice::<FunctionConfig>(&bytes).map_err(|e| {
                    Error::InvalidConfig(format!("the config part is not valid: {e}"))
                })?);
            }
            "variables" if variables.is_none() => {
                let bytes = field.bytes().await.map_err(part_error)?;
                variables = Some(serde_json::from_slice::<ConfigUpdate>(&bytes).map_err(|e| {
                    Error::InvalidConfig(format!("the variables part is not valid: {e}"))
                })?);
            }
            other => {
                return Err(Error::InvalidRequest(format!(
                    "unexpected or repeated multipart part {other:?}: send one `module` and at most one `config` and one `variables`"
                )))
            }
        }
    }
    let module = module
        .ok_or_else(|| Error::InvalidRequest("the multipart body has no `module` part".into()))?;
    Ok((
        module,
        config.unwrap_or_default(),
        variables.unwrap_or_default(),
    ))
}

/// `GET /v1/functions`.
#[utoipa::path(get, path = "/v1/functions", tag = "functions",
    responses((status = 200, body = FunctionList)))]
pub async fn list(State(app): State<Arc<App>>) -> Result<Json<FunctionList>, Error> {
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
) -> Result<Json<FunctionInfo>, Error> {
    app.meta
        .get_function(&name)
        .await?
        .map(|f| Json(app.info(&f)))
        .ok_or_else(|| Error::unknown_function(&name))
}

/// `DELETE /v1/functions/{name}`.
#[utoipa::path(delete, path = "/v1/functions/{name}", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 204, description = "Deleted with every version"), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, Error> {
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
) -> Result<Json<VersionList>, Error> {
    let function = app
        .meta
        .get_function(&name)
        .await?
        .ok_or_else(|| Error::unknown_function(&name))?;
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
) -> Result<Json<FunctionInfo>, Error> {
    let request: RollbackRequest = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidRequest(format!("the body must be {{\"version\": N}}: {e}")))?;
    let function = app.rollback(&name, request.version).await?;
    Ok(Json(app.info(&function)))
}
