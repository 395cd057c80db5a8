//! Hands images that the swarm has delivered and verified to a container runtime.
//!
//! Two targets share one crate and one trait, [`ImportTarget`], so the agent, the demo and
//! the tests use one import path, chosen at run time by [`connect`]:
//! - [`OciLayoutTarget`] writes OCI image layouts (what `skopeo`, `umoci` and
//!   `ctr images import` read); always built.
//! - `containerd::ContainerdTarget` writes into containerd over gRPC so the CRI sees
//!   the image at once; compiled with the `containerd` cargo feature, because its gRPC
//!   bindings need `protoc` at build time and the default build must need only the Rust
//!   toolchain.
//!
//! Documents, media types and platforms are judged by [`blobswarm_core::oci`], the same
//! model the seeder uses.

pub mod containerd;
mod oci_layout;
mod progress;
mod target;

pub use oci_layout::{ImportError, OciLayoutTarget, REF_NAME_ANNOTATION};
pub use progress::Progress;
pub use target::{ImportTarget, TargetConfig, TargetError, TargetFuture, connect};
