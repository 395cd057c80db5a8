//! Job bookkeeping over the in-memory backend: states, reuse of a published release,
//! the bounded job list, and the join with the nodes' reports.

use std::sync::Arc;
use std::time::Duration;

use blobswarm_core::wire::ProgressState;

use super::{MAX_JOBS, Service};
use crate::fake::{FakeBackend, aggregator, image, report, report_unenrolled};
use crate::rollout::lost_reason;

#[tokio::test]
async fn seed_publishes_and_the_view_says_so() {
    let (backend, _rx) = FakeBackend::new(&[("app", image("reg/app:v1", "one"))]);
    let published = Arc::clone(&backend.published);
    let service = Service::new(backend, aggregator());
    let id = service.seed("app").await.expect("seeds");
    assert!(id.starts_with("sha256:"), "{id}");
    assert_eq!(*published.lock().unwrap(), ["reg/app:v1"]);
    let by_id = service.release(&id).expect("found by id");
    let by_image = service.release("app").expect("found by image");
    for v in [&by_id, &by_image] {
        assert_eq!(v.id, id);
        assert_eq!(v.image, "app");
        assert_eq!(v.reference, "reg/app:v1");
        assert_eq!(v.state, "published");
        assert_eq!(v.total_bytes, 100);
        assert_eq!(v.error, None);
        assert!(v.nodes.is_empty());
    }
    assert!(!service.in_flight("app"));
    assert!(service.release("other").is_none());
}

#[tokio::test]
async fn same_content_under_same_reference_reuses_the_release() {
    let (backend, _rx) = FakeBackend::new(&[
        ("a", image("reg/app:v1", "one")),
        ("b", image("reg/app:v1", "one")),
        ("c", image("reg/app:v1", "two")),
        ("d", image("reg/app:v2", "one")),
    ]);
    let published = Arc::clone(&backend.published);
    let service = Service::new(backend, aggregator());
    let first = service.seed("a").await.unwrap();
    assert_eq!(
        service.seed("b").await.unwrap(),
        first,
        "same content: reused"
    );
    assert_eq!(service.swarm().releases.len(), 1, "a reuse adds no job");
    let changed = service.seed("c").await.unwrap();
    assert_ne!(changed, first, "new content under the tag: new release");
    let retagged = service.seed("d").await.unwrap();
    assert_ne!(
        retagged, first,
        "same content, other reference: new release"
    );
    assert_eq!(published.lock().unwrap().len(), 3);
    let images: Vec<String> = service
        .swarm()
        .releases
        .into_iter()
        .map(|r| r.image)
        .collect();
    assert_eq!(images, ["d", "c", "a"], "newest first");
}

#[tokio::test]
async fn failure_is_kept_with_the_whole_error_chain() {
    let (backend, _rx) = FakeBackend::new(&[]);
    let service = Service::new(backend, aggregator());
    let err = service.seed("nope").await.unwrap_err();
    let want = "resolving nope: registry fake is unreachable: connection refused";
    assert_eq!(err.chain(), want);
    let v = service.release("nope").expect("failed job listed");
    assert_eq!(v.state, "failed");
    assert_eq!(v.error.as_deref(), Some(want));
    assert_eq!(v.id, "");
    assert!(!service.in_flight("nope"));
}

#[tokio::test]
async fn a_job_is_in_flight_until_published() {
    let (backend, mut rx) = FakeBackend::new(&[("app", image("reg/app:v1", "one"))]);
    let gate = Arc::clone(&backend.gate);
    gate.forget_permits(usize::MAX);
    let service = Arc::new(Service::new(backend, aggregator()));
    let job = tokio::spawn({
        let service = Arc::clone(&service);
        async move { service.seed("app").await }
    });
    assert_eq!(rx.recv().await.as_deref(), Some("app"));
    // Resolved, waiting to publish: the job shows what it resolved to.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while service.release("app").is_none_or(|v| v.total_bytes == 0) {
        assert!(tokio::time::Instant::now() < deadline, "job never resolved");
        tokio::task::yield_now().await;
    }
    assert!(service.in_flight("app"));
    let v = service.release("app").unwrap();
    assert_eq!(
        (v.state.as_str(), v.reference.as_str()),
        ("seeding", "reg/app:v1")
    );
    assert_eq!(v.published_age_ms, 0);
    gate.add_permits(1);
    let id = job.await.unwrap().unwrap();
    assert!(!service.in_flight("app"));
    assert_eq!(service.release("app").unwrap().id, id);
}

