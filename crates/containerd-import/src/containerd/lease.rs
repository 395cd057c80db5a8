//! The import's lease: keeps containerd's garbage collector away from content and
//! snapshots until the image records reference them, and is deleted at the end — also
//! when the import fails or is cancelled.
//!
//! Leases carry `blobswarm.import=1` and the creating process id. At the start of each
//! import, leases of ours that no live import holds (from an import interrupted by a
//! containerd or agent crash) are deleted; `containerd.io/gc.expire` is the backstop.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest, DeleteRequest, ListRequest, Resource,
};

use containerd_client::tonic::Code;

use super::ContainerdError;
use super::client::{Conn, Lease};

/// Label marking a lease as created by a blobswarm import.
pub const LEASE_LABEL: &str = "blobswarm.import";
/// Label holding the id of the process that created the lease.
const LEASE_PID_LABEL: &str = "blobswarm.import.pid";
/// containerd deletes a lease after this time even if nobody does.
const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// Leases held by imports running in this process (shared by all targets).
static LIVE: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn live() -> MutexGuard<'static, Option<HashSet<String>>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A lease held for one import; [`LeaseGuard::release`] deletes it. If the guard is
/// dropped unreleased (the import future was cancelled), deletion is spawned on the
/// current tokio runtime.
#[derive(Debug)]
pub(crate) struct LeaseGuard {
    conn: Conn,
    id: String,
    armed: bool,
}

impl LeaseGuard {
    /// Creates a lease that expires after `config.lease_expiry`.
    pub(crate) async fn create(conn: &Conn) -> Result<Self, ContainerdError> {
        let now = SystemTime::now();
        let nanos = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let pid = std::process::id();
        let id = format!(
            "blobswarm-import-{pid}-{nanos}-{}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let labels = [
            (LEASE_LABEL.to_owned(), "1".to_owned()),
            (LEASE_PID_LABEL.to_owned(), pid.to_string()),
            (
                EXPIRE_LABEL.to_owned(),
                rfc3339_utc(now + conn.config.lease_expiry),
            ),
        ]
        .into_iter()
        .collect();
        // Registered before the request: a concurrent import's stale sweep must never see
        // this lease in containerd without it being marked live.
        live().get_or_insert_with(HashSet::new).insert(id.clone());
        let created = conn
            .call(
                "lease create",
                &id,
                LeasesClient::new(conn.channel.clone()).create(conn.request(
                    CreateRequest {
                        id: id.clone(),
                        labels,
                    },
                    Lease::None,
                )),
            )
            .await;
        if let Err(e) = created {
            forget(&id);
            return Err(e);
        }
        Ok(Self {
            conn: conn.clone(),
            id,
            armed: true,
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Deletes the lease. containerd may then collect whatever no image references.
    pub(crate) async fn release(mut self) -> Result<(), ContainerdError> {
        self.armed = false;
        let r = delete(&self.conn, &self.id).await;
        forget(&self.id);
        r
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (conn, id) = (self.conn.clone(), std::mem::take(&mut self.id));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                // Best effort: if this fails, the next import's stale sweep deletes it.
                let _ = delete(&conn, &id).await;
                forget(&id);
            });
        } else {
            forget(&id);
        }
    }
}

fn forget(id: &str) {
    if let Some(set) = live().as_mut() {
        set.remove(id);
    }
}

/// Deletes lease `id`; one already gone counts as deleted.
async fn delete(conn: &Conn, id: &str) -> Result<(), ContainerdError> {
    conn.call_unless(
        "lease delete",
        &id,
        Code::NotFound,
        LeasesClient::new(conn.channel.clone()).delete(conn.request(
            DeleteRequest {
                id: id.to_owned(),
                sync: false,
            },
            Lease::None,
        )),
    )
    .await?;
    Ok(())
}

/// Adds an existing resource (`content` by digest, `snapshots/<snapshotter>` by name) to
/// the lease. Content or snapshots found present may be held only by another lease (or by
/// nothing, awaiting collection); until our records reference them, only our lease keeps
/// the garbage collector from removing them between our check and our use. Call it
/// *before* checking presence, so there is no window.
pub(crate) async fn hold(
    conn: &Conn,
    lease: &str,
    r#type: &str,
    id: &str,
) -> Result<(), ContainerdError> {
    conn.call(
        "lease add resource",
        &id,
        LeasesClient::new(conn.channel.clone()).add_resource(conn.request(
            AddResourceRequest {
                id: lease.to_owned(),
                resource: Some(Resource {
                    id: id.to_owned(),
                    r#type: r#type.to_owned(),
                }),
            },
            Lease::None,
        )),
    )
    .await
}

/// Deletes our leases that no running import holds: those created by this process and
/// no longer live, and those whose creating process is gone. Returns how many.
pub(crate) async fn remove_stale(conn: &Conn) -> Result<usize, ContainerdError> {
    let leases = conn
        .call(
            "lease list",
            &LEASE_LABEL,
            LeasesClient::new(conn.channel.clone())
                .list(conn.request(ListRequest { filters: vec![] }, Lease::None)),
        )
        .await?
        .leases;
    let me = std::process::id().to_string();
    let stale: Vec<String> = {
        let live = live();
        leases
            .into_iter()
            .filter(|l| l.labels.get(LEASE_LABEL).is_some_and(|v| v == "1"))
            .filter(|l| {
                let live_here = live.as_ref().is_some_and(|s| s.contains(&l.id));
                match l.labels.get(LEASE_PID_LABEL) {
                    Some(pid) if *pid == me => !live_here,
                    Some(pid) => !std::path::Path::new("/proc").join(pid).exists(),
                    None => false,
                }
            })
            .map(|l| l.id)
            .collect()
    };
    for id in &stale {
        delete(conn, id).await?;
    }
    Ok(stale.len())
}

/// `t` as RFC 3339 in UTC with second precision (`2026-11-23T10:16:51Z`), the form
/// containerd parses `containerd.io/gc.expire` with.
pub(crate) fn rfc3339_utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_709_210_096, "2024-02-29T12:34:56Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
        ] {
            assert_eq!(
                rfc3339_utc(UNIX_EPOCH + Duration::from_secs(secs)),
                want,
                "{secs}"
            );
        }
    }
}
