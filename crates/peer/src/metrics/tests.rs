//! Metrics follow status snapshots.

use super::*;
use crate::status::AgentStatus;

#[test]
fn counters_follow_snapshots_by_difference() {
    let m = Metrics::new();
    let mut s = AgentStatus::default();
    s.stats.bytes_from_peers = 100;
    s.stats.bytes_from_seeders = 10;
    s.uploaded_bytes = 7;
    s.chunks_verified = 3;
    s.peers = 2;
    s.bans.request_rate = 1;
    s.bans.active = 1;
    m.observe(&s);
    m.observe(&s);
    s.stats.bytes_from_peers = 150;
    m.observe(&s);
    m.registry_blob_read(42);
    let text = m.encode();
    assert!(
        text.contains("blobswarm_bytes_down_total{source=\"peer\"} 150"),
        "{text}"
    );
    assert!(text.contains("blobswarm_bytes_down_total{source=\"seeder\"} 10"));
    assert!(text.contains("blobswarm_bytes_down_total{source=\"registry\"} 42"));
    assert!(text.contains("blobswarm_registry_fetches_total 1"));
    assert!(text.contains("blobswarm_bytes_up_total 7"));
    assert!(text.contains("blobswarm_chunks_verified_total 3"));
    assert!(text.contains("blobswarm_peers_connected 2"));
    assert!(text.contains("blobswarm_releases{state=\"failed\"} 0"));
    assert!(text.contains("blobswarm_peers_banned_total{reason=\"request_rate\"} 1"));
    assert!(text.contains("blobswarm_peers_banned_total{reason=\"bad_chunk\"} 0"));
    assert!(text.contains("blobswarm_peers_banned_now 1"));
    assert!(
        text.contains("blobswarm_gossip_rejected_total{topic=\"notice\",reason=\"untrusted\"} 0")
    );
}

/// A status with one complete and one half-fetched release, and a store cap.
fn store_status() -> AgentStatus {
    let release = |n: u8, total_bytes, have_bytes| crate::status::ReleaseStatus {
        id: blobswarm_core::Digest::of(&[n]),
        reference: format!("img:{n}"),
        total_bytes,
        have_bytes,
        complete: have_bytes == total_bytes,
        imported: false,
        import_error: None,
        download_time: None,
        import_time: None,
    };
    AgentStatus {
        releases: vec![release(1, 100, 100), release(2, 1000, 250)],
        store_bytes: 1100,
        store_max_bytes: Some(4096),
        ..AgentStatus::default()
    }
}

#[test]
fn store_progress_and_published_bytes_are_exported() {
    let m = Metrics::new();
    let text = m.encode();
    assert!(text.contains("blobswarm_store_max_bytes 0"), "{text}");
    assert!(text.contains("blobswarm_published_bytes_total 0"), "{text}");
    m.observe(&store_status());
    m.release_published(1100);
    m.release_published(100);
    let text = m.encode();
    for line in [
        "blobswarm_store_bytes 1100",
        "blobswarm_store_max_bytes 4096",
        // Only the incomplete release counts: 1000 - 250.
        "blobswarm_pending_bytes 750",
        "blobswarm_published_bytes_total 1200",
    ] {
        assert!(text.contains(line), "no {line:?} in {text}");
    }
}
