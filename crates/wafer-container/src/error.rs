//! The one error type of container functions, sorted by whose fault it is: the image's, the daemon's,
//! or the container's run.

/// Why a container function could not be deployed or run.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The image is not one wafer can run: a malformed tarball, manifest or configuration, a missing
    /// blob, a platform other than this machine's.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// containerd could not be reached, or failed a request.
    #[error("containerd: {0}")]
    Daemon(String),
    /// A registry could not be reached, or failed (its own 5xx).
    #[error("registry: {0}")]
    Registry(String),
    /// The container ran past its time limit and was killed.
    #[error("the container ran past its {0:?} limit and was killed")]
    Timeout(std::time::Duration),
    /// Something on this machine failed: a FIFO, a temporary directory.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<containerd_client::tonic::Status> for ContainerError {
    fn from(status: containerd_client::tonic::Status) -> Self {
        ContainerError::Daemon(format!("{:?}: {}", status.code(), status.message()))
    }
}

impl From<containerd_client::tonic::transport::Error> for ContainerError {
    fn from(error: containerd_client::tonic::transport::Error) -> Self {
        ContainerError::Daemon(format!("cannot connect: {error}"))
    }
}
