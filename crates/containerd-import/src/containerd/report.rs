//! What an import did, so the agent can log it and tests can check idempotence.

use std::fmt;
use std::time::Duration;

/// What one import wrote and what it found already in place.
///
/// A second import of the same image writes nothing: every counter except the
/// `*_present`/`*_unchanged` ones is zero ([`Self::changed_nothing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// The image record names, in the order recorded.
    pub names: Vec<String>,
    /// Blobs and documents written into the content store.
    pub content_written: usize,
    /// Bytes sent for them (excluding bytes containerd already had from an interrupted write).
    pub bytes_written: u64,
    /// Bytes of interrupted writes that containerd kept and the import resumed after.
    pub bytes_resumed: u64,
    /// Blobs and documents already present.
    pub content_present: usize,
    /// Content items whose labels (GC references, uncompressed digest) had to be added.
    pub labels_updated: usize,
    /// Layers unpacked into new snapshots.
    pub snapshots_created: usize,
    /// Layers whose snapshot already existed.
    pub snapshots_present: usize,
    /// Image records created.
    pub records_created: usize,
    /// Image records that existed and were changed (target or labels).
    pub records_updated: usize,
    /// Image records that were already exactly right.
    pub records_unchanged: usize,
    /// Names left pointing at a newer release of the same line (this import is older).
    pub records_kept_newer: Vec<String>,
    /// Names of older releases of the same line whose pin this import removed.
    pub unpinned: Vec<String>,
    /// Why unpinning superseded records failed, if it did (the image itself is imported).
    pub unpin_error: Option<String>,
    /// Leases left behind by earlier, interrupted imports and deleted by this one.
    pub stale_leases_removed: usize,
    /// Wall time of the import, connection excluded.
    pub elapsed: Duration,
}

impl ImportReport {
    /// True when the import found everything in place and changed nothing in containerd
    /// (a stale lease removal is cleanup, not a change to the image).
    pub const fn changed_nothing(&self) -> bool {
        self.content_written == 0
            && self.labels_updated == 0
            && self.snapshots_created == 0
            && self.records_created == 0
            && self.records_updated == 0
            && self.unpinned.is_empty()
    }
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {:.3}s: content {} written ({} bytes, {} resumed) / {} present, {} relabelled; \
             snapshots {} created / {} present; records {} created / {} updated / {} unchanged",
            self.names.first().map_or("image", String::as_str),
            self.elapsed.as_secs_f64(),
            self.content_written,
            self.bytes_written,
            self.bytes_resumed,
            self.content_present,
            self.labels_updated,
            self.snapshots_created,
            self.snapshots_present,
            self.records_created,
            self.records_updated,
            self.records_unchanged,
        )?;
        if !self.records_kept_newer.is_empty() {
            write!(
                f,
                "; kept on a newer release: {}",
                self.records_kept_newer.join(", ")
            )?;
        }
        if !self.unpinned.is_empty() {
            write!(f, "; unpinned superseded: {}", self.unpinned.join(", "))?;
        }
        if let Some(e) = &self.unpin_error {
            write!(f, "; unpinning superseded releases failed: {e}")?;
        }
        if self.stale_leases_removed > 0 {
            write!(f, "; {} stale leases removed", self.stale_leases_removed)?;
        }
        Ok(())
    }
}
