//! API keys and the audit log, as the management API shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/keys`: a key to create.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// What the key is for (up to 128 characters).
    #[serde(default)]
    #[schema(max_length = 128, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: String,
    /// What it may do: `read:PATTERN`, `deploy:PATTERN`, `invoke:PATTERN` or `admin`. A pattern names
    /// functions (key-value stores, on the key-value routes); `*` matches any run of characters.
    #[schema(min_items = 1, max_items = 32)]
    pub scopes: Vec<String>,
    /// How long it is valid: 1 to 9999 of `ms`, `s`, `m`, `min`, `h` or `d` (`90m`, `12h`, `30d`; a
    /// bare number is milliseconds); forever without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[1-9][0-9]{0,3}(?:ms|s|m|min|h|d)?$")]
    pub expires_in: Option<String>,
    /// Requests a second it may make on each node, in bursts of as many; unlimited without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub rate_limit: Option<u32>,
}

/// An API key, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ApiKey {
    /// Its id: it names the key, and is its SigV4 access key id.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Requests a second, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<u32>,
    /// `active`, `expired` or `revoked`.
    pub status: String,
    /// Who created it (`token`, `local` or `key:ID`).
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it stops being valid, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// A key just created, with its secret: the only time it is shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct CreatedKey {
    /// The key.
    pub key: ApiKey,
    /// What to send: `Authorization: Bearer <token>` (`ID.SECRET`).
    pub token: String,
    /// For SigV4 clients (the Lambda API): the secret access key, with the key's id as the access key
    /// id.
    pub secret: String,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ApiKeyList {
    /// Every key, revoked ones too, oldest first.
    pub keys: Vec<ApiKey>,
}

/// One management action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AuditRecord {
    /// Its position in the log.
    pub seq: i64,
    /// When (RFC 3339).
    pub at: String,
    /// Who: `token`, `local` (a client on the server's host, without a token) or `key:ID`.
    pub actor: String,
    /// What: the method and the route.
    pub action: String,
    /// The function, store, key or execution the route names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The answer's status.
    pub status: u16,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// `GET /v1/audit`: a page of the audit log, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AuditLog {
    /// The actions.
    pub entries: Vec<AuditRecord>,
    /// Pass as `before` for the next (older) page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<i64>,
}
