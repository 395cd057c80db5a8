//! Agents over real libp2p TCP connections on loopback, in one process.

mod common;

use common::wait_for;
use std::path::Path;
use std::time::{Duration, Instant};

use blobswarm_core::store::FsStore;
use blobswarm_core::{Digest, MIN_CHUNK_SIZE, SignedRelease, chunk_map_of};
use blobswarm_peer::{AgentConfig, AgentHandle, AgentStatus, LocalBlob, TargetConfig};
use blobswarm_testkit::hostile::{ServeFault, hooks as hostile_hooks};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

const CHUNK: u32 = 4 * MIN_CHUNK_SIZE;

fn blobs() -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    };
    vec![
        (0..(12 * CHUNK as usize + 333)).map(|_| next()).collect(),
        (0..5000).map(|_| next()).collect(),
    ]
}

/// Stores `blobs` in a fresh seeder store and signs a release for them.
fn prepare(store_dir: &Path, key: &Keypair, blobs: &[Vec<u8>]) -> (Vec<LocalBlob>, SignedRelease) {
    common::prepare(store_dir, key, blobs, CHUNK, "127.0.0.1/test/app:v1")
}

async fn start(
    dir: &Path,
    key: Keypair,
    trusted: PeerId,
    bootstrap: Vec<Multiaddr>,
    fault: Option<ServeFault>,
) -> AgentHandle {
    start_task(dir, key, trusted, bootstrap, fault).await.0
}

/// [`start`], also returning the event loop's task so a test can stop the agent.
async fn start_task(
    dir: &Path,
    key: Keypair,
    trusted: PeerId,
    bootstrap: Vec<Multiaddr>,
    fault: Option<ServeFault>,
) -> (AgentHandle, tokio::task::JoinHandle<()>) {
    let mut cfg = AgentConfig::new(key, dir.join("store"));
    cfg.trusted = vec![trusted];
    cfg.bootstrap = bootstrap;
    cfg.target = Some(TargetConfig::OciLayout(dir.join("oci")));
    let hooks = hostile_hooks(fault, false);
    blobswarm_peer::spawn_with_hooks(cfg, hooks).await.unwrap()
}

/// An agent that answers release syncs with every release it ever accepted (the
/// replay attack; honest agents offer only the newest release of each image).
async fn start_replayer(dir: &Path, key: Keypair, trusted: PeerId) -> AgentHandle {
    let mut cfg = AgentConfig::new(key, dir.join("store"));
    cfg.trusted = vec![trusted];
    let hooks = hostile_hooks(None, true);
    blobswarm_peer::spawn_with_hooks(cfg, hooks)
        .await
        .unwrap()
        .0
}

/// `release` signed again by its seeder `key` with `sequence`: a newer (or older) release
/// of the same image.
fn with_sequence(release: &SignedRelease, key: &Keypair, sequence: u64) -> SignedRelease {
    let trusted = blobswarm_core::TrustedSeeders::new([key.public().to_peer_id()]);
    let mut release = release.verify(&trusted, 0).unwrap();
    release.sequence = sequence;
    SignedRelease::sign(&release, key).unwrap()
}

/// A [`start_replayer`] under `root/replayer` holding `data`, which announces `old`.
async fn replayer_of(
    root: &Path,
    trusted: PeerId,
    data: &[Vec<u8>],
    old: &SignedRelease,
) -> AgentHandle {
    let dir = root.join("replayer");
    let (blobs, _) = prepare(&dir.join("store"), &Keypair::generate_ed25519(), data);
    let replayer = start_replayer(&dir, Keypair::generate_ed25519(), trusted).await;
    replayer.publish(blobs, old.clone()).await.unwrap();
    replayer
}

/// A running seeder agent holding the test blobs, with its release signed but unpublished.
struct Seeded {
    tmp: tempfile::TempDir,
    seeder_id: PeerId,
    data: Vec<Vec<u8>>,
    local: Vec<LocalBlob>,
    signed: SignedRelease,
    seeder: AgentHandle,
    seeder_addr: Multiaddr,
    /// The seeder's key, to sign other releases with.
    key: Keypair,
    /// The seeder's event loop, to stop it.
    seeder_task: tokio::task::JoinHandle<()>,
}

