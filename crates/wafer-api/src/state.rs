//! Key-value stores and function configuration, as the management API shows them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A page of a key-value store's keys, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct KeyList {
    /// The store.
    pub store: String,
    /// The keys.
    pub keys: Vec<String>,
    /// Pass as `cursor` to get the next page; absent on the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A change to a function's configuration (`PUT /v1/functions/{name}/config`, or the `variables` part of
/// a deploy).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    /// Variables by name. A PUT replaces them all; a deploy adds to them.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// Secrets by name: readable by the function only, never returned or logged. Those named are set
    /// (`null` removes one) and the others kept, since their values cannot be read back to send again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, Option<String>>,
}

/// A function's configuration as the API shows it: variables with their values, secrets by name only.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct ConfigView {
    /// Variables by name.
    pub variables: BTreeMap<String, String>,
    /// The names of its secrets.
    pub secrets: Vec<String>,
}
