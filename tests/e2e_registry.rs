//! End to end against real components: a `docker-registry` on 127.0.0.1, an image built
//! with umoci (busybox-static rootfs + a 64 MiB random layer) and pushed with skopeo,
//! then `blobswarm seed` and four `blobswarm agent`s as separate OS processes.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use blobswarm_testkit::{Binary, Swarm, TestImage, run, sha256_digest};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));
const AGENTS: usize = 4;
const IMAGE: TestImage = TestImage::new(64 << 20, 7, "test/img");

fn blob_bytes(layout: &Path, digest: &str) -> Vec<u8> {
    let path = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn registry_image_reaches_four_agent_processes_with_one_get_per_blob() {
    // Build and push the image (counting only registry requests made after the push),
    // and start the seeder.
    let Some(mut swarm) = Swarm::start(BLOBSWARM, IMAGE, &[]) else {
        return;
    };
    let (root, seeder, pushed) = (&swarm.root, &mut swarm.seeder, &swarm.pushed);
    let (registry, image, reference) = (&pushed.registry, &pushed.image, pushed.reference.as_str());
    let (src, mark) = (&pushed.src, pushed.mark);
    assert!(
        image.layers.len() >= 3,
        "test image needs at least 3 layers: {image:?}"
    );

    let mut agents = seeder.start_agents(AGENTS, &[]);
    let release = seeder.proc.wait_line("release ", Duration::from_secs(120));
    assert!(
        release.ends_with(&reference),
        "release line {release:?} names {reference}"
    );
    for a in &mut agents {
        let line = a.wait_line("imported ", Duration::from_secs(180));
        assert!(line.ends_with(&reference), "{}: {line}", a.name);
    }

    // Every agent's layout holds byte-identical, digest-correct blobs and the manifest.
    for i in 0..AGENTS {
        let layout = root.join(format!("agent-{i}/oci"));
        for blob in image.blobs() {
            let got = blob_bytes(&layout, &blob.digest);
            assert_eq!(
                sha256_digest(&got),
                blob.digest,
                "agent-{i} blob {}",
                blob.digest
            );
            assert_eq!(
                got,
                blob_bytes(src, &blob.digest),
                "agent-{i} blob {} differs",
                blob.digest
            );
        }
        let manifest = blob_bytes(&layout, &image.manifest_digest);
        assert_eq!(sha256_digest(&manifest), image.manifest_digest);
        // The layout is usable by standard OCI tools.
        let out = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci:{}:{reference}", layout.display()),
        ]));
        assert_eq!(
            sha256_digest(&out.stdout),
            image.manifest_digest,
            "skopeo sees another manifest"
        );
        let out = run(Command::new("umoci").args(["ls", "--layout", layout.to_str().unwrap()]));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(reference),
            "umoci ls does not list {reference}"
        );
    }

    // The registry served each blob exactly once, in total, to the whole swarm.
    let gets: HashMap<String, usize> = registry.blob_gets_since(mark);
    eprintln!("registry blob GETs after push: {gets:?}");
    for blob in image.blobs() {
        assert_eq!(
            gets.get(&blob.digest).copied().unwrap_or(0),
            1,
            "GETs of {}",
            blob.digest
        );
    }
    assert_eq!(
        gets.values().sum::<usize>(),
        image.blobs().len(),
        "unexpected blob GETs: {gets:?}"
    );
}
