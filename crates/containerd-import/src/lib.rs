//! Hands images that the swarm has delivered and verified to a container runtime.
//!
//! Two targets share one crate so the agent, the demo and the tests use one import path:
//! - [`OciLayoutTarget`] writes OCI image layouts (what `skopeo`, `umoci` and
//!   `ctr images import` read); always built.
//! - [`containerd::ContainerdTarget`] writes into containerd over gRPC so the CRI sees
//!   the image at once; behind the `containerd` cargo feature, because its gRPC bindings
//!   need `protoc` at build time and the default build must need only the Rust toolchain.

pub mod containerd;
mod oci_layout;
mod progress;

pub use oci_layout::{ImportError, OciLayoutTarget, REF_NAME_ANNOTATION};
pub use progress::Progress;
