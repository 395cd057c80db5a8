//! Churn with real processes: a 256 MiB image from a real registry to 16 agents, a third of
//! them SIGKILLed mid-transfer; every survivor must still complete with verified blobs.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blobswarm_testkit::{Binary, Swarm, TestImage, assert_layout_holds};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));

const AGENTS: usize = 16;
const KILLED: [usize; 5] = [1, 4, 7, 10, 13];
const IMAGE: TestImage = TestImage::new(256 << 20, 11, "test/big");

#[test]
fn survivors_complete_when_a_third_of_the_agents_are_killed_mid_transfer() {
    let Some(mut swarm) = Swarm::start(BLOBSWARM, IMAGE, &[]) else {
        return;
    };
    let (root, seeder, pushed) = (&swarm.root, &mut swarm.seeder, &swarm.pushed);
    let (registry, image) = (&pushed.registry, &pushed.image);
    let (mark, total) = (pushed.mark, pushed.total_bytes());
    let mut agents = seeder.start_agents(AGENTS, &[]);
    seeder.proc.wait_line("release ", Duration::from_secs(180));
    let started = Instant::now();

    // Mid-transfer: the swarm moves 4 GiB in total, far more than it can in one second.
    std::thread::sleep(Duration::from_secs(1));
    for &i in &KILLED {
        assert!(
            !agents[i].printed("imported "),
            "agent-{i} finished before it could be killed"
        );
        agents[i].kill();
    }
    eprintln!(
        "killed agents {KILLED:?} with SIGKILL {:.1}s after the release",
        started.elapsed().as_secs_f64()
    );

    // Record completion times first, then verify, so the times are not inflated by checks.
    let mut done = Vec::new();
    for (i, a) in agents.iter_mut().enumerate() {
        if !KILLED.contains(&i) {
            a.wait_line("imported ", Duration::from_secs(300));
            done.push((i, started.elapsed().as_secs_f64()));
        }
    }
    eprintln!("survivor completion times (s): {done:?}");
    let blobs = image.blobs();
    for &(i, _) in &done {
        let agent = format!("agent-{i}");
        assert_layout_holds(&root.join(&agent).join("oci"), &blobs, &agent);
    }
    let survivors = AGENTS - KILLED.len();

    seeder.proc.terminate(Duration::from_secs(20));
    let uploaded: u64 = seeder
        .proc
        .wait_line("uploaded ", Duration::from_secs(5))
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("seeder prints its upload total");
    let gets: HashMap<String, usize> = registry.blob_gets_since(mark);
    let last = done.iter().map(|(_, t)| *t).fold(0.0, f64::max);
    eprintln!(
        "image {total} bytes; {survivors} survivors done in {last:.1}s; seeder uploaded {uploaded} bytes = {:.2}x image; registry blob GETs {gets:?}",
        uploaded as f64 / total as f64
    );
    pushed.assert_one_get_per_blob();
}
