//! API keys and the audit log under `/v1/keys` and `/v1/audit`, for admins only (the guard checks).

use super::extract::{Path, Query};
use crate::app::App;
use crate::auth::{Caller, Scope};
use crate::error::Error;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::StatusCode;
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use wafer_api::{ApiKey, ApiKeyList, AuditLog, AuditRecord, CreatedKey, ErrorBody, KeyRequest};
use wafer_store::{NewKey, StoredKey};

/// The most scopes one key holds.
const MAX_SCOPES: usize = 32;
/// The longest name a key takes.
const MAX_NAME: usize = 128;
/// The highest rate limit a key takes, in requests a second.
const MAX_RATE: u32 = 1_000_000;
/// The most audit entries one page holds.
const MAX_PAGE: u32 = 1000;

/// `key` as the API shows it, its status as of now.
fn shown(key: &StoredKey) -> ApiKey {
    let now = chrono::Utc::now().timestamp_millis();
    let status = match (key.revoked_ms, key.expires_ms) {
        (Some(_), _) => "revoked",
        (None, Some(at)) if at <= now => "expired",
        _ => "active",
    };
    ApiKey {
        id: key.id.clone(),
        name: key.name.clone(),
        scopes: key.scopes.clone(),
        rate_limit: key.rate_limit,
        status: status.into(),
        created_by: key.created_by.clone(),
        created_at: wafer_store::rfc3339(key.created_ms),
        expires_at: key.expires_ms.map(wafer_store::rfc3339),
        revoked_at: key.revoked_ms.map(wafer_store::rfc3339),
    }
}

/// A key request checked: its scopes written as they are read, its lifetime in milliseconds.
fn checked(request: KeyRequest) -> Result<(KeyRequest, Option<i64>), Error> {
    let invalid = |message: String| Error::InvalidRequest(message);
    if request.scopes.is_empty() || request.scopes.len() > MAX_SCOPES {
        return Err(invalid(format!(
            "a key takes 1 to {MAX_SCOPES} scopes, not {}",
            request.scopes.len()
        )));
    }
    if request.name.chars().count() > MAX_NAME || request.name.chars().any(char::is_control) {
        return Err(invalid(format!(
            "a key's name is up to {MAX_NAME} characters, none of them control characters"
        )));
    }
    let scopes = request
        .scopes
        .iter()
        .map(|s| s.parse::<Scope>().map(|s| s.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid)?;
    let expires_in = request
        .expires_in
        .as_deref()
        .map(|text| {
            lifetime_ms(text).ok_or_else(|| {
                invalid(format!(
                    "`expires_in` {text:?} is not a lifetime such as 90m, 12h or 30d: 1 to 9999 of \
                     ms, s, m, min, h or d"
                ))
            })
        })
        .transpose()?;
    if let Some(rate) = request.rate_limit {
        if !(1..=MAX_RATE).contains(&rate) {
            return Err(invalid(format!(
                "`rate_limit` is 1 to {MAX_RATE} requests a second, not {rate}"
            )));
        }
    }
    Ok((KeyRequest { scopes, ..request }, expires_in))
}

/// `POST /v1/keys`: creates a key; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", operation_id = "createApiKey", tag = "access",
    request_body = KeyRequest,
    responses((status = 201, body = CreatedKey, description = "The key, with its secret",
        links(("key" = (operation_id = "getApiKey", parameters(("key_id" = "$response.body#/key/id")),
            description = "The key")),
            ("revoke" = (operation_id = "revokeApiKey",
            parameters(("key_id" = "$response.body#/key/id")), description = "Revoke the key")))),
        (status = 400, body = ErrorBody)))]
