//! Herd guard with real processes: the seeder is SIGKILLed after sending a fraction of
//! the image, and the agents fetch each chunk nobody has from the registry, one node
//! per chunk, then complete with verified blobs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blobswarm_testkit::{Binary, Swarm, TestImage, assert_layout_holds};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));
const AGENTS: usize = 6;
const IMAGE: TestImage = TestImage::new(48 << 20, 23, "test/herd");

/// The `(blob, index)` pairs an agent's log says it fetched from the registry.
fn registry_fetches(log: &str) -> Vec<(String, u32)> {
    let plain = strip_ansi(log);
    plain
        .lines()
        .filter(|l| l.contains("herd guard: fetching an orphaned chunk"))
        .map(|l| {
            let field = |name: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {l:?}"))
                    .to_owned()
            };
            (field("blob="), field("index=").parse().unwrap())
        })
        .collect()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn agents_fetch_each_orphaned_chunk_once_from_the_registry_when_the_seeder_dies() {
    // 1 MiB chunks and a slow seeder: when it dies most chunks exist nowhere else.
    let slow = ["--chunk-size", "1MiB", "--max-upload-rate", "8MiB"];
    let Some(mut swarm) = Swarm::start(BLOBSWARM, IMAGE, &slow) else {
        return;
    };
    let (root, seeder, pushed) = (&swarm.root, &mut swarm.seeder, &swarm.pushed);
    let (registry, image) = (&pushed.registry, &pushed.image);
    let (mark, total) = (pushed.mark, pushed.total_bytes());
    let addr = registry.addr();
    let fallback = [
        "--registry-fallback",
        addr.as_str(),
        "--insecure-registry",
        addr.as_str(),
        "--herd-fast",
    ];
    let mut agents = seeder.start_agents(AGENTS, &fallback);
    seeder.proc.wait_line("release ", Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(1500));
    seeder.proc.kill();
    let killed = Instant::now();
    eprintln!("seeder SIGKILLed 1.5 s after its release");

    let mut done = Vec::new();
    for (i, a) in agents.iter_mut().enumerate() {
        a.wait_line("imported ", Duration::from_secs(120));
        done.push((i, killed.elapsed().as_secs_f64()));
    }
    eprintln!("agents done after the seeder died (s): {done:?}");
    let blobs = image.blobs();
    for i in 0..AGENTS {
        let agent = format!("agent-{i}");
        assert_layout_holds(&root.join(&agent).join("oci"), &blobs, &agent);
    }

    let mut fetched: HashMap<(String, u32), usize> = HashMap::new();
    for i in 0..AGENTS {
        let log = std::fs::read_to_string(root.join(format!("agent-{i}.log"))).unwrap();
        for key in registry_fetches(&log) {
            *fetched.entry(key).or_default() += 1;
        }
    }
    let entries = registry.access_log_since(mark);
    let full_gets = |digest: &str| {
        entries
            .iter()
            .filter(|e| e.method == "GET" && e.status == 200 && e.path.ends_with(digest))
            .count()
    };
    let range_gets = entries
        .iter()
        .filter(|e| e.method == "GET" && e.status == 206)
        .count();
    let chunks: u64 = image.blobs().iter().map(|b| b.size.div_ceil(1 << 20)).sum();
    let fetches: usize = fetched.values().sum();
    eprintln!(
        "image {total} bytes in {chunks} chunks; registry range GETs {range_gets}; chunks fetched by the herd guard {} (fetches {fetches})",
        fetched.len()
    );
    for blob in image.blobs() {
        assert_eq!(
            full_gets(&blob.digest),
            1,
            "whole-blob GETs of {}",
            blob.digest
        );
    }
    assert!(
        fetches > 0,
        "the seeder died early; some chunk must have come from the registry"
    );
    assert!(fetches as u64 <= chunks);
    assert_eq!(range_gets, fetches, "each logged fetch is one range GET");
    for (chunk, n) in &fetched {
        assert_eq!(
            *n, 1,
            "chunk {chunk:?} was fetched from the registry {n} times"
        );
    }
}