#[tokio::test]
async fn job_list_keeps_the_newest_max_jobs() {
    let (backend, _rx) = FakeBackend::new(&[]);
    let service = Service::new(backend, aggregator());
    for i in 0..=MAX_JOBS {
        let _ = service.seed(&format!("img{i}")).await;
    }
    let releases = service.swarm().releases;
    assert_eq!(releases.len(), MAX_JOBS);
    assert_eq!(releases[0].image, format!("img{MAX_JOBS}"));
    assert!(service.release("img0").is_none(), "oldest dropped");
    assert!(service.release("img1").is_some());
}

#[tokio::test]
async fn views_join_the_nodes_reports() {
    let (backend, _rx) = FakeBackend::new(&[("app", image("reg/app:v1", "one"))]);
    let agg = aggregator();
    let service = Service::new(backend, Arc::clone(&agg));
    let id = service.seed("app").await.unwrap();
    let release = id.parse().expect("a digest");
    let other = blobswarm_core::Digest::of(b"another release");
    report(&agg, "n-done", release, ProgressState::Done, 100, 0);
    report(
        &agg,
        "n-fail",
        release,
        ProgressState::Failed("disk full".into()),
        40,
        0,
    );
    report(&agg, "n-other", other, ProgressState::Downloading, 10, 0);
    report(&agg, "n-lost", release, ProgressState::Done, 100, 20_000);
    report_unenrolled(&agg, "n-minted", release);
    let v = service.release(&id).unwrap();
    let states: Vec<(&str, &str, Option<&str>, u64)> = v
        .nodes
        .iter()
        .map(|n| {
            (
                n.node.as_str(),
                n.state.as_str(),
                n.reason.as_deref(),
                n.have_bytes,
            )
        })
        .collect();
    let lost = lost_reason(20_000);
    assert_eq!(
        states,
        [
            ("n-done", "done", None, 100),
            ("n-fail", "failed", Some("disk full"), 40),
            ("n-lost", "lost", Some(lost.as_str()), 100),
            ("n-other", "missing", None, 0),
        ]
    );
    assert_eq!(v.nodes[0].rate, 7);
    assert_eq!(v.nodes[0].peers, 2);
    let ignored: Vec<&str> = v.ignored.iter().map(|i| i.node.as_str()).collect();
    assert_eq!(
        ignored,
        ["n-minted"],
        "an unenrolled report is listed, not counted"
    );
    let swarm = service.swarm();
    assert_eq!((swarm.nodes, swarm.lost), (3, 1));
    assert_eq!(swarm.releases[0].nodes.len(), 4);
    assert_eq!(swarm.releases[0].ignored.len(), 1);
    assert_eq!((swarm.ignored.len(), swarm.ignored_total), (1, 1));
}

/// Collects what a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn log_lines_escape_what_came_off_the_network() {
    // Issue #18 finding 10: an image named over the API (or in a registry
    // notification) must not write a terminal escape or a second line into the log.
    let buf = LogBuf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let (backend, _rx) = FakeBackend::new(&[]);
    let service = Service::new(backend, aggregator());
    let evil = "evil\u{1b}[2J\n<script>x</script>";
    assert!(service.seed(evil).await.is_err());
    drop(guard);
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("seeding failed"), "{log}");
    assert_eq!(log.lines().count(), 1, "one line: {log}");
    assert!(!log.contains('\u{1b}'), "{log}");
    assert!(
        log.contains(r"image=evil\u{1b}[2J\n<script>x</script>"),
        "{log}"
    );
}

#[test]
fn a_release_named_twice_in_one_report_counts_once() {
    use crate::{NodeRelease, NodeView};
    let entry = |state: &str| NodeRelease {
        release: "sha256:r".into(),
        state: state.into(),
        reason: None,
        have_bytes: 0,
        total_bytes: 1,
        rate: 0,
    };
    let nodes = [NodeView {
        node: "n".into(),
        peer: "p".into(),
        age_ms: 0,
        lost: false,
        peers: 0,
        releases: vec![entry("done"), entry("done"), entry("failed")],
    }];
    let t = super::views::Tallies::new(&nodes);
    let counts = t.counts(Some("sha256:r"));
    assert_eq!(counts, [("done".to_owned(), 1)].into());
}
