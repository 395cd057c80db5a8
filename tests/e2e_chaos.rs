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
    Binary, ImageInfo, LogMark, Proc, Registry, Seeder, build_test_image, free_port, push_image,
    require_tools, run, sha256_digest, wait_until,
};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));
/// The misbehaving agent binary (a real agent with testkit's hostile hooks).
const ROGUE: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm-rogue"));

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
    let mut program = BLOBSWARM;
    if let Some(mode) = HOSTILE.get(i) {
        // A real agent with testkit's hostile hooks.
        program = ROGUE;
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
    let name = format!("agent-{i}");
    seeder.start_agent_of(program, &name, &root.join(&name), &extra, &log)
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

/// The seed of the random kill moments: `CHAOS_SEED` if set, else the clock.
fn chaos_seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// SIGKILLs [`KILLED`] honest agents at random moments after `started`, each restarted
/// after a random while.
fn kill_and_restart(
    agents: &mut [Proc],
    (seeder, root): (&Seeder, &Path),
    rng: &mut Rng,
    started: Instant,
) {
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
        agents[i] = start_agent(seeder, root, i);
    }
}

/// Checks the honest nodes' logs (agents `honest`, and the seeder): every hostile agent
/// was banned, no honest one was, and the old release was refused as a replay. Returns
/// the bans per hostile mode and the number of refused replays.
fn assert_bans_and_refusals(
    root: &Path,
    honest: &[usize],
    ids: &[String],
) -> (HashMap<&'static str, usize>, usize) {
    let honest_logs: Vec<String> = honest
        .iter()
        .flat_map(|i| logs(root, &format!("agent-{i}.")))
        .chain(logs(root, "seeder"))
        .collect();
    let banned = |id: &str| {
        honest_logs
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains("banning peer") && l.contains(id))
            .count()
    };
    // Both hostile agents banned by honest nodes, each ban naming them.
    let mut bans = HashMap::new();
    for (mode, id) in HOSTILE.iter().zip(ids) {
        let n = banned(id);
        assert!(n > 0, "the {mode} agent {id} was never banned");
        bans.insert(*mode, n);
    }
    for &i in honest {
        assert!(banned(&ids[i]) == 0, "honest agent-{i} was banned");
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
    (bans, replays)
}

/// Checks that the registry served each blob of `images` once since `mark`, however many
/// agents and restarts; returns how many blobs that is.
fn assert_one_get_per_blob(registry: &Registry, mark: LogMark, images: &[&ImageInfo]) -> usize {
    let gets = registry.blob_gets_since(mark);
    let mut blobs: Vec<String> = images
        .iter()
        .flat_map(|i| i.blobs())
        .map(|b| b.digest)
        .collect();
    blobs.sort();
    blobs.dedup();
    for b in &blobs {
        assert_eq!(gets.get(b).copied().unwrap_or(0), 1, "registry GETs of {b}");
    }
    blobs.len()
}

#[test]
fn honest_agents_converge_on_the_newest_verified_image_through_hostile_peers_and_kills() {
    if !require_tools(&["docker-registry", "umoci", "skopeo", "busybox"]) {
        return;
    }
    let seed = chaos_seed();
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
    kill_and_restart(&mut agents, (&seeder, root), &mut rng, started);
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

    let (bans, replays) = assert_bans_and_refusals(root, &honest_all, &ids);
    let blobs = assert_one_get_per_blob(&registry, mark, &[&v1, &v2]);
    eprintln!(
        "chaos: {} honest agents on v2 {secs:.1}s after its release ({} killed), bans {bans:?}, \
         replays refused {replays}, registry GETs 1 x {blobs} blobs",
        honest_all.len(),
        KILLED,
    );
    // The seeder's view agrees: the release it reports is v2's.
    assert!(!v2_id.is_empty() && v2_id != v1_id);
}
