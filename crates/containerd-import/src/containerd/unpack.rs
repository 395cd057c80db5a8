//! Unpacking the platform manifest's layers into snapshots, so a pod starts without
//! unpacking. Per layer, in order: `Snapshots.Stat(chainID)` (present → next), else
//! `Prepare(key, parent)` → `Diff.Apply` → check the result equals the diff_id →
//! `Commit(chainID)`. The snapshots are named by chain ID exactly as containerd's own
//! unpacker names them, so the CRI finds them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use containerd_client::services::v1::ApplyRequest;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::{Descriptor, Mount};

use super::ContainerdError;
use super::client::{Conn, Lease};
use super::config::UNPACK_TIMEOUT_FACTOR;
use super::plan::{Unpack, UnpackLayer};

/// Label containerd's unpacker puts on snapshots (remote snapshotters key on it).
const LABEL_SNAPSHOT_REF: &str = "containerd.io/snapshot.ref";

static KEY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Counts of what [`unpack`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnpackOutcome {
    pub(crate) created: usize,
    pub(crate) present: usize,
}

/// Unpacks every layer of `unpack` whose snapshot does not exist yet.
pub(crate) async fn unpack(
    conn: &Conn,
    lease: &str,
    unpack: &Unpack,
) -> Result<UnpackOutcome, ContainerdError> {
    let mut out = UnpackOutcome::default();
    let mut parent = String::new();
    for layer in &unpack.layers {
        if snapshot_exists(conn, lease, &layer.chain_id).await?
            || apply(conn, lease, layer, &parent).await?
        {
            out.present += 1;
        } else {
            out.created += 1;
        }
        parent.clone_from(&layer.chain_id);
    }
    Ok(out)
}

fn snapshots(conn: &Conn) -> SnapshotsClient<containerd_client::tonic::transport::Channel> {
    SnapshotsClient::new(conn.channel.clone())
}

/// Whether the committed snapshot `name` exists; it is added to the lease first, so it
/// cannot be collected before the image references it.
async fn snapshot_exists(conn: &Conn, lease: &str, name: &str) -> Result<bool, ContainerdError> {
    let kind = format!("snapshots/{}", conn.config.snapshotter);
    super::lease::hold(conn, lease, &kind, name).await?;
    Ok(conn
        .call_unless(
            "snapshot stat",
            &name,
            Code::NotFound,
            snapshots(conn).stat(conn.request(
                StatSnapshotRequest {
                    snapshotter: conn.config.snapshotter.clone(),
                    key: name.to_owned(),
                },
                Lease::Id(lease),
            )),
        )
        .await?
        .is_some())
}

/// Prepares, applies and commits one layer; true if another unpacker committed the same
/// snapshot first (then nothing was created here).
async fn apply(
    conn: &Conn,
    lease: &str,
    layer: &UnpackLayer,
    parent: &str,
) -> Result<bool, ContainerdError> {
    let labels: HashMap<String, String> =
        [(LABEL_SNAPSHOT_REF.to_owned(), layer.chain_id.clone())].into();
    // containerd's unpacker uses "extract-<unique> <chainID>" for the active snapshot.
    let key = format!(
        "extract-blobswarm-{}-{} {}",
        std::process::id(),
        KEY_COUNTER.fetch_add(1, Ordering::Relaxed),
        layer.chain_id
    );
    let request = PrepareSnapshotRequest {
        snapshotter: conn.config.snapshotter.clone(),
        key: key.clone(),
        parent: parent.to_owned(),
        labels: labels.clone(),
    };
    let mut client = snapshots(conn);
    let prepare = client.prepare(conn.request(request, Lease::Id(lease)));
    let Some(prepared) = conn
        .call_unless(
            "snapshot prepare",
            &layer.chain_id,
            Code::AlreadyExists,
            prepare,
        )
        .await?
    else {
        // A remote snapshotter (or a racing unpacker) already has it.
        return Ok(true);
    };
    let mounts: Vec<Mount> = prepared.mounts;
    let result = apply_and_commit(conn, lease, layer, &key, mounts, labels).await;
    if !matches!(result, Ok(false)) {
        // The active snapshot is of no use now; the lease would keep it until expiry.
        remove(conn, lease, &key).await;
    }
    result
}

async fn apply_and_commit(
    conn: &Conn,
    lease: &str,
    layer: &UnpackLayer,
    key: &str,
    mounts: Vec<Mount>,
    labels: HashMap<String, String>,
) -> Result<bool, ContainerdError> {
    // Applying decompresses and writes the whole layer: it may take longer than a call.
    let applied = conn
        .call_status(
            "diff apply",
            conn.timeout() * UNPACK_TIMEOUT_FACTOR,
            DiffClient::new(conn.channel.clone()).apply(conn.request(
                ApplyRequest {
                    diff: Some(Descriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.to_string(),
                        size: i64::try_from(layer.size).unwrap_or(i64::MAX),
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    ..ApplyRequest::default()
                },
                Lease::Id(lease),
            )),
        )
        .await?
        .map_err(|s| conn.status_err("diff apply", &layer.digest, &s))?
        .applied
        .map(|d| d.digest)
        .unwrap_or_default();
    if applied != layer.diff_id {
        return Err(ContainerdError::DiffIdMismatch {
            layer: layer.digest,
            expected: layer.diff_id.clone(),
            actual: applied,
        });
    }
    let request = CommitSnapshotRequest {
        snapshotter: conn.config.snapshotter.clone(),
        name: layer.chain_id.clone(),
        key: key.to_owned(),
        labels,
    };
    let mut client = snapshots(conn);
    let commit = client.commit(conn.request(request, Lease::Id(lease)));
    // None: another unpacker committed the same snapshot first.
    let committed = conn
        .call_unless(
            "snapshot commit",
            &layer.chain_id,
            Code::AlreadyExists,
            commit,
        )
        .await?;
    Ok(committed.is_none())
}

/// Best effort: an error here must not hide the error that caused the removal.
async fn remove(conn: &Conn, lease: &str, key: &str) {
    let _ = conn
        .call_status(
            "snapshot remove",
            conn.timeout(),
            snapshots(conn).remove(conn.request(
                RemoveSnapshotRequest {
                    snapshotter: conn.config.snapshotter.clone(),
                    key: key.to_owned(),
                },
                Lease::Id(lease),
            )),
        )
        .await;
}
