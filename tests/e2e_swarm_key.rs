//! A private swarm (`--swarm-key-file`, libp2p pnet) as OS processes: agents holding the
//! seeder's swarm key import the image; an agent without it, or with another key,
//! cannot connect and fetches nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use blobswarm_testkit::{Binary, LayoutImage, Proc, Seeder, SeederKey};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));

/// Agent `name` (data dir `root/name`) of `seeder`'s swarm, holding the swarm key `key`.
fn agent(root: &Path, name: &str, seeder: &Seeder, key: Option<&Path>) -> Proc {
    let key_flags = key.map(|k| ["--swarm-key-file", k.to_str().unwrap()]);
    let log = root.join(format!("{name}.log"));
    seeder.start_agent_as(
        name,
        &root.join(name),
        key_flags.as_ref().map_or(&[], |f| f),
        &log,
    )
}

#[test]
fn only_nodes_with_the_swarm_key_fetch_anything() {
    let Some(image) = LayoutImage::build(2 << 20, 21) else {
        return;
    };
    let root = &image.root;
    let swarm_key = root.join("swarm.key");
    let other_key = root.join("other.key");
    let fingerprint = BLOBSWARM.run(&[
        "keygen",
        "--swarm-key",
        "--out",
        swarm_key.to_str().unwrap(),
    ]);
    BLOBSWARM.run(&[
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
    let seeder_key = SeederKey::generate(BLOBSWARM, root);
    let source = image.source();
    let mut seeder = Seeder::launch(
        BLOBSWARM,
        root,
        &seeder_key,
        &[&source, "--swarm-key-file", swarm_key.to_str().unwrap()],
    );
    seeder.proc.wait_line("release ", Duration::from_secs(60));

    let started = Instant::now();
    let mut outsider = agent(root, "no-key", &seeder, None);
    let mut wrong = agent(root, "wrong-key", &seeder, Some(&other_key));
    let mut keyed = agent(root, "keyed", &seeder, Some(&swarm_key));
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
