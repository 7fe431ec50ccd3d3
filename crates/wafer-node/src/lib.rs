//! Containers whose functions run on wafer's engine: what the containerd shim and the node agent share.
//!
//! A Kubernetes node can run wafer functions as containers in two ways. In **per-process mode** the shim
//! (`containerd-shim-wafer-v1`) runs each container's function in the container's own process, as
//! runwasi's shims do. In **agent mode** one `wafer node` process per node runs the functions of every
//! container on it, as Layotto designed: many functions in one process, isolated by WebAssembly, with
//! one engine and one compile per module for the whole node. Both modes derive a function from its
//! container the same way.
//!
//! - [`function`] — from a container's image, environment and limits to the settings wafer runs a
//!   function with.
//! - [`artifacts`] — compiled functions kept on the node's disk by module digest and engine.
//! - [`job`] and [`serve`] — a command run once to its exit code, and an http function served on its
//!   listener, with the container's admission ([`gate`]) and output ([`output`]).
//! - [`protocol`] — what the shim and the agent say over the agent's Unix socket, descriptors and all.
//! - [`agent`] — `wafer node` itself: the socket, the shared engine and modules, one [`agent::pod`]
//!   per container.

pub mod agent;
pub mod artifacts;
pub mod function;
pub mod gate;
pub mod job;
pub mod output;
pub mod protocol;
pub mod serve;