pub async fn create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<Response, Error> {
    let request: KeyRequest = wafer_formats::json::object(&body)
        .map_err(|e| Error::InvalidRequest(format!("invalid key request: {e}")))?;
    let (request, expires_in_ms) = checked(request)?;
    let (id, secret) = wafer_store::new_key_material()?;
    let stored = app
        .keys
        .create(NewKey {
            id,
            name: request.name,
            secret,
            scopes: request.scopes,
            rate_limit: request.rate_limit,
            expires_in_ms,
            created_by: caller.actor(),
        })
        .await?;
    let created = CreatedKey {
        key: shown(&stored),
        token: format!("{}.{}", stored.id, stored.secret),
        secret: stored.secret,
    };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /v1/keys`: every key, revoked ones too, without their secrets.
#[utoipa::path(get, path = "/v1/keys", operation_id = "listApiKeys", tag = "access",
    responses((status = 200, body = ApiKeyList)))]
pub async fn list(State(app): State<Arc<App>>) -> Json<ApiKeyList> {
    Json(ApiKeyList {
        keys: app.keys.list().iter().map(|k| shown(&k.stored)).collect(),
    })
}

/// `GET /v1/keys/{key_id}`.
#[utoipa::path(get, path = "/v1/keys/{key_id}", operation_id = "getApiKey", tag = "access",
    params(("key_id" = String, Path, description = "The key's id")),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>, Error> {
    let key = app.keys.get(&id).await?.ok_or_else(|| unknown(&id))?;
    Ok(Json(shown(&key.stored)))
}

/// `POST /v1/keys/{key_id}/revoke`: revokes the key, on every node within seconds. It stays listed (and
/// named in the audit log), so this is not a DELETE.
#[utoipa::path(post, path = "/v1/keys/{key_id}/revoke", operation_id = "revokeApiKey", tag = "access",
    params(("key_id" = String, Path, description = "The key's id")),
    responses((status = 200, body = ApiKey, description = "The key, revoked"),
        (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<ApiKey>, Error> {
    let key = app.keys.revoke(&id).await?.ok_or_else(|| unknown(&id))?;
    Ok(Json(shown(&key)))
}

/// A key's lifetime in milliseconds: 1 to 9999 of a unit (`90m`, `12h`, `30d`; a bare number is
/// milliseconds).
fn lifetime_ms(text: &str) -> Option<i64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=4).contains(&digits) || text.starts_with('0') {
        return None;
    }
    let ms = wafer_api::units::parse_timeout_ms(text).ok()?;
    i64::try_from(ms).ok()
}

fn unknown(id: &str) -> Error {
    Error::NotFound(format!("API key `{id}` does not exist"))
}

/// Which audit entries to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries older than this one (the `next` of the previous page).
    before: Option<i64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// `GET /v1/audit`: management actions, newest first — who, what, to which function, when, and how it
/// was answered.
#[utoipa::path(get, path = "/v1/audit", operation_id = "auditLog", tag = "access",
    params(AuditQuery),
    responses((status = 200, body = AuditLog), (status = 400, body = ErrorBody)))]
pub async fn audit(
    State(app): State<Arc<App>>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<AuditLog>, Error> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::InvalidRequest(format!(
            "`limit` is 1 to {MAX_PAGE}, not {limit}"
        )));
    }
    let entries = app.keys.audit_log(query.before, limit).await?;
    let next = match entries.len() == limit as usize {
        true => entries.last().map(|e| e.seq),
        false => None,
    };
    Ok(Json(AuditLog {
        entries: entries
            .into_iter()
            .map(|e| AuditRecord {
                seq: e.seq,
                at: wafer_store::rfc3339(e.at_ms),
                actor: e.entry.actor,
                action: e.entry.action,
                target: e.entry.target,
                status: e.entry.status,
                client: e.entry.client,
            })
            .collect(),
        next,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_requests_are_checked_as_the_schema_says() {
        let request = |scopes: &[&str], expires_in: Option<&str>, rate_limit| KeyRequest {
            name: "ci".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_in: expires_in.map(str::to_string),
            rate_limit,
        };
        let (ok, ms) = checked(request(&["admin:*", "read:a-*"], Some("30d"), Some(5))).unwrap();
        assert_eq!(ok.scopes, ["admin", "read:a-*"]);
        assert_eq!(ms, Some(30 * 86_400_000));
        assert_eq!(
            checked(request(&["read:*"], Some("1"), None)).unwrap().1,
            Some(1)
        );
        assert_eq!(checked(request(&["read:*"], None, None)).unwrap().1, None);
        let refused = [
            request(&[], None, None),
            request(&["write:*"], None, None),
            request(&["read:*"], Some("0"), None),
            request(&["read:*"], Some("01d"), None),
            request(&["read:*"], Some("10000d"), None),
            request(&["read:*"], Some("3w"), None),
            request(&["read:*"], None, Some(0)),
            request(&["read:*"], None, Some(MAX_RATE + 1)),
            KeyRequest {
                name: "a\nb".into(),
                ..request(&["read:*"], None, None)
            },
        ];
        for r in refused {
            assert_eq!(checked(r.clone()).unwrap_err().status(), 400, "{r:?}");
        }
    }
}
