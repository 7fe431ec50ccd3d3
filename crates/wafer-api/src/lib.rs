//! The wire types of wafer's management API (`/v1/*`).
//!
//! The server serialises these, the `wafer` CLI and the end-to-end tests deserialise them, so a field added
//! here reaches every side at once. Modules: [`function`] (deploy-time configuration and what is stored about
//! functions and versions), [`app`] (several functions deployed as one), [`invoke`] (the job reply of `command` functions), [`execution`] (execution
//! records, logs and their summaries), [`rollup`] (per-minute counts of finished attempts, and the
//! windows served from them), [`state`] (key-value listings and function configuration), [`access`]
//! (API keys and the audit log),
//! [`error`] (the JSON error body every failing endpoint answers with), [`units`] (sizes and durations as
//! people write them) and [`oci`] (the image contract
//! of a packaged function, shared by the CLI and the containerd shim).

pub mod access;
pub mod app;
pub mod cluster;
pub mod error;
pub mod execution;
pub mod function;
pub mod invoke;
pub mod oci;
pub mod rollup;
pub mod spin;
pub mod state;
pub mod units;

pub use access::{ApiKey, ApiKeyList, AuditLog, AuditRecord, CreatedKey, KeyRequest};
pub use app::{AppDeploy, AppDeployed, AppFunctionSpec, MAX_APP_FUNCTIONS};
pub use cluster::{NodeInfo, NodeList};
pub use error::{ErrorBody, ErrorDetail};
pub use execution::{
    AsyncAccepted, Execution, ExecutionList, ExecutionStats, ExecutionStatus, ExecutionUsage,
    LogEntry, LogLevel, LogList, QueueView, Redriven, Summary, Trigger,
};
pub use function::{
    Alias, AliasInfo, AliasList, Destination, EffectiveLimits, FunctionConfig, FunctionInfo,
    FunctionList, Kind, RollbackRequest, VersionInfo, VersionList, LIVE,
};
pub use invoke::CommandOutput;
pub use rollup::{FunctionTraffic, MinuteRollup, StatsBucket, StatsWindow, Traffic, TrafficList};
pub use state::{ConfigUpdate, ConfigView, KeyList};
