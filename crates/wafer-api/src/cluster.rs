//! The nodes of a cluster, as `GET /v1/nodes` shows them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A node heard from lately.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct NodeInfo {
    /// Its id.
    pub id: String,
    /// Where it is reached (`host:port`).
    pub address: String,
    /// The wafer version it runs.
    pub version: String,
    /// When it started beating (RFC 3339).
    pub started_at: String,
    /// When it last beat (RFC 3339).
    pub heartbeat_at: String,
    /// How far it has applied the cluster's change feed.
    pub applied: u64,
    /// Functions it does not serve at their live version yet (it is compiling it), with the version it
    /// serves meanwhile (0: none). Every other function it serves at its live version.
    #[serde(default)]
    pub lagging: BTreeMap<String, u32>,
    /// Whether this is the node that answered.
    #[serde(default)]
    pub this_node: bool,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct NodeList {
    /// The nodes heard from in the last few seconds, by id.
    pub nodes: Vec<NodeInfo>,
    /// The change feed's position, for comparing with each node's `applied`.
    pub feed: u64,
}
