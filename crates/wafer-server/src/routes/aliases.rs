//! Aliases under `/v1/functions/{name}/aliases`: list, get, set (with weights) and remove.

use super::extract::Path;
use crate::app::App;
use crate::error::Error;
use axum::extract::State;
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use std::sync::Arc;
use wafer_api::{Alias, AliasInfo, AliasList, ErrorBody};

/// `GET /v1/functions/{name}/aliases`.
#[utoipa::path(get, path = "/v1/functions/{name}/aliases", operation_id = "listAliases", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, body = AliasList), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<AliasList>, Error> {
    let function = app
        .meta
        .get_function(&name)
        .await?
        .ok_or_else(|| Error::unknown_function(&name))?;
    Ok(Json(AliasList {
        aliases: function
            .aliases
            .iter()
            .map(|(alias, target)| AliasInfo::new(alias, target))
            .collect(),
    }))
}

/// `GET /v1/functions/{name}/aliases/{alias}`: where the alias sends calls (`live`: the live version
/// and its weights).
#[utoipa::path(get, path = "/v1/functions/{name}/aliases/{alias}", operation_id = "getAlias", tag = "functions",
    params(("name" = String, Path, description = "The function's name"),
        ("alias" = String, Path, description = "The alias")),
    responses((status = 200, body = AliasInfo), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Json<AliasInfo>, Error> {
    let function = app
        .meta
        .get_function(&name)
        .await?
        .ok_or_else(|| Error::unknown_function(&name))?;
    function
        .aliases
        .get(&alias)
        .map(|target| Json(AliasInfo::new(&alias, target)))
        .ok_or_else(|| Error::NotFound(format!("function `{name}` has no alias `{alias}`")))
}

/// `PUT /v1/functions/{name}/aliases/{alias}` with `{"version": 3, "weights": {"4": 0.1}}`: creates or
/// moves the alias. Setting `live` moves the live version (and the routes) and its canary weight.
#[utoipa::path(put, path = "/v1/functions/{name}/aliases/{alias}", operation_id = "putAlias", tag = "functions",
    params(("name" = String, Path, description = "The function's name"),
        ("alias" = String, Path, description = "The alias: a name, not a number")),
    request_body = Alias,
    responses((status = 200, body = AliasInfo), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "No such function or version"),
        (status = 409, body = ErrorBody, description = "Moving `live` would mount a route another \
            function holds")))]
pub async fn put(
    State(app): State<Arc<App>>,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<AliasInfo>, Error> {
    let target: Alias = wafer_formats::json::object(&body).map_err(|e| {
        Error::InvalidRequest(format!(
            "the body must be {{\"version\": N, \"weights\": {{\"M\": 0.1}}}}: {e}"
        ))
    })?;
    let function = app.set_alias(&name, &alias, target).await?;
    let target = function
        .aliases
        .get(&alias)
        .ok_or_else(|| Error::Internal("the alias set is not stored".into()))?;
    Ok(Json(AliasInfo::new(&alias, target)))
}

/// `DELETE /v1/functions/{name}/aliases/{alias}` (never `live`).
#[utoipa::path(delete, path = "/v1/functions/{name}/aliases/{alias}", operation_id = "deleteAlias", tag = "functions",
    params(("name" = String, Path, description = "The function's name"),
        ("alias" = String, Path, description = "The alias")),
    responses((status = 204, description = "Removed"),
        (status = 400, body = ErrorBody, description = "The alias is `live`, or not an alias name"),
        (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(app): State<Arc<App>>,
    Path((name, alias)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    app.delete_alias(&name, &alias).await?;
    Ok(StatusCode::NO_CONTENT)
}