impl Seeded {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let key = Keypair::generate_ed25519();
        let seeder_id = key.public().to_peer_id();
        let data = blobs();
        let (local, signed) = prepare(&tmp.path().join("seeder/store"), &key, &data);
        let seeder_dir = tmp.path().join("seeder");
        let (seeder, seeder_task) =
            start_task(&seeder_dir, key.clone(), seeder_id, vec![], None).await;
        let seeder_addr = seeder.listen_addrs().await.unwrap()[0].clone();
        Self {
            tmp,
            seeder_id,
            data,
            local,
            signed,
            seeder,
            seeder_addr,
            key,
            seeder_task,
        }
    }
}

fn imported(s: &AgentStatus) -> bool {
    s.releases.iter().any(|r| r.imported)
}

fn assert_layout_holds(dir: &Path, blobs: &[Vec<u8>]) {
    for b in blobs {
        let path = dir.join("oci/blobs/sha256").join(Digest::of(b).hex());
        let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(got == *b, "{} differs from the seeded blob", path.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_chunks_are_rejected_and_fetched_elsewhere() {
    let sd = Seeded::start().await;

    // The hostile peer downloads honestly, then corrupts one byte of every chunk it serves.
    let hostile = start(
        &sd.tmp.path().join("hostile"),
        Keypair::generate_ed25519(),
        sd.seeder_id,
        vec![sd.seeder_addr.clone()],
        Some(ServeFault::FlipByte),
    )
    .await;
    sd.seeder.publish(sd.local, sd.signed).await.unwrap();
    wait_for(
        &hostile,
        "hostile peer to complete",
        Duration::from_secs(30),
        imported,
    )
    .await;
    let hostile_addr = hostile.listen_addrs().await.unwrap()[0].clone();

    // The receiver prefers non-seeder peers, so it asks the hostile peer first.
    let receiver = start(
        &sd.tmp.path().join("receiver"),
        Keypair::generate_ed25519(),
        sd.seeder_id,
        vec![hostile_addr, sd.seeder_addr],
        None,
    )
    .await;
    let s = wait_for(
        &receiver,
        "receiver to complete",
        Duration::from_secs(60),
        imported,
    )
    .await;
    assert!(
        s.stats.chunks_rejected >= 1,
        "receiver never rejected a chunk: {s:?}"
    );
    assert_layout_holds(&sd.tmp.path().join("receiver"), &sd.data);
    // Status snapshots refresh every 200 ms; the transfer can be quicker than that.
    wait_for(
        &hostile,
        "the hostile peer to have served a chunk",
        Duration::from_secs(5),
        |h| h.chunks_served >= 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_signed_by_untrusted_key_is_ignored() {
    let Seeded {
        tmp,
        local,
        signed,
        seeder,
        seeder_addr,
        ..
    } = Seeded::start().await;
    let someone_else = Keypair::generate_ed25519().public().to_peer_id();
    let agent = start(
        &tmp.path().join("agent"),
        Keypair::generate_ed25519(),
        someone_else,
        vec![seeder_addr],
        None,
    )
    .await;
    wait_for(
        &agent,
        "connection to the seeder",
        Duration::from_secs(20),
        |s| s.peers >= 1,
    )
    .await;
    seeder.publish(local, signed).await.unwrap();
    // Gossip and the periodic release sync both deliver it; both must be refused.
    let s = wait_for(
        &agent,
        "the release to be refused",
        Duration::from_secs(20),
        |s| s.stats.releases_rejected >= 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s2 = agent.status().borrow().clone();
    assert!(
        s.releases.is_empty() && s2.releases.is_empty(),
        "untrusted release accepted: {s2:?}"
    );
    assert_eq!(s2.stats.bytes_from_seeders + s2.stats.bytes_from_peers, 0);
    assert!(!tmp.path().join("agent/oci/index.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_seeder_sheds_extra_agents_which_complete_through_their_neighbours() {
    const MAX: usize = 3;
    const AGENTS: usize = 8;
    let tmp = tempfile::tempdir().unwrap();
    let key = Keypair::generate_ed25519();
    let seeder_id = key.public().to_peer_id();
    let data = blobs();
    let (local, signed) = prepare(&tmp.path().join("seeder/store"), &key, &data);
    let mut cfg = AgentConfig::new(key, tmp.path().join("seeder/store"));
    cfg.trusted = vec![seeder_id];
    cfg.max_peers = MAX;
    let (seeder, _task) = blobswarm_peer::spawn(cfg).await.unwrap();
    let seeder_addr = seeder.listen_addrs().await.unwrap()[0].clone();

    // Every agent knows only the seeder's address, as with a cluster Service.
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(
            start(
                &tmp.path().join(format!("agent-{i}")),
                Keypair::generate_ed25519(),
                seeder_id,
                vec![seeder_addr.clone()],
                None,
            )
            .await,
        );
    }
    let watch = seeder.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let most = tokio::spawn(async move {
        let mut most = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            most = most.max(watch.status().borrow().peers);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        most
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    seeder.publish(local, signed).await.unwrap();
    for (i, a) in agents.iter().enumerate() {
        wait_for(
            a,
            &format!("agent-{i} to import"),
            Duration::from_secs(60),
            imported,
        )
        .await;
        assert_layout_holds(&tmp.path().join(format!("agent-{i}")), &data);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = most.await.unwrap();
    assert!(
        most <= MAX,
        "the seeder had {most} neighbours at once; its bound is {MAX}"
    );
    assert!(most >= 1, "the seeder never had a neighbour");
}

/// Log output of every agent in this test binary (one global subscriber), for tests
/// that assert on log lines.
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_env_filter("blobswarm_peer=info")
            .with_ansi(false)
            .with_writer(move || Capture(Arc::clone(&writer)))
            .try_init();
        buf
    })
    .clone()
}

/// Publishes a release newer than the [`Seeded`] one (sequence 2) and returns it with the
/// old one, which a replayer can then announce.
async fn publish_newer(sd: &mut Seeded) -> (SignedRelease, SignedRelease) {
    let old = sd.signed.clone();
    let newer = with_sequence(&old, &sd.key, 2);
    let local = std::mem::take(&mut sd.local);
    sd.seeder.publish(local, newer.clone()).await.unwrap();
    (old, newer)
}

/// Waits until `agent` refused a replayed release; it must still hold only `newer`.
async fn wait_replay_refused(
    agent: &AgentHandle,
    what: &str,
    newer: &SignedRelease,
) -> AgentStatus {
    let s = wait_for(agent, what, Duration::from_secs(20), |s| {
        s.stats.releases_replayed >= 1
    })
    .await;
    let ids: Vec<_> = s.releases.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![newer.id()], "{what}: {s:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_old_release_is_refused_with_a_log_line() {
    let logs = captured_logs();
    let mut sd = Seeded::start().await;
    // The seeder announces the newer release; the agent fetches it.
    let (old, newer) = publish_newer(&mut sd).await;
    let agent = start(
        &sd.tmp.path().join("agent"),
        Keypair::generate_ed25519(),
        sd.seeder_id,
        vec![sd.seeder_addr.clone()],
        None,
    )
    .await;
    wait_for(&agent, "agent to import", Duration::from_secs(30), imported).await;

    // A replayer that recorded the old (validly signed) release announces it.
    let replayer = replayer_of(sd.tmp.path(), sd.seeder_id, &sd.data, &old).await;
    agent
        .dial(replayer.listen_addrs().await.unwrap()[0].clone())
        .await
        .unwrap();
    let s = wait_replay_refused(&agent, "the old release to be refused", &newer).await;
    assert_eq!(s.stats.releases_rejected, s.stats.releases_replayed);
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(&old.id().short()) && l.contains("release refused"))
        .unwrap_or_else(|| panic!("no log line refusing {}:\n{text}", old.id().short()));
    assert!(
        line.contains("replays sequence 1") && line.contains("already accepted sequence 2"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_remembers_the_newest_release_and_refuses_a_replay() {
    let mut sd = Seeded::start().await;
    let (old, newer) = publish_newer(&mut sd).await;
    let agent_key = Keypair::generate_ed25519();
    let agent_dir = sd.tmp.path().join("agent");
    let (agent, agent_task) = start_task(
        &agent_dir,
        agent_key.clone(),
        sd.seeder_id,
        vec![sd.seeder_addr.clone()],
        None,
    )
    .await;
    wait_for(&agent, "agent to import", Duration::from_secs(30), imported).await;

    // Both stop; the agent comes back with its store and nobody to tell it about `newer`.
    agent_task.abort();
    sd.seeder_task.abort();
    let _ = agent_task.await;
    let _ = (&mut sd.seeder_task).await;
    let replayer = replayer_of(sd.tmp.path(), sd.seeder_id, &sd.data, &old).await;
    let agent = start(
        &agent_dir,
        agent_key,
        sd.seeder_id,
        vec![replayer.listen_addrs().await.unwrap()[0].clone()],
        None,
    )
    .await;
    let what = "the replayed release to be refused after the restart (restored from disk)";
    wait_replay_refused(&agent, what, &newer).await;
    // The restored release completes from the store (nothing to fetch) and is imported again.
    let s = wait_for(&agent, "re-import", Duration::from_secs(20), imported).await;
    assert_eq!(
        s.stats.bytes_from_seeders + s.stats.bytes_from_peers,
        0,
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cap_evicts_the_superseded_release_and_keeps_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let key = Keypair::generate_ed25519();
    let seeder_id = key.public().to_peer_id();
    let data = blobs();
    let (shared, only_v1) = (data[0].clone(), data[1].clone());
    let only_v2: Vec<u8> = only_v1.iter().map(|b| b ^ 0x5a).collect();
    let seeder_store = tmp.path().join("seeder/store");
    let (local1, v1) = prepare(&seeder_store, &key, &[shared.clone(), only_v1.clone()]);
    let (local2, v2) = prepare(&seeder_store, &key, &[shared.clone(), only_v2.clone()]);
    let v2 = with_sequence(&v2, &key, 2);

    let seeder = start(&tmp.path().join("seeder"), key, seeder_id, vec![], None).await;
    let seeder_addr = seeder.listen_addrs().await.unwrap()[0].clone();
    seeder.publish(local1, v1.clone()).await.unwrap();
    let agent_dir = tmp.path().join("agent");
    let mut cfg = AgentConfig::new(Keypair::generate_ed25519(), agent_dir.join("store"));
    cfg.trusted = vec![seeder_id];
    cfg.bootstrap = vec![seeder_addr];
    cfg.target = Some(TargetConfig::OciLayout(agent_dir.join("oci")));
    // Room for one release (the shared blob plus one small one), not for two.
    cfg.store_max_bytes = Some((shared.len() + only_v1.len() + 100) as u64);
    let (agent, _task) = blobswarm_peer::spawn(cfg).await.unwrap();
    wait_for(&agent, "v1 imported", Duration::from_secs(30), imported).await;

    seeder.publish(local2, v2.clone()).await.unwrap();
    let s = wait_for(
        &agent,
        "v2 imported and v1 evicted",
        Duration::from_secs(30),
        |s| s.releases_evicted == 1 && s.releases.iter().any(|r| r.id == v2.id() && r.imported),
    )
    .await;
    let ids: Vec<_> = s.releases.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![v2.id()], "{s:?}");
    let store = FsStore::open(agent_dir.join("store")).unwrap();
    let digest = |b: &[u8]| chunk_map_of(b, CHUNK).unwrap().blob();
    // Deletion runs on a blocking thread right after the eviction.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.has_blob(&digest(&only_v1)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!store.has_blob(&digest(&only_v1)), "v1's own blob deleted");
    assert!(store.has_blob(&digest(&shared)), "the shared blob stays");
    assert!(store.has_blob(&digest(&only_v2)));
    // The evicted release is not restored after a restart.
    let saved = std::fs::read_dir(agent_dir.join("store/releases"))
        .unwrap()
        .count();
    assert_eq!(saved, 1);
}
