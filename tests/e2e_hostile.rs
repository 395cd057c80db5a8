//! Hostile peers with real processes: four agents misbehave (corrupted chunks, oversized
//! chunks, frames the codec refuses, a request flood); honest nodes (agents or the seeder)
//! ban each of them with a log line naming it, the honest agents fetch their chunks
//! elsewhere and end with verified images.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blobswarm_testkit::{Binary, Proc, Swarm, TestImage, assert_layout_holds};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));
const IMAGE: TestImage = TestImage::new(24 << 20, 3, "test/hostile");
const HOSTILE: [&str; 4] = ["corrupt", "oversized", "malformed", "flood"];
const HONEST: usize = 3;
/// The misbehaving agent binary (a real agent with testkit's hostile hooks).
const ROGUE: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm-rogue"));

#[test]
fn honest_agents_ban_every_hostile_peer_and_complete_with_verified_images() {
    let Some(swarm) = Swarm::start(BLOBSWARM, IMAGE, &[]) else {
        return;
    };
    let (root, seeder) = (&swarm.root, &swarm.seeder);
    let blobs = swarm.pushed.blobs();
    // The hostile agents get the image first (from the seeder), so they have chunks to
    // serve badly when the honest ones arrive.
    let mut hostile: Vec<(Proc, String)> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, mode)| {
            let name = format!("agent-{i}");
            let (dir, log) = (root.join(&name), root.join(format!("{name}.log")));
            let mut p = seeder.start_agent_of(ROGUE, &name, &dir, &["--hostile", mode], &log);
            let id = p.wait_peer_id(Duration::from_secs(30));
            (p, id)
        })
        .collect();
    for (p, _) in &mut hostile {
        p.wait_line("imported ", Duration::from_secs(60));
    }
    let started = Instant::now();
    let mut honest: Vec<Proc> = (0..HONEST)
        .map(|i| seeder.start_agent(HOSTILE.len() + i, &[]))
        .collect();
    for a in &mut honest {
        a.wait_line("imported ", Duration::from_secs(60));
    }
    let secs = started.elapsed().as_secs_f64();

    // Offences that need no chunk exchange (the flood) may be noticed only after an
    // honest agent finished, so give every ban line a bounded while to appear.
    // The seeder counts as an honest node: a flood that reaches it first is banned there,
    // and the honest agents then never learn the flooder's address.
    let read_logs = || -> Vec<String> {
        (0..HONEST)
            .map(|i| format!("agent-{}.log", HOSTILE.len() + i))
            .chain(["seeder.log".to_owned()])
            .map(|name| std::fs::read_to_string(root.join(name)).unwrap())
            .collect()
    };
    let all_banned = |logs: &[String]| {
        hostile.iter().all(|(_, id)| {
            logs.iter()
                .flat_map(|l| l.lines())
                .any(|l| l.contains("banning peer") && l.contains(id.as_str()))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut logs = read_logs();
    while !all_banned(&logs) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        logs = read_logs();
    }
    let mut bans = HashMap::new();
    for (mode, (_, id)) in HOSTILE.iter().zip(&hostile) {
        let lines: Vec<&str> = logs
            .iter()
            .flat_map(|l| l.lines())
            .filter(|l| l.contains("banning peer") && l.contains(id.as_str()))
            .collect();
        assert!(!lines.is_empty(), "the {mode} peer {id} was never banned");
        bans.insert(*mode, lines.len());
        eprintln!("{mode}: {}", lines[0]);
    }
    for log in &logs {
        assert!(
            !log.lines()
                .any(|l| l.contains("banning peer") && l.contains(seeder.id.as_str())),
            "the honest seeder was banned"
        );
    }
    eprintln!(
        "{HONEST} honest agents done in {secs:.1}s next to hostile ones; bans by mode {bans:?}"
    );

    for i in 0..HONEST {
        let agent = format!("agent-{}", HOSTILE.len() + i);
        assert_layout_holds(&root.join(&agent).join("oci"), &blobs, &agent);
    }
    swarm.pushed.assert_one_get_per_blob();
}
