//! The reply of a `command` function run as a job.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a command run produced: its exit code and its captured output.
///
/// Output that is not valid UTF-8 is returned with invalid sequences replaced by U+FFFD. Output past the
/// server's caps is cut off, and the `*_truncated` flags say so.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct CommandOutput {
    /// The exit code: 0 when the program returned normally, otherwise the code it passed to `exit`.
    pub exit_code: i32,
    /// Everything the program wrote to stdout.
    pub stdout: String,
    /// Everything the program wrote to stderr.
    pub stderr: String,
    /// Whether stdout went past the server's cap and its end was dropped.
    #[serde(default)]
    pub stdout_truncated: bool,
    /// Whether stderr went past the server's cap and its end was dropped.
    #[serde(default)]
    pub stderr_truncated: bool,
}
