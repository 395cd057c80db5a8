//! Hands images that the swarm has delivered and verified to a container runtime.
//!
//! Today this crate writes OCI image layouts (what `skopeo`, `umoci` and
//! `ctr images import` read); the containerd gRPC importer lands here next, behind the
//! same entry point, so the agent, the demo and the tests share one import path.

mod oci_layout;

pub use oci_layout::{ImportError, OciLayoutTarget, REF_NAME_ANNOTATION};
