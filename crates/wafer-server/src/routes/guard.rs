//! The management API's guard, run on every one of its routes once routing has matched: the
//! same-origin rule for writes, who the caller is ([`auth::caller`]), whether the route's permission on
//! the function (or key-value store) its path names is theirs, and a line in the audit log for every
//! action that changes something. The caller rides on to the handler as a request extension, for the
//! routes that can only check once they have read what they act on ([`Need::InHandler`]).

use super::client_addr;
use crate::app::App;
use crate::auth::{self, Caller, Permission};
use crate::error::Error;
use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};
use std::sync::Arc;
use wafer_store::NewAudit;

/// The one management route that is a call rather than an action: its records are the executions.
const INVOKE: &str = "/v1/functions/{name}/invoke";

/// What a route needs of its caller.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    /// A permission on the function (or store) the path names, or on every function (`None`).
    Scope(Permission, Option<String>),
    /// Credentials only: the handler checks the permission once it knows the function (an
    /// execution's, an app's), or lists only what the caller may read.
    InHandler,
}

/// What `method` on `route` needs, where `target` is the function or store the path names.
fn need(method: &Method, route: &str, target: Option<&str>) -> Need {
    let read = matches!(*method, Method::GET | Method::HEAD);
    let target = target.map(str::to_string);
    match route {
        "/v1/keys" | "/v1/keys/{key_id}" | "/v1/keys/{key_id}/revoke" | "/v1/audit" => {
            Need::Scope(Permission::Admin, None)
        }
        "/v1/functions"
        | "/v1/stats"
        | "/v1/apps"
        | "/v1/executions/{id}"
        | "/v1/executions/{id}/retry" => Need::InHandler,
        INVOKE | "/v1/functions/{name}/redrive" => Need::Scope(Permission::Invoke, target),
        // The node-wide views (the queue, the nodes, metrics) read every function.
        _ if target.is_none() => Need::Scope(Permission::Read, None),
        _ if read => Need::Scope(Permission::Read, target),
        _ => Need::Scope(Permission::Deploy, target),
    }
}

/// Middleware: lets a management request through only if its caller may do what it does, and writes
/// every action that changes something (not invocations, and not refusals for want of credentials,
/// which anyone can make) to the audit log with its answer's status.
pub(super) async fn authorize(
    State(app): State<Arc<App>>,
    request: Request,
    next: Next,
) -> Result<Response, Error> {
    auth::check_same_origin(request.method(), request.headers())?;
    let client = client_addr(&request);
    let (mut parts, body) = request.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let target = RawPathParams::from_request_parts(&mut parts, &app)
        .await
        .ok()
        .and_then(|params| {
            ["name", "store", "key_id", "id"].iter().find_map(|wanted| {
                params
                    .iter()
                    .find(|(key, _)| key == wanted)
                    .map(|(_, value)| value.to_string())
            })
        });
    let caller = auth::caller(
        &app.keys,
        app.config.token.as_deref(),
        &parts.headers,
        client,
    )
    .await?;
    let allowed = match need(&parts.method, &route, target.as_deref()) {
        Need::Scope(permission, name) => caller.require(permission, name.as_deref()),
        Need::InHandler => match &caller {
            Caller::Anonymous(why) => Err(Error::Unauthorized((*why).to_string())),
            _ => Ok(()),
        },
    };
    let method = parts.method.clone();
    parts.extensions.insert(caller.clone());
    let response = match allowed {
        Ok(()) => next.run(Request::from_parts(parts, body)).await,
        Err(refused) => refused.into_response(),
    };
    let audited =
        !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) && route != INVOKE;
    if audited && response.status() != StatusCode::UNAUTHORIZED {
        app.keys
            .record(NewAudit {
                actor: caller.actor(),
                action: format!("{method} {route}"),
                target,
                status: response.status().as_u16(),
                client: client.map(|addr| addr.to_string()),
            })
            .await;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_permission_its_action_is() {
        let scope = |p, name: Option<&str>| Need::Scope(p, name.map(str::to_string));
        let cases = [
            (
                Method::GET,
                "/v1/functions/{name}",
                Some("f"),
                scope(Permission::Read, Some("f")),
            ),
            (
                Method::GET,
                "/v1/functions/{name}/logs",
                Some("f"),
                scope(Permission::Read, Some("f")),
            ),
            (
                Method::POST,
                "/v1/functions/{name}/versions",
                Some("f"),
                scope(Permission::Deploy, Some("f")),
            ),
            (
                Method::DELETE,
                "/v1/functions/{name}",
                Some("f"),
                scope(Permission::Deploy, Some("f")),
            ),
            (
                Method::PUT,
                "/v1/functions/{name}/config",
                Some("f"),
                scope(Permission::Deploy, Some("f")),
            ),
            (
                Method::POST,
                INVOKE,
                Some("f"),
                scope(Permission::Invoke, Some("f")),
            ),
            (
                Method::POST,
                "/v1/functions/{name}/redrive",
                Some("f"),
                scope(Permission::Invoke, Some("f")),
            ),
            (
                Method::GET,
                "/v1/kv/{store}/{key}",
                Some("s"),
                scope(Permission::Read, Some("s")),
            ),
            (
                Method::PUT,
                "/v1/kv/{store}/{key}",
                Some("s"),
                scope(Permission::Deploy, Some("s")),
            ),
            (Method::GET, "/metrics", None, scope(Permission::Read, None)),
            (
                Method::GET,
                "/v1/queue",
                None,
                scope(Permission::Read, None),
            ),
            (Method::GET, "/v1/stats", None, Need::InHandler),
            (
                Method::POST,
                "/v1/keys",
                None,
                scope(Permission::Admin, None),
            ),
            (
                Method::GET,
                "/v1/audit",
                None,
                scope(Permission::Admin, None),
            ),
            (
                Method::POST,
                "/v1/keys/{key_id}/revoke",
                Some("wk1"),
                scope(Permission::Admin, None),
            ),
            (Method::GET, "/v1/functions", None, Need::InHandler),
            (Method::POST, "/v1/apps", None, Need::InHandler),
            (
                Method::POST,
                "/v1/executions/{id}/retry",
                Some("x"),
                Need::InHandler,
            ),
        ];
        for (method, route, target, expected) in cases {
            assert_eq!(need(&method, route, target), expected, "{method} {route}");
        }
    }
}
