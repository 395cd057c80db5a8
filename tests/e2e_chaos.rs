//! Chaos with real processes (issue #8's acceptance): twelve agents, two of them hostile
//! (one serves corrupted chunks, one oversized chunks, and both answer release syncs with
//! an old, superseded release of the image), while three honest agents are SIGKILLed at
//! random moments of a rollout and restarted. Every honest agent must end with the same,
//! verified, newest image; both hostile agents must be banned; the replayed release must
//! be refused; the registry must serve each blob once.
//!
//! The random moments come from `CHAOS_SEED` (printed; set it to replay a run).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use blobswarm_testkit::{
    Binary, ImageInfo, Proc, Registry, Seeder, build_test_image, free_port, push_image,
    require_tools, run, sha256_digest, wait_until,
};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));

const AGENTS: usize = 12;
const HOSTILE: [&str; 2] = ["corrupt", "oversized"];
const KILLED: usize = 3;
const V1_LAYER: u64 = 8 << 20;
const V2_LAYER: u64 = 48 << 20;
const TOKEN: &str = "e2e-chaos-token-0123456789abcdef0123456789abcdef";

/// A small deterministic generator (xorshift64*), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn start_agent(seeder: &Seeder, root: &Path, i: usize) -> Proc {
    let mut extra = vec!["--runtime", "oci-layout"];
    if let Some(mode) = HOSTILE.get(i) {
        extra.extend(["--hostile", mode, "--replay-old-releases"]);
    }
    // One log file per run of agent `i` (agent-i.0.log, agent-i.1.log, …), so a restart
    // keeps the ban and refusal lines of the run before it.
    let log = root.join(format!(
        "agent-{i}.{}.log",
        std::fs::read_dir(root)
            .unwrap()
            .filter(|e| {
                e.as_ref().is_ok_and(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("agent-{i}."))
                })
            })
            .count()
    ));
    seeder.start_agent_logged(i, &extra, &log)
}

/// Asks the running seeder to seed `reference`; returns the release id.
fn trigger(seeder: &Seeder, reference: &str) -> String {
    let out = run(&mut seeder.api_command(&["seed", reference])).stdout;
    let out = String::from_utf8(out).expect("utf-8 output");
    out.lines()
        .find_map(|l| l.strip_prefix("release "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no release id in {out:?}"))
        .to_owned()
}

/// Whether agent `i`'s OCI layout holds `image` under `reference`, every blob verified.
fn holds(root: &Path, i: usize, reference: &str, image: &ImageInfo) -> Result<(), String> {
    let layout = root.join(format!("agent-{i}/oci"));
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("index.json")).map_err(|e| format!("index.json: {e}"))?,
    )
    .map_err(|e| format!("index.json: {e}"))?;
    let tagged: Vec<&str> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == reference)
        .filter_map(|m| m["digest"].as_str())
        .collect();
    if tagged != [image.manifest_digest.as_str()] {
        return Err(format!("{reference} points at {tagged:?}"));
    }
    let blobs = layout.join("blobs/sha256");
    for digest in
        std::iter::once(&image.manifest_digest).chain(image.blobs().iter().map(|b| &b.digest))
    {
        let bytes = std::fs::read(blobs.join(digest.trim_start_matches("sha256:")))
            .map_err(|e| format!("{digest}: {e}"))?;
        if sha256_digest(&bytes) != *digest {
            return Err(format!("{digest} does not hash to its digest"));
        }
    }
    Ok(())
}

fn logs(root: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap().filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".log") {
            out.push(std::fs::read_to_string(e.path()).unwrap());
        }
    }
    out
}

