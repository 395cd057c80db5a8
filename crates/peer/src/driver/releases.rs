//! The driver's side of releases: draining the node's actions, saving and refusing
//! releases, finalizing blobs, importing complete releases (never a superseded one),
//! the herd guard's registry reads, the status rows and the progress reports.

use std::collections::HashMap;

use blobswarm_core::escape::Printable;
use blobswarm_core::node::{Action, RequestId};
use blobswarm_core::{Digest, ReleaseId, codec};
use bytes::Bytes;
use tracing::{info, warn};

use super::{
    Driver, MAX_REMEMBERED_REFUSALS, Now, Origin, Output, PeerIdentity, ReleaseStatus, Topic,
};
use crate::status::BanKind;

impl<P: PeerIdentity> Driver<P> {
    /// Turns every pending node action into outputs; called after every input.
    pub(super) fn drain_node(&mut self, now: Now) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Send { peer, id, request } => self.send(peer, request, Origin::Node(id)),
                Action::Publish(signed) => self.gossip(Topic::Release, codec::encode(&signed)),
                Action::Notice(notice) => self.gossip(Topic::Notice, codec::encode(&notice)),
                Action::FetchRegistry {
                    id,
                    blob,
                    index,
                    range,
                } => self.fetch_from_registry(id, blob, index, range, now),
                Action::ReleaseAccepted(id) => self.release_accepted(id, now),
                Action::ReleaseRefused { id, reason } => {
                    warn!(release = %id.short(), error = %Printable(&reason), "release refused");
                    self.outputs.push_back(Output::ForgetRelease(id));
                    if self.refused.len() >= MAX_REMEMBERED_REFUSALS {
                        self.refused.clear();
                    }
                    self.refused.insert(id);
                }
                Action::BlobComplete(blob) => {
                    if let Some(map) = self.node.chunk_map(&blob).cloned() {
                        self.outputs.push_back(Output::FinalizeBlob(map));
                    }
                }
                Action::ReleaseComplete(id) => self.release_complete(id, now),
                Action::Misbehaved { peer, reason } => {
                    self.ban_peer(peer, BanKind::BadChunk, &reason, now.at);
                }
            }
        }
    }

    fn gossip<E>(&mut self, topic: Topic, encoded: Result<Vec<u8>, E>) {
        if let Ok(data) = encoded {
            self.outputs.push_back(Output::Gossip { topic, data });
        }
    }

    fn release_accepted(&mut self, id: ReleaseId, now: Now) {
        if let Some(r) = self.node.release(&id) {
            info!(release = %id.short(), reference = %Printable(&r.reference), bytes = r.total_bytes(), "release accepted");
        }
        self.releases.entry(id).or_default().accepted = Some(now.at);
        if let Some(signed) = self.node.signed_release(&id).cloned() {
            self.hooks.release_accepted(&signed);
            self.outputs.push_back(Output::SaveRelease(signed));
        }
        self.enforce_store_cap(now.at);
    }

    /// Herd guard: this node won the claim on a chunk nobody holds; read it from the
    /// registry of a release that contains the blob. The bytes take the same
    /// verify-then-store path as a chunk from a peer.
    fn fetch_from_registry(
        &mut self,
        id: RequestId,
        blob: Digest,
        index: u32,
        range: std::ops::Range<u64>,
        now: Now,
    ) {
        let reference = self.node.release_ids().find_map(|r| {
            let release = self.node.release(r)?;
            release
                .blobs
                .iter()
                .any(|b| b.digest == blob)
                .then(|| release.reference.clone())
        });
        let Some(reference) = reference.filter(|_| self.config.registry_fallback) else {
            warn!(blob = %blob.short(), index, "registry fetch requested but no registry fallback is configured");
            self.node.handle_failure(id, now.at);
            return;
        };
        info!(blob = %blob.short(), index, reference = %Printable(&reference), "herd guard: fetching an orphaned chunk from the registry");
        self.outputs.push_back(Output::FetchRegistry {
            id,
            reference,
            blob,
            index,
            range,
        });
    }

    pub(super) fn on_registry_chunk(
        &mut self,
        id: RequestId,
        blob: Digest,
        index: u32,
        result: Result<Bytes, String>,
        now: Now,
    ) {
        match result {
            Ok(bytes) => self.verify_and_store(id, bytes),
            Err(e) => {
                warn!(blob = %blob.short(), index, error = %e, "herd guard: registry read failed");
                self.node.handle_failure(id, now.at);
            }
        }
    }

    /// Every blob is in: hand the release to the import target, unless a newer release
    /// of the same image was accepted meanwhile.
    fn release_complete(&mut self, id: ReleaseId, now: Now) {
        let timing = self.releases.entry(id).or_default();
        timing.completed = timing.accepted.map(|t| now.at.saturating_duration_since(t));
        let Some(release) = self.node.release(&id).cloned() else {
            return;
        };
        info!(release = %id.short(), reference = %Printable(&release.reference), secs = timing.completed.map(|d| d.as_secs_f64()), "release complete");
        if !self.config.import_target {
            return;
        }
        if self.node.is_superseded(&id) {
            // The newer release replaces it at once; importing it would only move the
            // tag backwards for a moment (and forwards again) on this node.
            info!(release = %id.short(), reference = %Printable(&release.reference), "superseded by a newer release of this image; not imported");
            timing.imported = true;
            return;
        }
        timing.import_started = Some(now.at);
        self.outputs.push_back(Output::Import { id, release });
    }

    pub(super) fn on_import_done(&mut self, id: ReleaseId, result: Result<(), String>, now: Now) {
        let t = self.releases.entry(id).or_default();
        match result {
            Ok(()) => {
                info!(release = %id.short(), "release imported");
                t.imported = true;
                t.import_time = t
                    .import_started
                    .map(|s| now.at.saturating_duration_since(s));
            }
            Err(e) => {
                warn!(release = %id.short(), error = %e, "import failed");
                t.import_error = Some(e);
            }
        }
        self.enforce_store_cap(now.at);
        self.publish_status(now);
        self.send_report(now);
    }

    /// Gossips this node's progress report (when a node name is configured).
    pub(super) fn send_report(&mut self, now: Now) {
        if self.reporter.is_none() {
            return;
        }
        let snapshot = self.snapshot(now.at);
        let Some(reporter) = self.reporter.as_mut() else {
            return;
        };
        let report = reporter.report(&snapshot, now.at, now.unix_ms);
        self.gossip(Topic::Report, codec::encode(&report));
    }

    /// One status row per release the node carries.
    pub(super) fn release_statuses(&self) -> Vec<ReleaseStatus> {
        let progress: HashMap<Digest, u64> = self
            .node
            .progress()
            .into_iter()
            .map(|p| (p.blob, p.have_bytes))
            .collect();
        self.node
            .release_ids()
            .filter_map(|id| {
                let r = self.node.release(id)?;
                let t = self.releases.get(id);
                Some(ReleaseStatus {
                    id: *id,
                    reference: r.reference.clone(),
                    total_bytes: r.total_bytes(),
                    have_bytes: r
                        .blobs
                        .iter()
                        .map(|b| progress.get(&b.digest).copied().unwrap_or(0))
                        .sum(),
                    complete: self.node.release_complete(id),
                    imported: t.is_some_and(|t| t.imported),
                    import_error: t.and_then(|t| t.import_error.clone()),
                    download_time: t.and_then(|t| t.completed),
                    import_time: t.and_then(|t| t.import_time),
                })
            })
            .collect()
    }
}
