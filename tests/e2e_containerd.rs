//! End to end into containerd: registry → seeder → two agent processes, each importing
//! into its own real containerd; then `ctr run` starts a container from the image.
#![cfg(feature = "containerd")]

use std::time::Duration;

use blobswarm_testkit::{Binary, Containerd, Proc, Swarm, TestImage, require_containerd};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));
const IMAGE: TestImage = TestImage::new(16 << 20, 5, "test/ctd");

#[test]
fn swarm_delivered_image_runs_in_containerd_on_every_agent() {
    if !require_containerd() {
        return;
    }
    let Some(swarm) = Swarm::start(BLOBSWARM, IMAGE, &[]) else {
        return;
    };
    let (root, seeder) = (&swarm.root, &swarm.seeder);
    let (image, reference) = (swarm.image(), swarm.reference());
    let runtimes: Vec<Containerd> = (0..2)
        .map(|i| Containerd::start(&root.join(format!("ctd-{i}"))))
        .collect();
    let mut agents: Vec<Proc> = runtimes
        .iter()
        .enumerate()
        .map(|(i, ctd)| {
            let socket = ctd.socket();
            seeder.start_agent(
                i,
                &[
                    "--runtime",
                    "containerd",
                    "--containerd-socket",
                    socket.to_str().unwrap(),
                    "--snapshotter",
                    ctd.snapshotter(),
                ],
            )
        })
        .collect();
    for a in &mut agents {
        let line = a.wait_line("imported ", Duration::from_secs(120));
        assert!(line.ends_with(reference), "{}: {line}", a.name);
    }
    for (i, ctd) in runtimes.iter().enumerate() {
        let images = ctd.ctr_ok(&["images", "ls"]);
        assert!(
            images.contains(reference),
            "agent-{i}: {reference} missing from\n{images}"
        );
        assert!(
            images.contains(&image.manifest_digest),
            "agent-{i}: digest missing from\n{images}"
        );
        assert!(
            images.contains(&image.config.digest),
            "agent-{i}: image ID (config digest) record missing from\n{images}"
        );
        assert!(
            images.contains("io.cri-containerd.image=managed"),
            "agent-{i}: CRI label missing\n{images}"
        );
        let out = ctd.ctr_ok(&[
            "run",
            "--rm",
            "--snapshotter",
            ctd.snapshotter(),
            reference,
            &format!("t{i}"),
            "/bin/busybox",
            "echo",
            "OK",
        ]);
        assert_eq!(out.trim(), "OK", "agent-{i}: container output");
    }
}