#[test]
fn honest_agents_converge_on_the_newest_verified_image_through_hostile_peers_and_kills() {
    if !require_tools(&["docker-registry", "umoci", "skopeo", "busybox"]) {
        return;
    }
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("CHAOS_SEED={seed}");
    let mut rng = Rng(seed);

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let token = root.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let registry = Registry::start(&root.join("registry"));
    let v1 = build_test_image(&root.join("src-v1"), "latest", V1_LAYER, 11);
    let v2 = build_test_image(&root.join("src-v2"), "latest", V2_LAYER, 12);
    let mark = registry.mark_log();

    let api_addr = format!("127.0.0.1:{}", free_port());
    let registry_addr = registry.addr();
    // Slow enough that the kills land mid-rollout and peers carry most bytes.
    let extra = [
        "--allow-registry",
        &registry_addr,
        "--max-upload-rate",
        "16MiB",
    ];
    let seeder = Seeder::serve(BLOBSWARM, root, (&api_addr, &token), &registry_addr, &extra);
    let mut agents: Vec<Proc> = (0..AGENTS).map(|i| start_agent(&seeder, root, i)).collect();
    let ids: Vec<String> = agents
        .iter_mut()
        .map(|p| p.wait_peer_id(Duration::from_secs(30)))
        .collect();
    let hostile_ids = &ids[..HOSTILE.len()];

    // v1 everywhere first: the hostile agents then hold an old release to replay.
    let reference = push_image(
        &root.join("src-v1"),
        "latest",
        &registry.addr(),
        "test/chaos",
    );
    let v1_id = trigger(&seeder, &reference);
    for a in &mut agents {
        a.wait_line(&format!("imported {v1_id}"), Duration::from_secs(90));
    }

    // v2 under the same tag, and three honest agents killed and restarted during it.
    let pushed = push_image(
        &root.join("src-v2"),
        "latest",
        &registry.addr(),
        "test/chaos",
    );
    assert_eq!(pushed, reference);
    let v2_id = trigger(&seeder, &reference);
    let started = Instant::now();
    let mut honest: Vec<usize> = (HOSTILE.len()..AGENTS).collect();
    let mut victims = Vec::new();
    for _ in 0..KILLED {
        let k = (rng.next() % honest.len() as u64) as usize;
        victims.push((
            honest.remove(k),
            rng.millis(300, 4000),
            rng.millis(200, 2000),
        ));
    }
    victims.sort_by_key(|v| v.1);
    for &(i, at, down) in &victims {
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        agents[i].kill();
        eprintln!(
            "SIGKILL agent-{i} at {:.2}s, down {:.2}s",
            started.elapsed().as_secs_f64(),
            down.as_secs_f64()
        );
        std::thread::sleep(down);
        agents[i] = start_agent(&seeder, root, i);
    }
    let honest_all: Vec<usize> = (HOSTILE.len()..AGENTS).collect();
    wait_until(Duration::from_secs(120), "every honest agent on v2", || {
        honest_all
            .iter()
            .all(|&i| holds(root, i, &reference, &v2).is_ok())
    });
    let secs = started.elapsed().as_secs_f64();
    for &i in &honest_all {
        holds(root, i, &reference, &v2).unwrap_or_else(|e| panic!("agent-{i}: {e}"));
    }
    // v1 was never the target; it must not come back once v2 landed.
    std::thread::sleep(Duration::from_secs(2));
    for &i in &honest_all {
        holds(root, i, &reference, &v2).unwrap_or_else(|e| panic!("agent-{i} after 2 s: {e}"));
    }

    // Both hostile agents banned by honest nodes, each ban naming them.
    let honest_logs: Vec<String> = honest_all
        .iter()
        .flat_map(|i| logs(root, &format!("agent-{i}.")))
        .chain(logs(root, "seeder"))
        .collect();
    let mut bans = HashMap::new();
    for (mode, id) in HOSTILE.iter().zip(hostile_ids) {
        let n = honest_logs
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains("banning peer") && l.contains(id.as_str()))
            .count();
        assert!(n > 0, "the {mode} agent {id} was never banned");
        bans.insert(*mode, n);
    }
    for log in &honest_logs {
        for &i in &honest_all {
            let id = &ids[i];
            assert!(
                !log.lines()
                    .any(|l| l.contains("banning peer") && l.contains(id.as_str())),
                "honest agent-{i} was banned"
            );
        }
    }
    // The restarted agents remembered v2 and refused the hostile agents' v1.
    let replays = honest_logs
        .iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("release refused") && l.contains("replays sequence"))
        .count();
    assert!(
        replays > 0,
        "no honest agent was offered (and refused) the old release"
    );

    // One registry GET per blob, for both versions, however many agents and restarts.
    let gets = registry.blob_gets_since(mark);
    let mut blobs: Vec<String> = v1
        .blobs()
        .into_iter()
        .chain(v2.blobs())
        .map(|b| b.digest)
        .collect();
    blobs.sort();
    blobs.dedup();
    for b in &blobs {
        assert_eq!(gets.get(b).copied().unwrap_or(0), 1, "registry GETs of {b}");
    }
    eprintln!(
        "chaos: {} honest agents on v2 {secs:.1}s after its release ({} killed), bans {bans:?}, \
         replays refused {replays}, registry GETs 1 x {} blobs",
        honest_all.len(),
        KILLED,
        blobs.len()
    );
    // The seeder's view agrees: the release it reports is v2's.
    assert!(!v2_id.is_empty() && v2_id != v1_id);
}
