//! Importing images into containerd over its gRPC API, so the CRI plugin (and so the
//! kubelet) sees them as if pulled.
//!
//! The pipeline follows what `ctr images import` and the CRI plugin do:
//! 1. a lease (with `containerd.io/gc.expire`) protects everything written until the
//!    records exist;
//! 2. content: present blobs are skipped, the rest streamed from disk with `Content.Write`
//!    (children before parents, GC reference labels at commit);
//! 3. the manifest for this machine's platform is unpacked into snapshots named by chain
//!    ID (`Diff.Apply`, checked against the config's diff_ids);
//! 4. image records `repo:tag`, `repo@sha256:<root>` and `sha256:<config>` labelled
//!    `io.cri-containerd.image=managed` (and `pinned` if configured);
//! 5. the lease is deleted, also on error;
//! 6. with pinning on, records of older releases of the same line (seeder and reference,
//!    see [`ReleaseLine`]) are unpinned, so the kubelet's image GC may reclaim them.
//!
//! [`ImageToImport`], [`ContainerdConfig`], [`ContainerdError`] and [`ImportReport`] are
//! always built, so an image can be checked without containerd; [`ContainerdTarget`]
//! needs the `containerd` cargo feature, whose gRPC bindings need `protoc` to build.

mod config;
mod error;
mod image;
mod media;
// Without the `containerd` feature the plan is only validated, and the fields the
// importer reads are unused.
#[cfg_attr(not(feature = "containerd"), allow(dead_code))]
mod plan;
mod reference;
mod report;
// Without the `containerd` feature only the labels' selection logic is built (and tested).
#[cfg_attr(not(feature = "containerd"), allow(dead_code))]
mod supersede;

#[cfg(feature = "containerd")]
mod client;
#[cfg(feature = "containerd")]
mod content;
#[cfg(feature = "containerd")]
mod lease;
#[cfg(feature = "containerd")]
mod records;
#[cfg(feature = "containerd")]
mod target;
#[cfg(feature = "containerd")]
mod unpack;

pub use crate::Progress;
pub use blobswarm_core::oci::REF_NAME_ANNOTATION;
pub use config::{
    ContainerdConfig, DEFAULT_NAMESPACE, DEFAULT_SNAPSHOTTER, DEFAULT_SOCKET, LABEL_CRI_MANAGED,
    LABEL_CRI_PINNED, UNPACK_TIMEOUT_FACTOR,
};
pub use error::ContainerdError;
pub use image::{BlobFile, ImageToImport};
pub use report::ImportReport;
pub use supersede::{LABEL_LINEAGE, LABEL_SEQUENCE, ReleaseLine};

#[cfg(feature = "containerd")]
pub use lease::LEASE_LABEL;
#[cfg(feature = "containerd")]
pub use target::ContainerdTarget;
