//! One interface over the places a delivered image can be imported into, chosen at run
//! time from configuration.
//!
//! The agent, `blobswarm import` and the tests hold an `Arc<dyn ImportTarget>` built by
//! [`connect`] from a [`TargetConfig`], so they run one import path whatever the target.
//! The `containerd` cargo feature only decides whether the containerd implementation is
//! compiled in (its gRPC bindings need `protoc`); asking for containerd in a build
//! without it is a run-time error ([`TargetError::ContainerdNotBuilt`]), not a
//! different code path.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use crate::containerd::{ContainerdConfig, ContainerdError, ImageToImport, ImportReport};
use crate::{ImportError, OciLayoutTarget, Progress};

/// The future an [`ImportTarget`] method returns (boxed, so the trait is dyn-compatible).
pub type TargetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, TargetError>> + Send + 'a>>;

/// Somewhere an image the swarm delivered is handed to a container runtime.
///
/// Implementations: [`OciLayoutTarget`] (always built) and
/// [`containerd::ContainerdTarget`](crate::containerd) (with the `containerd` feature).
pub trait ImportTarget: fmt::Debug + Send + Sync {
    /// A short name for logs and errors: `"oci-layout"` or `"containerd"`.
    fn kind(&self) -> &'static str;

    /// Imports `image`, whose blobs are complete files on disk. Idempotent: what the
    /// target already holds is skipped, and a second import of the same image reports
    /// that it changed nothing ([`ImportReport::changed_nothing`]).
    ///
    /// # Errors
    /// [`TargetError`] naming the step and the digest, file or name involved.
    fn import<'a>(&'a self, image: &'a ImageToImport) -> TargetFuture<'a, ImportReport>;

    /// Whether the target is usable right now: part of the agent's readiness.
    ///
    /// # Errors
    /// [`TargetError`] saying why it is not.
    fn ping(&self) -> TargetFuture<'_, ()>;
}

/// Which target to import into; mapped from flags at the edge.
#[derive(Debug, Clone)]
pub enum TargetConfig {
    /// An OCI image layout directory (created if missing).
    OciLayout(PathBuf),
    /// A containerd reached over its gRPC socket.
    Containerd(ContainerdConfig),
}

/// Why a target could not be opened or an import failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The containerd target failed.
    #[error(transparent)]
    Containerd(#[from] ContainerdError),
    /// The OCI layout target failed.
    #[error(transparent)]
    Layout(#[from] ImportError),
    /// containerd was asked for, but this build does not contain its implementation.
    #[error(
        "containerd import requested (socket {}) but this blobswarm was built without the `containerd` feature (build with `--features containerd`, which needs protoc)",
        .socket.display()
    )]
    ContainerdNotBuilt {
        /// The configured socket.
        socket: PathBuf,
    },
    /// The layout directory is gone or not a directory.
    #[error("OCI layout {} is not usable: {reason}", .dir.display())]
    LayoutUnusable {
        /// The layout directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The blocking task that wrote an image into the layout panicked or was cancelled.
    #[error("importing {reference} into the OCI layout: task failed: {reason}")]
    TaskFailed {
        /// The image being imported.
        reference: String,
        /// The join error.
        reason: String,
    },
}

/// Opens the target `config` names; containerd is connected and checked at once, so a
/// wrong socket or snapshotter fails here instead of at the first import.
///
/// # Errors
/// [`TargetError`] when the target cannot be opened or reached.
pub async fn connect(
    config: TargetConfig,
    progress: Option<Progress>,
) -> Result<Arc<dyn ImportTarget>, TargetError> {
    match config {
        TargetConfig::OciLayout(dir) => {
            let mut target = OciLayoutTarget::open(dir)?;
            if let Some(p) = progress {
                target = target.with_progress(p);
            }
            Ok(Arc::new(target))
        }
        #[cfg(feature = "containerd")]
        TargetConfig::Containerd(config) => {
            let mut target = crate::containerd::ContainerdTarget::connect(config).await?;
            if let Some(p) = progress {
                target = target.with_progress(p);
            }
            Ok(Arc::new(target))
        }
        #[cfg(not(feature = "containerd"))]
        TargetConfig::Containerd(config) => {
            let _ = progress;
            Err(TargetError::ContainerdNotBuilt {
                socket: config.socket,
            })
        }
    }
}

impl ImportTarget for OciLayoutTarget {
    fn kind(&self) -> &'static str {
        "oci-layout"
    }

    fn import<'a>(&'a self, image: &'a ImageToImport) -> TargetFuture<'a, ImportReport> {
        let (target, owned) = (self.clone(), image.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || target.import_image(&owned))
                .await
                .map_err(|e| TargetError::TaskFailed {
                    reference: image.reference.clone(),
                    reason: e.to_string(),
                })?
                .map_err(TargetError::from)
        })
    }

    fn ping(&self) -> TargetFuture<'_, ()> {
        Box::pin(async move {
            match tokio::fs::metadata(self.dir()).await {
                Ok(m) if m.is_dir() => Ok(()),
                Ok(_) => Err(TargetError::LayoutUnusable {
                    dir: self.dir().to_owned(),
                    reason: "not a directory".into(),
                }),
                Err(e) => Err(TargetError::LayoutUnusable {
                    dir: self.dir().to_owned(),
                    reason: e.to_string(),
                }),
            }
        })
    }
}

#[cfg(feature = "containerd")]
impl ImportTarget for crate::containerd::ContainerdTarget {
    fn kind(&self) -> &'static str {
        "containerd"
    }

    fn import<'a>(&'a self, image: &'a ImageToImport) -> TargetFuture<'a, ImportReport> {
        Box::pin(async move { Ok(Self::import(self, image).await?) })
    }

    fn ping(&self) -> TargetFuture<'_, ()> {
        Box::pin(async move { Ok(Self::ping(self).await?) })
    }
}
