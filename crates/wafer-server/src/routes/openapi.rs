//! The API description: `GET /api/openapi.json`, generated from the handlers' annotations, and
//! `GET /api/docs`, a self-contained page that renders it (no CDN: it works offline).
//!
//! The management routes are registered through [`utoipa_axum`], which adds each handler to the router
//! and to the document in one step, so neither can list a route the other lacks.

mod contract;

use super::{aliases, apps, executions, functions, invoke, keys, lambda, letters, ops, state};
use axum::response::{Html, IntoResponse};
use axum::Extension;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The parts of the document no route registration adds: title, tags, security and the routes that live
/// outside the management router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "wafer",
        description = "WebAssembly functions as a service: deploy wasm functions, call them over HTTP or \
                       through the async queue, and read their execution records, logs and metrics."
    ),
    paths(
        ops::healthz,
        invoke::function_root,
        invoke::function_path,
        lambda::invoke,
        lambda::list,
        lambda::get,
        openapi_json,
        docs
    ),
    modifiers(&BearerToken),
    tags(
        (name = "functions", description = "Deploy, list, version, alias, roll back and delete functions"),
        (name = "invoke", description = "Call functions, synchronously or through the async queue"),
        (name = "executions", description = "Execution records, logs and summaries; retries and redrives of dead letters"),
        (name = "state", description = "Key-value stores functions share"),
        (name = "lambda", description = "The AWS Lambda Invoke API, for Lambda clients (SigV4 with the server's AWS keys or an API key, or a bearer)"),
        (name = "access", description = "API keys with scopes, and the audit log of management actions (admin only)"),
        (name = "operations", description = "Health, the cluster's nodes, metrics and this document")
    )
)]
struct ApiDoc;

/// Declares the bearer token the management API takes when the server has one.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Renders the collected description, refined with what many routes share ([`contract::refine`]).
pub fn render(document: &utoipa::openapi::OpenApi) -> Document {
    let text = serde_json::to_value(document)
        .map(|mut value| {
            contract::refine(&mut value);
            value
        })
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    Document(text.into())
}

/// The management routes (behind the token), with the document describing them and everything else.
/// Deploys read their own bodies, each part within its cap (`functions::form`).
pub fn management() -> OpenApiRouter<std::sync::Arc<crate::app::App>> {
    let (schemas, paths, deploy) = routes!(functions::versions, functions::deploy);
    let (app_schemas, app_paths, apps) = routes!(apps::deploy);
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes((app_schemas, app_paths, apps))
        .routes(routes!(functions::list))
        .routes(routes!(functions::get, functions::delete))
        .routes((schemas, paths, deploy))
        .routes(routes!(functions::rollback))
        .routes(routes!(aliases::list))
        .routes(routes!(aliases::get, aliases::put, aliases::delete))
        .routes(routes!(invoke::invoke))
        .routes(routes!(executions::get))
        .routes(routes!(executions::list))
        .routes(routes!(executions::logs))
        .routes(routes!(executions::stats))
        .routes(routes!(executions::traffic))
        .routes(routes!(executions::queue))
        .routes(routes!(letters::retry))
        .routes(routes!(letters::redrive))
        .routes(routes!(state::get_config, state::put_config))
        .routes(routes!(state::keys))
        .routes(routes!(
            state::get_value,
            state::put_value,
            state::delete_value
        ))
        .routes(routes!(ops::nodes))
        .routes(routes!(ops::metrics))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::get))
        .routes(routes!(keys::revoke))
        .routes(routes!(keys::audit))
}

/// `GET /api/openapi.json`.
#[utoipa::path(get, path = "/api/openapi.json", operation_id = "openapiJson", tag = "operations",
    responses((status = 200, description = "This document", content_type = "application/json")))]
pub async fn openapi_json(Extension(document): Extension<Document>) -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        document.0.to_string(),
    )
}

/// The rendered document, shared by every request for it.
#[derive(Clone)]
pub struct Document(pub std::sync::Arc<str>);

/// `GET /api/docs`.
#[utoipa::path(get, path = "/api/docs", operation_id = "docs", tag = "operations",
    responses((status = 200, description = "A page rendering this document", content_type = "text/html")))]
pub async fn docs() -> impl IntoResponse {
    Html(include_str!("openapi/docs.html"))
}
