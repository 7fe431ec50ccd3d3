//! Dead letters: `POST /v1/executions/{id}/retry` and `POST /v1/functions/{name}/redrive` put
//! executions that ended `dead` or `expired` back in the queue, as further attempts of the same
//! executions, with their original requests. They are listed with `?status=dead` (or `expired`) on
//! `GET /v1/functions/{name}/executions`.

use super::extract::{Path, Query};
use crate::app::App;
use crate::auth::{Caller, Permission};
use crate::error::Error;
use crate::queue;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::IntoParams;
use wafer_api::{AsyncAccepted, ErrorBody, Redriven};

/// `POST /v1/executions/{id}/retry`: a dead or expired execution runs again, with a fresh budget of
/// its function's `max_attempts`.
#[utoipa::path(post, path = "/v1/executions/{id}/retry", operation_id = "retryExecution", tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses((status = 202, body = AsyncAccepted, description = "Back in the queue",
        links(("execution" = (operation_id = "getExecution",
            parameters(("id" = "$response.body#/execution_id")),
            description = "The execution's record, as its further attempts run")))),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Not dead or expired, or its request was not kept")))]
pub async fn retry(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    if let Some(execution) = app.executions.get_execution(&id, false).await? {
        caller.require(Permission::Invoke, Some(&execution.function))?;
    }
    queue::retry(&app, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(AsyncAccepted { execution_id: id }),
    )
        .into_response())
}

/// Which dead letters a redrive takes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RedriveQuery {
    /// Only those that ended within this long (`30m`, `6h`, `7d`); all by default.
    since: Option<String>,
}

/// `POST /v1/functions/{name}/redrive`: every dead or expired execution of the function whose request
/// was kept runs again, each with a fresh budget of `max_attempts`.
#[utoipa::path(post, path = "/v1/functions/{name}/redrive", operation_id = "redrive", tag = "executions",
    params(("name" = String, Path, description = "The function's name"), RedriveQuery),
    responses((status = 200, body = Redriven), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn redrive(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<RedriveQuery>,
) -> Result<Json<Redriven>, Error> {
    let since = query
        .since
        .as_deref()
        .map(|since| {
            wafer_api::units::parse_timeout_ms(since)
                .map(Duration::from_millis)
                .map_err(|e| Error::InvalidRequest(format!("`since`: {e}")))
        })
        .transpose()?;
    let redriven = queue::redrive(&app, &name, since).await?;
    Ok(Json(Redriven { redriven }))
}
