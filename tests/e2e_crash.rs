//! Crash safety with real processes: an agent SIGKILLed mid-download resumes on restart
//! from the chunks it had checkpointed as verified, re-fetches only the rest, and never
//! imports an unverified byte (a chunk corrupted on disk while it was down is re-fetched).

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use blobswarm_core::{Bitfield, DEFAULT_CHUNK_SIZE, codec};
use blobswarm_testkit::{Binary, Swarm, TestImage, assert_layout_holds, wait_until};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));
const IMAGE: TestImage = TestImage::new(48 << 20, 5, "test/crash");

/// The checkpointed bitfield of a partial blob, if one was written.
fn checkpoint(store: &Path, hex: &str) -> Option<Bitfield> {
    let bytes = std::fs::read(store.join("resume").join(hex)).ok()?;
    codec::decode(&bytes).ok()
}

#[test]
fn sigkilled_agent_resumes_from_verified_chunks_and_refetches_only_the_rest() {
    let Some(swarm) = Swarm::start(BLOBSWARM, IMAGE, &[]) else {
        return;
    };
    let (root, seeder, pushed) = (&swarm.root, &swarm.seeder, &swarm.pushed);
    let blobs = pushed.blobs();
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let big = blobs.iter().max_by_key(|b| b.size).unwrap().clone();
    let big_hex = big.digest.trim_start_matches("sha256:").to_owned();
    let store = root.join("agent-0/store");

    // Capped so the kill lands mid-transfer: 48 MiB at 8 MiB/s takes about 6 s.
    let mut agent = seeder.start_agent(0, &["--max-download-rate", "8MiB"]);
    let started = Instant::now();
    wait_until(Duration::from_secs(60), "three checkpointed chunks", || {
        checkpoint(&store, &big_hex).is_some_and(|b| b.count() >= 3)
    });
    agent.kill();
    let killed_after = started.elapsed();
    assert!(
        !agent.printed("imported "),
        "the agent finished before it was killed"
    );

    // What the dead agent left: a checkpoint of the big layer, and maybe complete blobs.
    let have = checkpoint(&store, &big_hex).expect("a checkpoint survives the kill");
    assert!(!have.is_full(), "killed too late: {} chunks", have.count());
    let complete: u64 = blobs
        .iter()
        .filter(|b| {
            store
                .join("blobs/sha256")
                .join(b.digest.trim_start_matches("sha256:"))
                .is_file()
        })
        .map(|b| b.size)
        .sum();
    // Corrupt one checkpointed chunk on disk: the restart must re-hash, drop and re-fetch it.
    let bad = have.ones().next().unwrap();
    let partial = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.join("partial").join(&big_hex))
        .unwrap();
    let at = u64::from(bad) * u64::from(DEFAULT_CHUNK_SIZE) + 1000;
    let mut byte = [0u8];
    partial.read_exact_at(&mut byte, at).unwrap();
    partial.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
    drop(partial);
    let chunk_len = |i: u32| {
        let start = u64::from(i) * u64::from(DEFAULT_CHUNK_SIZE);
        (start + u64::from(DEFAULT_CHUNK_SIZE)).min(big.size) - start
    };
    let expected_resumed: u64 = complete
        + have
            .ones()
            .filter(|&i| i != bad)
            .map(chunk_len)
            .sum::<u64>();

    let restarted = Instant::now();
    let mut agent = seeder.start_agent(0, &[]);
    agent.wait_line("imported ", Duration::from_secs(60));
    let resume_secs = restarted.elapsed().as_secs_f64();
    agent.terminate(Duration::from_secs(20));
    let counts: Vec<u64> = agent
        .wait_line("fetched ", Duration::from_secs(5))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let (fetched, resumed) = (counts[0], counts[1]);
    eprintln!(
        "killed after {:.1}s with {} of {} chunks of the {} MiB layer checkpointed (+{complete} bytes of complete blobs); \
         restart: resumed {resumed} bytes, fetched {fetched} of {total} in {resume_secs:.1}s",
        killed_after.as_secs_f64(),
        have.count(),
        have.len(),
        big.size >> 20
    );
    assert_eq!(
        resumed, expected_resumed,
        "resumed exactly the checkpointed chunks that still verify"
    );
    assert_eq!(
        fetched,
        total - resumed,
        "re-fetched only what was not verified"
    );
    let log = std::fs::read_to_string(root.join("agent-0.log")).unwrap();
    assert!(
        log.contains("checkpointed chunks failed their hash on disk"),
        "the corrupted chunk was not reported"
    );

    assert_layout_holds(&root.join("agent-0/oci"), &blobs, "agent-0");
    pushed.assert_one_get_per_blob();
}
