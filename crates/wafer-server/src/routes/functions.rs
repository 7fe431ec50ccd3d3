//! Functions under `/v1/functions`: deploy, list, get, delete, versions and rollback (the `live`
//! alias; the others are in `aliases.rs`).

use super::read_body;
use crate::app::{App, Upload};
use crate::error::Error;
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
    ConfigUpdate, ErrorBody, FunctionConfig, FunctionInfo, FunctionList, Kind, RollbackRequest,
    VersionInfo, VersionList,
};
use wafer_store::FunctionVariables;

/// How a deploy treats the live version.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// Make the new version live (default). With `false`, the live version stays and the new one is a
    /// candidate for an alias or a canary weight (a function's first version is live regardless).
    #[serde(default = "promote_by_default")]
    promote: bool,
}

fn promote_by_default() -> bool {
    true
}

/// `POST /v1/functions/{name}/versions`: multipart (`module` or `image`, optional `config` and
/// `variables`), a raw wasm body, or a raw image tarball.
#[utoipa::path(post, path = "/v1/functions/{name}/versions", tag = "functions",
    params(("name" = String, Path, description = "The function's name"), DeployQuery),
    request_body(description = "multipart/form-data with a `module` part (the wasm binary, up to the \
        server's --max-module), an optional `files` part (a tar of regular files and directories, up to \
        --max-module, that the function's instances see read-only as `/`), or an `image` part (a container image as an OCI-layout or docker-archive \
        tarball, up to --max-image), an optional `config` part (FunctionConfig as JSON; a container \
        function whose config names an `oci://` image needs no `image` part) and an optional `variables` \
        part (ConfigUpdate as JSON, added to the function's configuration); or the raw module as \
        application/wasm, or a raw image tarball as application/x-tar",
        content((Vec<u8> = "multipart/form-data"), (Vec<u8> = "application/wasm"),
            (Vec<u8> = "application/x-tar"))),
    responses((status = 201, body = VersionInfo), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 503, body = ErrorBody, description = "A container function, and containerd cannot be reached"),
        (status = 507, body = ErrorBody, description = "No space left to store the module")))]
pub async fn deploy(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<DeployQuery>,
    request: Request,
) -> Result<Response, Error> {
    let caps = Caps {
        module: app.config.defaults.max_module_bytes,
        image: app.config.containers.max_image_bytes,
    };
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let (module, files, config, variables) = if content_type.starts_with("multipart/form-data") {
        read_multipart(request, caps).await?
    } else if content_type.starts_with("application/wasm")
        || content_type.starts_with("application/octet-stream")
    {
        let module = read_body(request.into_body(), caps.module, "the module").await?;
        (
            module,
            None,
            FunctionConfig::default(),
            ConfigUpdate::default(),
        )
    } else if content_type.starts_with("application/x-tar") {
        let image = read_body(request.into_body(), caps.image, "the image").await?;
        let config = FunctionConfig {
            kind: Some(Kind::Container),
            ..FunctionConfig::default()
        };
        (image, None, config, ConfigUpdate::default())
    } else {
        return Err(Error::UnsupportedMediaType(format!(
            "deploy takes multipart/form-data (parts `module` or `image`, and optional `config`), an \
             application/wasm body or an application/x-tar image, not {:?}",
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
    let upload = Upload {
        name: name.clone(),
        module,
        files,
        config,
        variables,
    };
    let (function, version) = app.deploy(upload, query.promote).await?;
    let info = if function.live.version == version {
        function.live.to_info(true)
    } else {
        app.meta
            .list_versions(&name)
            .await?
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| Error::Internal("the deployed version is not stored".into()))?
            .to_info(false)
    };
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// The largest wasm module and the largest image tarball a deploy takes.
#[derive(Clone, Copy)]
struct Caps {
    module: usize,
    image: usize,
}

/// Reads one multipart part, refusing it past `cap` bytes.
pub(super) async fn read_part(
    mut field: axum::extract::multipart::Field<'_>,
    cap: usize,
    what: &str,
) -> Result<Bytes, Error> {
    let mut bytes = bytes::BytesMut::new();
    while let Some(chunk) = field.chunk().await.map_err(part_error)? {
        if bytes.len() + chunk.len() > cap {
            return Err(crate::invoke::too_large(what, cap));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

pub(super) fn part_error(e: MultipartError) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::TooLarge(e.body_text())
    } else {
        Error::InvalidRequest(format!("malformed multipart body: {}", e.body_text()))
    }
}

/// A deploy's parts: the module (or image), the files bundle, the config and the variables.
type Parts = (Bytes, Option<Bytes>, FunctionConfig, ConfigUpdate);

/// Reads the `module` (or `image`), `files`, `config` and `variables` parts of a multipart deploy. An
/// `image` part makes the function a container unless the config says otherwise.
async fn read_multipart(request: Request, caps: Caps) -> Result<Parts, Error> {
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| Error::InvalidRequest(e.body_text()))?;
    let (mut module, mut image, mut config, mut variables) = (None, None, None, None);
    let mut files = None;
    while let Some(field) = multipart.next_field().await.map_err(part_error)? {
        match field.name().unwrap_or_default() {
            "module" if module.is_none() && image.is_none() => {
                module = Some(read_part(field, caps.module, "the module").await?)
            }
            "image" if module.is_none() && image.is_none() => {
                image = Some(read_part(field, caps.image, "the image").await?)
            }
            "files" if files.is_none() => {
                files = Some(read_part(field, caps.module, "the files bundle").await?)
            }
            "config" if config.is_none() => {
                let bytes = read_part(field, CONFIG_CAP, "the config part").await?;
                config = Some(serde_json::from_slice::<FunctionConfig>(&bytes).map_err(|e| {
                    Error::InvalidConfig(format!("the config part is not valid: {e}"))
                })?);
            }
            "variables" if variables.is_none() => {
                let bytes = read_part(field, CONFIG_CAP, "the variables part").await?;
                variables = Some(serde_json::from_slice::<ConfigUpdate>(&bytes).map_err(|e| {
                    Error::InvalidConfig(format!("the variables part is not valid: {e}"))
                })?);
            }
            other => {
                return Err(Error::InvalidRequest(format!(
                    "unexpected or repeated multipart part {other:?}: send one `module` or `image` and \
                     at most one `files`, one `config` and one `variables`"
                )))
            }
        }
    }
    let mut config = config.unwrap_or_default();
    let body =
        match (module, image) {
            (Some(module), None) => module,
            (None, Some(image)) => {
                config.kind.get_or_insert(Kind::Container);
                image
            }
            (None, None) if config.kind == Some(Kind::Container) && config.image.is_some() => {
                Bytes::new()
            }
            _ => return Err(Error::InvalidRequest(
                "the multipart body has no `module` part (nor an `image` part, nor a container \
                 config naming an oci:// image)"
                    .into(),
            )),
        };
    Ok((body, files, config, variables.unwrap_or_default()))
}

/// The largest `config` or `variables` part.
pub(super) const CONFIG_CAP: usize = 4 << 20;

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

/// `POST /v1/functions/{name}/rollback` with `{"version": N}`: moves the `live` alias to version N,
/// without weights.
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
