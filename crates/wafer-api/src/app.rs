//! Several functions deployed as one (`POST /v1/apps`): how `wafer deploy spin.toml` stores every
//! component of an application in one transaction, or none.

use crate::{ConfigUpdate, FunctionConfig, VersionInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most functions one application deploys.
pub const MAX_APP_FUNCTIONS: usize = 64;

/// The `app` part of an application deploy: its functions, each naming the multipart parts that hold
/// its module and its files (parts may be shared).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppDeploy {
    /// The functions, in the order their versions are reported.
    #[schema(min_items = 1, max_items = 64)] // 64: MAX_APP_FUNCTIONS
    pub functions: Vec<AppFunctionSpec>,
}

/// One function of an application.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppFunctionSpec {
    /// The function's name.
    pub name: String,
    /// The multipart part holding its module.
    pub module: String,
    /// The multipart part holding its read-only files (a tar its instances see as `/`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<String>,
    /// Its configuration, as a single deploy's `config` part.
    #[serde(default)]
    pub config: FunctionConfig,
    /// Variables and secrets added to its configuration, as a single deploy's `variables` part.
    #[serde(default)]
    pub variables: ConfigUpdate,
}

/// The answer to an application deploy: the new live version of every function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct AppDeployed {
    /// The versions, in the order the functions were given.
    pub functions: Vec<VersionInfo>,
}
