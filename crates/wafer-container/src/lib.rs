//! Container functions: a function of kind `container` is an OCI image that containerd stores and runc
//! runs, beside the wasm kinds and under the same API.
//!
//! - [`cgroup`] reads what a container used — peak memory, CPU time, OOM kills — from its control group,
//!   on the v1 (per-controller hierarchies) and v2 (unified) layouts alike.

pub mod cgroup;
