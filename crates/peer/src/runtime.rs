//! The container runtime an agent hands completed releases to.

use std::sync::Arc;

use blobswarm_containerd_import::containerd::ContainerdConfig;
use blobswarm_core::Release;
use blobswarm_core::store::FsStore;

/// A connected runtime target, or none (OCI layout only).
#[derive(Clone, Default)]
pub(crate) struct Runtime {
    #[cfg(feature = "containerd")]
    containerd: Option<blobswarm_containerd_import::containerd::ContainerdTarget>,
}

impl Runtime {
    /// Connects to containerd when configured, so a wrong socket or snapshotter stops the
    /// agent at start with a one-line error instead of failing every import later.
    pub(crate) async fn connect(config: Option<ContainerdConfig>) -> anyhow::Result<Self> {
        let Some(config) = config else {
            return Ok(Self::default());
        };
        #[cfg(feature = "containerd")]
        {
            let target =
                blobswarm_containerd_import::containerd::ContainerdTarget::connect(config).await?;
            Ok(Self {
                containerd: Some(target),
            })
        }
        #[cfg(not(feature = "containerd"))]
        {
            anyhow::bail!(
                "containerd import requested (socket {}) but this blobswarm was built without the `containerd` feature",
                config.socket.display()
            )
        }
    }

    /// True when no runtime import is configured.
    pub(crate) fn is_none(&self) -> bool {
        #[cfg(feature = "containerd")]
        {
            self.containerd.is_none()
        }
        #[cfg(not(feature = "containerd"))]
        {
            true
        }
    }

    /// Whether the runtime answers (always, when there is none): part of `/readyz`.
    pub(crate) async fn ping(&self) -> Result<(), String> {
        #[cfg(feature = "containerd")]
        if let Some(target) = &self.containerd {
            return target.ping().await.map_err(|e| format!("containerd: {e}"));
        }
        Ok(())
    }

    /// Imports a release whose blobs are complete in `store`. The records carry the
    /// release's line and sequence; with `--pin`, older releases of the line are unpinned.
    pub(crate) async fn import(
        &self,
        release: &Arc<Release>,
        store: &Arc<FsStore>,
    ) -> Result<(), String> {
        #[cfg(feature = "containerd")]
        if let Some(target) = &self.containerd {
            let image = blobswarm_containerd_import::containerd::ImageToImport::from_release(
                release,
                |d| store.blob_path(d),
            );
            let report = target.import(&image).await.map_err(|e| e.to_string())?;
            tracing::info!(reference = %release.reference, %report, "imported into containerd");
            if let Some(error) = &report.unpin_error {
                tracing::warn!(reference = %release.reference, %error, "could not unpin superseded releases");
            }
        }
        #[cfg(not(feature = "containerd"))]
        let _ = (release, store);
        Ok(())
    }
}
