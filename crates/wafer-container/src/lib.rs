//! Container functions: a function of kind `container` is an OCI image that containerd stores and runc
//! runs, beside the wasm kinds and under the same API.
//!
//! - [`tarball`] reads an uploaded image tarball (OCI layout or docker-archive) into a manifest and
//!   its blobs, each checked against its digest.
//! - [`pull`] fetches an image from a registry into the same tarball form.
//! - [`containerd`] is the daemon: images imported through its content store under a lease and
//!   unpacked into snapshots.
//! - [`artifact`] finds the wasm layer of the image a container was made from, for a shim running
//!   a wasm OCI artifact.
//! - [`spec`] is the OCI runtime spec every container runs under: unprivileged, read-only, alone on
//!   its network, held to its limits by the kernel.
//! - [`job`] runs one request in a fresh container and removes it, however it ended; a container can
//!   be created first and run later (the warm pool).
//! - [`serve`] starts a created container as a long-running server, its output handed over line by
//!   line, and stops it.
//! - [`entry`] is the static program that starts every job container: it takes the request's
//!   variables from a frame at the start of stdin, so a container created before its request sees
//!   them in its environment all the same.
//! - [`netns`] makes sockets inside a container's network namespace from wafer's side: how wafer
//!   reaches a container serving HTTP, and gives it a proxy, while it has no route anywhere.
//! - [`cgroup`] reads what a container used — peak memory, CPU time, OOM kills — from its control
//!   group, on the v1 and v2 layouts alike.
//! - `testing` (feature `testing`) is a containerd of a test's own and a busybox image.

pub mod artifact;
pub mod cgroup;
pub mod containerd;
pub mod entry;
pub mod error;
pub mod job;
pub mod netns;
pub mod pull;
pub mod serve;
pub mod spec;
pub mod tarball;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::ContainerError;
