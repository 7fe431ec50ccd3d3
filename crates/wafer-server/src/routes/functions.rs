//! Functions under `/v1/functions`: deploy, list, get, delete, versions and rollback (the `live`
//! alias; the others are in `aliases.rs`).

use super::extract::{Path, Query};
use super::read_body;
use crate::app::{App, Upload};
use crate::auth::{Caller, Permission};
use crate::error::Error;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
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
use wafer_formats::multipart::{self, DeployCaps, Form};
use wafer_store::FunctionVariables;

/// The parts of a multipart deploy, as the API's description shows them.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeployForm {
    /// The wasm binary, up to the server's --max-module.
    #[schema(value_type = Option<String>, format = Binary)]
    module: Vec<u8>,
    /// A tar of regular files and directories the instances see read-only as `/`.
    #[schema(value_type = Option<String>, format = Binary)]
    files: Vec<u8>,
    /// A container image as an OCI-layout or docker-archive tarball, up to --max-image.
    #[schema(value_type = Option<String>, format = Binary)]
    image: Vec<u8>,
    /// The version's configuration.
    #[schema(required = false)]
    config: FunctionConfig,
    /// Added to the function's configuration.
    #[schema(required = false)]
    variables: ConfigUpdate,
}

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
#[utoipa::path(post, path = "/v1/functions/{name}/versions", operation_id = "deployVersion", tag = "functions",
    params(("name" = String, Path, description = "The function's name"), DeployQuery),
    request_body(description = "multipart/form-data with a `module` part (the wasm binary, up to the \
        server's --max-module), an optional `files` part (a tar of regular files and directories, up to \
        --max-module, that the function's instances see read-only as `/`), or an `image` part (a container image as an OCI-layout or docker-archive \
        tarball, up to --max-image), an optional `config` part (FunctionConfig as JSON; a container \
        function whose config names an `oci://` image needs no `image` part) and an optional `variables` \
        part (ConfigUpdate as JSON, added to the function's configuration); or the raw module as \
        application/wasm, or a raw image tarball as application/x-tar",
        content((DeployForm = "multipart/form-data"), (Vec<u8> = "application/wasm"),
            (Vec<u8> = "application/x-tar"))),
    responses((status = 201, body = VersionInfo, links(
            ("function" = (operation_id = "getFunction",
                parameters(("name" = "$response.body#/function")),
                description = "The function, with its live version")),
            ("versions" = (operation_id = "listVersions",
                parameters(("name" = "$response.body#/function")))),
            ("call" = (operation_id = "invoke",
                parameters(("name" = "$response.body#/function"),
                    ("qualifier" = "$response.body#/version")),
                description = "A call of exactly this version")),
            ("rollback" = (operation_id = "rollback",
                parameters(("name" = "$response.body#/function")),
                request_body = json!({"version": "$response.body#/version"}),
                description = "Makes this version live again later")))),
        (status = 400, body = ErrorBody),
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
    let content_type = content_type(&request).to_ascii_lowercase();
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

/// A deploy's parts: the module (or image), the files bundle, the config and the variables.
type Parts = (Bytes, Option<Bytes>, FunctionConfig, ConfigUpdate);

/// The request's `Content-Type`, as sent (empty when it has none).
fn content_type(request: &Request) -> String {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The multipart form in `request`, refused past `total_cap` bytes. The boundary is read from the
/// `Content-Type` as sent: it is case-sensitive.
pub(super) fn form(request: Request, total_cap: usize) -> Result<Form<'static>, Error> {
    let content_type = content_type(&request);
    Form::new(
        request.into_body().into_data_stream(),
        &content_type,
        total_cap,
    )
    .map_err(Error::from)
}

/// Reads the `module` (or `image`), `files`, `config` and `variables` parts of a multipart deploy
/// (`wafer_formats::multipart::deploy`).
async fn read_multipart(request: Request, caps: Caps) -> Result<Parts, Error> {
    let total = caps.module.max(caps.image).saturating_add(FORM_OVERHEAD);
    let caps = DeployCaps {
        module: caps.module,
        image: caps.image,
        config: CONFIG_CAP,
    };
    let read = multipart::deploy(form(request, total)?, caps).await?;
    Ok((read.body, read.files, read.config, read.variables))
}

/// What a deploy's body may hold besides its largest part: the small parts and the form's framing.
pub(super) const FORM_OVERHEAD: usize = 1 << 20;

/// The largest `config` or `variables` part.
pub(super) const CONFIG_CAP: usize = 4 << 20;

/// `GET /v1/functions`: the functions the caller may read.
#[utoipa::path(get, path = "/v1/functions", operation_id = "listFunctions", tag = "functions",
    responses((status = 200, body = FunctionList)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<FunctionList>, Error> {
    let functions = app.meta.list_functions().await?;
    Ok(Json(FunctionList {
        functions: functions
            .iter()
            .filter(|f| caller.allows(Permission::Read, Some(&f.live.name)))
            .map(|f| app.info(f))
            .collect(),
    }))
}

/// `GET /v1/functions/{name}`.
#[utoipa::path(get, path = "/v1/functions/{name}", operation_id = "getFunction", tag = "functions",
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
#[utoipa::path(delete, path = "/v1/functions/{name}", operation_id = "deleteFunction", tag = "functions",
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
#[utoipa::path(get, path = "/v1/functions/{name}/versions", operation_id = "listVersions", tag = "functions",
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
#[utoipa::path(post, path = "/v1/functions/{name}/rollback", operation_id = "rollback", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    request_body = RollbackRequest,
    responses((status = 200, body = FunctionInfo), (status = 404, body = ErrorBody)))]
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<FunctionInfo>, Error> {
    let request: RollbackRequest = wafer_formats::json::object(&body)
        .map_err(|e| Error::InvalidRequest(format!("the body must be {{\"version\": N}}: {e}")))?;
    let function = app.rollback(&name, request.version).await?;
    Ok(Json(app.info(&function)))
}
