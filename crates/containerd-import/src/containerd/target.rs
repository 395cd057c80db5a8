//! The importer: one function per step of the pipeline, run under one lease.

use std::time::Instant;

use blobswarm_core::oci::Platform;

use super::client::Conn;
use super::lease::{self, LeaseGuard};
use super::plan::{LABEL_GC_SNAPSHOT, Plan};
use super::records::{self, RecordOutcome};
use super::{
    ContainerdConfig, ContainerdError, ImageToImport, ImportReport, ReleaseLine, content,
    supersede, unpack,
};
use crate::Progress;

/// A connected containerd that images are imported into, so the CRI (and the kubelet)
/// sees them without pulling from a registry.
///
/// Cheap to share: clone it or put it in an `Arc`; imports may run concurrently.
#[derive(Debug, Clone)]
pub struct ContainerdTarget {
    conn: Conn,
    progress: Option<Progress>,
}

impl ContainerdTarget {
    /// Connects to containerd, checks that it answers and that the configured snapshotter
    /// is loaded, so a misconfigured node fails at agent start, not at the first image.
    ///
    /// # Errors
    /// [`ContainerdError::SocketMissing`], [`ContainerdError::PermissionDenied`],
    /// [`ContainerdError::Refused`], [`ContainerdError::NotAnswering`],
    /// [`ContainerdError::SnapshotterUnavailable`] or [`ContainerdError::InvalidConfig`].
    pub async fn connect(config: ContainerdConfig) -> Result<Self, ContainerdError> {
        Ok(Self {
            conn: Conn::connect(config).await?,
            progress: None,
        })
    }

    /// Reports content bytes as they are put in place, for progress bars.
    #[must_use]
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Asks containerd for its version: the agent's readiness probe, so a node whose
    /// containerd stopped answering is taken out of service.
    ///
    /// # Errors
    /// [`ContainerdError::NotAnswering`] or [`ContainerdError::Disconnected`].
    pub async fn ping(&self) -> Result<(), ContainerdError> {
        self.conn.ping().await
    }

    /// The configuration this target was connected with.
    pub const fn config(&self) -> &ContainerdConfig {
        &self.conn.config
    }

    /// Writes `image` into containerd: content, snapshots for this machine's platform,
    /// and the image records the CRI looks up. Idempotent: what is present is skipped, and
    /// a second import of the same image changes nothing ([`ImportReport::changed_nothing`]).
    ///
    /// Everything that can be checked locally (documents, media types, diff_ids, blob
    /// files) is checked before anything is sent. The work runs under a lease that is
    /// deleted at the end, also on error; records are created last, so a failed import
    /// leaves no name behind.
    ///
    /// With [`ContainerdConfig::pin`] and an image from a release
    /// ([`ImageToImport::release_line`]), records of older releases of the same line are
    /// unpinned after the records are in place ([`ImportReport::unpinned`]), so the
    /// kubelet's image GC may reclaim superseded releases; the newest stays pinned. Failing
    /// to unpin does not fail the import ([`ImportReport::unpin_error`]).
    ///
    /// # Errors
    /// [`ContainerdError`] naming the step and the digest, file or name involved.
    pub async fn import(&self, image: &ImageToImport) -> Result<ImportReport, ContainerdError> {
        let start = Instant::now();
        let plan = Plan::build(image, &Platform::host())?;
        plan.check_files()?;
        let mut report = ImportReport {
            names: plan.names.clone(),
            ..ImportReport::default()
        };
        report.stale_leases_removed = lease::remove_stale(&self.conn).await?;
        let lease = LeaseGuard::create(&self.conn).await?;
        let line = image.release_line.as_ref();
        let result = self
            .import_leased(&plan, line, lease.id(), &mut report)
            .await;
        let released = lease.release().await;
        // The import's own error is the one worth reporting; a lease that could not be
        // deleted then is removed by the next import's stale sweep.
        result?;
        released?;
        // The image is in place whatever happens here: a failure to unpin is reported, not
        // an import failure, and the next import of the line unpins again.
        if let Some(line) = line.filter(|_| self.conn.config.pin) {
            match supersede::unpin_superseded(&self.conn, line).await {
                Ok(names) => report.unpinned = names,
                Err(e) => report.unpin_error = Some(e.to_string()),
            }
        }
        report.elapsed = start.elapsed();
        Ok(report)
    }

    async fn import_leased(
        &self,
        plan: &Plan,
        line: Option<&ReleaseLine>,
        lease: &str,
        report: &mut ImportReport,
    ) -> Result<(), ContainerdError> {
        self.write_content(plan, lease, report).await?;
        self.unpack(plan, lease, report).await?;
        self.record(plan, line, report).await
    }

    /// Step 1: content, children before parents, with GC labels at commit.
    async fn write_content(
        &self,
        plan: &Plan,
        lease: &str,
        report: &mut ImportReport,
    ) -> Result<(), ContainerdError> {
        for item in &plan.content {
            let out = content::ensure(&self.conn, lease, item, self.progress.as_ref()).await?;
            if out.written {
                report.content_written += 1;
            } else {
                report.content_present += 1;
            }
            report.bytes_written += out.bytes_sent;
            report.bytes_resumed += out.bytes_resumed;
            report.labels_updated += usize::from(out.relabelled);
        }
        Ok(())
    }

    /// Step 2: snapshots for the platform manifest, then the config's snapshot GC label.
    async fn unpack(
        &self,
        plan: &Plan,
        lease: &str,
        report: &mut ImportReport,
    ) -> Result<(), ContainerdError> {
        let Some(u) = &plan.unpack else {
            return Ok(());
        };
        let out = unpack::unpack(&self.conn, lease, u).await?;
        report.snapshots_created += out.created;
        report.snapshots_present += out.present;
        let Some(top) = u.layers.last() else {
            return Ok(());
        };
        let want = [(
            format!("{LABEL_GC_SNAPSHOT}{}", self.conn.config.snapshotter),
            top.chain_id.clone(),
        )]
        .into();
        let have = content::info(&self.conn, lease, u.config)
            .await?
            .map(|i| i.labels)
            .unwrap_or_default();
        if content::ensure_labels(&self.conn, lease, u.config, &have, &want).await? {
            report.labels_updated += 1;
        }
        Ok(())
    }

    /// Step 3: one image record per name.
    async fn record(
        &self,
        plan: &Plan,
        line: Option<&ReleaseLine>,
        report: &mut ImportReport,
    ) -> Result<(), ContainerdError> {
        for name in &plan.names {
            match records::ensure(&self.conn, name, &plan.target, line).await? {
                RecordOutcome::Created => report.records_created += 1,
                RecordOutcome::Updated => report.records_updated += 1,
                RecordOutcome::Unchanged => report.records_unchanged += 1,
                RecordOutcome::KeptNewer => report.records_kept_newer.push(name.clone()),
            }
        }
        Ok(())
    }
}
