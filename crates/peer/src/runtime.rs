//! The import target an agent hands completed releases to: an OCI layout or a
//! containerd, both behind `ImportTarget`.

use std::sync::Arc;

use blobswarm_containerd_import::containerd::ImageToImport;
use blobswarm_containerd_import::{ImportTarget, TargetConfig, TargetError};
use blobswarm_core::Release;
use blobswarm_core::store::FsStore;

use crate::error::{ImportFailed, NotReady};

/// A connected import target, or none (releases stay in the chunk store only).
#[derive(Clone, Default)]
pub(crate) struct Runtime {
    target: Option<Arc<dyn ImportTarget>>,
}

impl Runtime {
    /// Opens the layout or connects to containerd when configured, so a wrong directory,
    /// socket or snapshotter stops the agent at start with a one-line error instead of
    /// failing every import later. A build without the `containerd` feature refuses a
    /// containerd configuration here.
    ///
    /// # Errors
    /// [`TargetError`] naming the directory or socket and what went wrong.
    pub(crate) async fn connect(config: Option<TargetConfig>) -> Result<Self, TargetError> {
        let Some(config) = config else {
            return Ok(Self::default());
        };
        let target = blobswarm_containerd_import::connect(config, None).await?;
        Ok(Self {
            target: Some(target),
        })
    }

    /// True when no import target is configured.
    pub(crate) fn is_none(&self) -> bool {
        self.target.is_none()
    }

    /// Whether the runtime answers (always, when there is none): part of `/readyz`.
    pub(crate) async fn ping(&self) -> Result<(), NotReady> {
        if let Some(target) = &self.target {
            return target
                .ping()
                .await
                .map_err(|e| NotReady::Runtime(format!("{}: {e}", target.kind())));
        }
        Ok(())
    }

    /// Imports a release whose blobs are complete in `store`. The records carry the
    /// release's line and sequence; with `--pin`, older releases of the line are unpinned.
    pub(crate) async fn import(
        &self,
        release: &Arc<Release>,
        store: &Arc<FsStore>,
    ) -> Result<(), ImportFailed> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let image = ImageToImport::from_release(release, |d| store.blob_path(d));
        let report = target.import(&image).await?;
        tracing::info!(reference = %blobswarm_core::escape::Printable(&release.reference), %report, "imported into {}", target.kind());
        if let Some(error) = &report.unpin_error {
            tracing::warn!(reference = %blobswarm_core::escape::Printable(&release.reference), %error, "could not unpin superseded releases");
        }
        Ok(())
    }
}
