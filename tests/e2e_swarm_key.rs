//! A private swarm (`--swarm-key-file`, libp2p pnet) as OS processes: agents holding the
//! seeder's swarm key import the image; an agent without it, or with another key,
//! cannot connect and fetches nothing.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use blobswarm_testkit::{build_test_image, require_tools};
use support::{Proc, blobswarm};

fn agent(root: &Path, name: &str, seeder_addr: &str, seeder_id: &str, key: Option<&Path>) -> Proc {
    let dir = root.join(name);
    let mut args = vec![
        "agent".to_owned(),
        "--data-dir".to_owned(),
        dir.display().to_string(),
        "--listen".to_owned(),
        "/ip4/127.0.0.1/tcp/0".to_owned(),
        "--bootstrap".to_owned(),
        seeder_addr.to_owned(),
        "--trust-seeder".to_owned(),
        seeder_id.to_owned(),
    ];
    if let Some(key) = key {
        args.push("--swarm-key-file".to_owned());
        args.push(key.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start(name, &args, &root.join(format!("{name}.log")))
}

#[test]
fn only_nodes_with_the_swarm_key_fetch_anything() {
    if !require_tools(&["umoci", "busybox"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let layout = root.join("layout");
    build_test_image(&layout, "v1", 2 << 20, 21);
    let swarm_key = root.join("swarm.key");
    let other_key = root.join("other.key");
    let fingerprint = blobswarm(&[
        "keygen",
        "--swarm-key",
        "--out",
        swarm_key.to_str().unwrap(),
    ]);
    blobswarm(&[
        "keygen",
        "--swarm-key",
        "--out",
        other_key.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&swarm_key).unwrap();
    assert!(
        text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"),
        "{text}"
    );
    assert!(!text.contains(&fingerprint));
    let seeder_key = root.join("seeder.key");
    let seeder_id = blobswarm(&["keygen", "--out", seeder_key.to_str().unwrap()]);

    let image = format!("oci-layout:{}:v1", layout.display());
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
            "/ip4/127.0.0.1/tcp/0",
            "--swarm-key-file",
            swarm_key.to_str().unwrap(),
        ],
        &root.join("seeder.log"),
    );
    let addr = seeder.wait_line("listening ", Duration::from_secs(30));
    seeder.wait_line("release ", Duration::from_secs(60));

    let started = Instant::now();
    let mut outsider = agent(root, "no-key", &addr, &seeder_id, None);
    let mut wrong = agent(root, "wrong-key", &addr, &seeder_id, Some(&other_key));
    let mut keyed = agent(root, "keyed", &addr, &seeder_id, Some(&swarm_key));
    keyed.wait_line("imported ", Duration::from_secs(60));
    let keyed_secs = started.elapsed().as_secs_f64();
    // Give the others as long again (at least 3 s) to prove they are kept out.
    std::thread::sleep(Duration::from_secs_f64(keyed_secs.max(3.0)));
    for (p, name) in [(&mut outsider, "no-key"), (&mut wrong, "wrong-key")] {
        assert!(
            !p.printed("imported "),
            "{name} imported without the swarm key"
        );
        let layout_index = root.join(name).join("oci/index.json");
        assert!(
            !layout_index.exists(),
            "{name} wrote {}",
            layout_index.display()
        );
        let store = root.join(name).join("store");
        let stored: u64 = walk_bytes(&store);
        assert_eq!(stored, 0, "{name} stored {stored} bytes");
    }
    eprintln!(
        "keyed agent imported in {keyed_secs:.2} s; the unkeyed and wrong-key agents got 0 bytes"
    );
}

/// Bytes in regular files under `dir` (0 if it does not exist).
fn walk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}
