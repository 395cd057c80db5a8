//! `--bootstrap dns:NAME:PORT` as OS processes: an agent started before any seeder exists
//! keeps resolving the name and gets the release from a seeder started after it (the
//! headless-Service bootstrap of deploy/). `localhost` resolves from /etc/hosts to
//! 127.0.0.1, so nothing leaves the loopback network; a `/dns6/localhost/...` bootstrap
//! (no AAAA answer) is logged once as not resolving and is not fatal.

mod support;

use std::time::{Duration, Instant};

use blobswarm_testkit::{build_test_image, require_tools};
use support::{Proc, blobswarm};

#[test]
fn an_agent_finds_a_seeder_started_after_it_by_name() {
    if !require_tools(&["umoci", "busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let layout = root.join("layout");
    build_test_image(&layout, "v1", 1 << 20, 33);
    let seeder_key = root.join("seeder.key");
    let seeder_id = blobswarm(&["keygen", "--out", seeder_key.to_str().unwrap()]);
    // A free loopback port for the seeder, known before it starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let agent_log = root.join("agent.log");
    let dns = format!("dns:localhost:{port}");
    let dns6 = format!("/dns6/localhost/tcp/{port}");
    let mut agent = Proc::start(
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
            &seeder_id,
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
    let image = format!("oci-layout:{}:v1", layout.display());
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut seeder = Proc::start(
        "seeder",
        &[
            "seed",
            &image,
            "--key-file",
            seeder_key.to_str().unwrap(),
            "--data-dir",
            root.join("seeder").to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &root.join("seeder.log"),
    );
    seeder.wait_line("release ", Duration::from_secs(60));
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
