//! `--bootstrap dns:NAME:PORT` as OS processes: an agent started before any seeder exists
//! keeps resolving the name and gets the release from a seeder started after it (the
//! headless-Service bootstrap of deploy/). `localhost` resolves from /etc/hosts to
//! 127.0.0.1, so nothing leaves the loopback network; a `/dns6/localhost/...` bootstrap
//! (no AAAA answer) is logged once as not resolving and is not fatal.

use std::time::{Duration, Instant};

use blobswarm_testkit::{Binary, LayoutImage, Seeder, SeederKey, free_port};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));

#[test]
fn an_agent_finds_a_seeder_started_after_it_by_name() {
    let Some(image) = LayoutImage::build(1 << 20, 33) else {
        return;
    };
    let root = &image.root;
    let seeder_key = SeederKey::generate(BLOBSWARM, root);
    // A free loopback port for the seeder, known before it starts.
    let port = free_port();

    let agent_log = root.join("agent.log");
    let dns = format!("dns:localhost:{port}");
    let dns6 = format!("/dns6/localhost/tcp/{port}");
    let mut agent = BLOBSWARM.start(
        "agent",
        &[
            "agent",
            "--data-dir",
            root.join("agent").to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &dns,
            "--bootstrap",
            &dns6,
            "--trust-seeder",
            &seeder_key.id,
            "--runtime",
            "oci-layout",
        ],
        &agent_log,
    );
    agent.wait_line("listening ", Duration::from_secs(30));
    // Let the agent try (and fail) to reach the name's address a first time.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!agent.printed("imported "));

    let started = Instant::now();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let source = image.source();
    let mut seeder = Seeder::launch(
        BLOBSWARM,
        root,
        &seeder_key,
        &[&source, "--listen", &listen],
    );
    seeder.proc.wait_line("release ", Duration::from_secs(60));
    agent.wait_line("imported ", Duration::from_secs(60));
    let secs = started.elapsed().as_secs_f64();
    assert!(root.join("agent/oci/index.json").exists());

    let log = std::fs::read_to_string(&agent_log).unwrap();
    let resolved = log
        .lines()
        .filter(|l| l.contains("bootstrap name resolved") && l.contains(&dns))
        .count();
    let unresolved = log
        .lines()
        .filter(|l| l.contains("bootstrap name does not resolve"))
        .count();
    // One line per change: the answer never changed, and the AAAA-only name never resolved.
    assert_eq!(resolved, 1, "agent log:\n{log}");
    assert_eq!(unresolved, 1, "agent log:\n{log}");
    assert!(
        log.contains(&format!("127.0.0.1:{port}")),
        "agent log:\n{log}"
    );
    eprintln!("agent imported {secs:.1} s after the seeder started");
}
