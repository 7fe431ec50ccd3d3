//! The management API of function state: key-value stores under `/v1/kv`, so operators can seed and
//! inspect what functions keep, and each function's configuration under `/v1/functions/{name}/config`
//! (secrets write-only).

use super::extract::{Path, Query};
use super::read_body;
use crate::app::App;
use crate::error::Error;
use crate::platform::KEYS_PER_PAGE;
use crate::validate;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use wafer_api::{ConfigUpdate, ConfigView, ErrorBody, KeyList};
use wafer_store::FunctionVariables;

/// The query of `GET /v1/kv/{store}`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct KeysQuery {
    /// Continue after this key (the `cursor` of the previous page).
    pub cursor: Option<String>,
}

/// `GET /v1/kv/{store}`: the store's keys, a page at a time.
#[utoipa::path(get, path = "/v1/kv/{store}", operation_id = "listKeys", tag = "state",
    params(("store" = String, Path, description = "The key-value store"), KeysQuery),
    responses((status = 200, body = KeyList), (status = 400, body = ErrorBody)))]
pub async fn keys(
    State(app): State<Arc<App>>,
    Path(store): Path<String>,
    Query(query): Query<KeysQuery>,
) -> Result<Json<KeyList>, Error> {
    validate::store_name(&store)?;
    let page = app
        .state
        .kv_keys(&store, query.cursor, KEYS_PER_PAGE)
        .await?;
    Ok(Json(KeyList {
        store,
        keys: page.keys,
        cursor: page.cursor,
    }))
}

/// `GET /v1/kv/{store}/{key}`: the raw value.
#[utoipa::path(get, path = "/v1/kv/{store}/{key}", operation_id = "getValue", tag = "state",
    params(("store" = String, Path, description = "The key-value store"),
        ("key" = String, Path, description = "The key")),
    responses((status = 200, description = "The value", content_type = "application/octet-stream"),
        (status = 404, body = ErrorBody)))]
pub async fn get_value(
    State(app): State<Arc<App>>,
    Path((store, key)): Path<(String, String)>,
) -> Result<Response, Error> {
    validate::store_name(&store)?;
    match app.state.kv_get(&store, &key).await? {
        Some(value) => Ok((
            [(http::header::CONTENT_TYPE, "application/octet-stream")],
            value,
        )
            .into_response()),
        None => Err(Error::NotFound(format!(
            "key `{key}` is not in store `{store}`"
        ))),
    }
}

/// `PUT /v1/kv/{store}/{key}`: sets the value to the request body.
#[utoipa::path(put, path = "/v1/kv/{store}/{key}", operation_id = "putValue", tag = "state",
    params(("store" = String, Path, description = "The key-value store"),
        ("key" = String, Path, description = "The key")),
    request_body(description = "The value", content((Vec<u8> = "application/octet-stream"))),
    responses((status = 204, description = "Stored"), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody)))]
pub async fn put_value(
    State(app): State<Arc<App>>,
    Path((store, key)): Path<(String, String)>,
    request: Request,
) -> Result<StatusCode, Error> {
    validate::store_name(&store)?;
    let limit = usize::try_from(app.config.defaults.kv_store_bytes).unwrap_or(usize::MAX);
    let value = read_body(request.into_body(), limit, "the value").await?;
    app.state
        .kv_set(
            &store,
            &key,
            value.to_vec(),
            app.config.defaults.kv_store_bytes,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/kv/{store}/{key}`.
#[utoipa::path(delete, path = "/v1/kv/{store}/{key}", operation_id = "deleteValue", tag = "state",
    params(("store" = String, Path, description = "The key-value store"),
        ("key" = String, Path, description = "The key")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete_value(
    State(app): State<Arc<App>>,
    Path((store, key)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    validate::store_name(&store)?;
    match app.state.kv_delete(&store, vec![key.clone()]).await? {
        0 => Err(Error::NotFound(format!(
            "key `{key}` is not in store `{store}`"
        ))),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}

fn view(current: FunctionVariables) -> ConfigView {
    ConfigView {
        variables: current.variables,
        secrets: current.secrets.into_keys().collect(),
    }
}

/// `GET /v1/functions/{name}/config`: variables with their values, secrets by name only.
#[utoipa::path(get, path = "/v1/functions/{name}/config", operation_id = "getConfig", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    responses((status = 200, body = ConfigView), (status = 404, body = ErrorBody)))]
pub async fn get_config(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<ConfigView>, Error> {
    if app.meta.get_function(&name).await?.is_none() {
        return Err(Error::unknown_function(&name));
    }
    Ok(Json(view(app.state.variables(&name).await?)))
}

/// `PUT /v1/functions/{name}/config`: replaces the variables and sets (or, with `null`, removes) the named
/// secrets; the next call sees them, with no new version.
#[utoipa::path(put, path = "/v1/functions/{name}/config", operation_id = "putConfig", tag = "functions",
    params(("name" = String, Path, description = "The function's name")),
    request_body = ConfigUpdate,
    responses((status = 200, body = ConfigView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn put_config(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ConfigView>, Error> {
    let update: ConfigUpdate = wafer_formats::json::object(&body)
        .map_err(|e| Error::InvalidConfig(format!("invalid configuration: {e}")))?;
    let current = app
        .set_variables(&name, update.variables, update.secrets)
        .await?;
    Ok(Json(view(current)))
}
