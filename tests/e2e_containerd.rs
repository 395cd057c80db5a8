//! End to end into containerd: registry → seeder → two agent processes, each importing
//! into its own real containerd; then `ctr run` starts a container from the image.
#![cfg(feature = "containerd")]

mod support;

use std::process::Command;
use std::time::Duration;

use blobswarm_testkit::{
    Containerd, Registry, build_test_image, push_image, require_containerd, require_tools, run,
};
use support::Proc;

#[test]
fn swarm_delivered_image_runs_in_containerd_on_every_agent() {
    if !require_tools(&["docker-registry", "umoci", "skopeo", "busybox"]) || !require_containerd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let registry = Registry::start(&root.join("registry"));
    let src = root.join("src-layout");
    let image = build_test_image(&src, "v1", 16 << 20, 5);
    let reference = push_image(&src, "v1", &registry.addr(), "test/ctd");

    let key = root.join("seeder.key");
    let out = run(Command::new(env!("CARGO_BIN_EXE_blobswarm")).args([
        "keygen",
        "--out",
        key.to_str().unwrap(),
    ]));
    let seeder_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut seeder = Proc::start(
        "seeder",
        &[
            "seed",
            &reference,
            "--key-file",
            key.to_str().unwrap(),
            "--data-dir",
            root.join("seeder").to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--insecure-registry",
            &registry.addr(),
        ],
        &root.join("seeder.log"),
    );
    let seeder_addr = seeder.wait_line("listening ", Duration::from_secs(30));

    let runtimes: Vec<Containerd> = (0..2)
        .map(|i| Containerd::start(&root.join(format!("ctd-{i}"))))
        .collect();
    let mut agents: Vec<Proc> = runtimes
        .iter()
        .enumerate()
        .map(|(i, ctd)| {
            let dir = root.join(format!("agent-{i}"));
            Proc::start(
                &format!("agent-{i}"),
                &[
                    "agent",
                    "--data-dir",
                    dir.to_str().unwrap(),
                    "--listen",
                    "/ip4/127.0.0.1/tcp/0",
                    "--bootstrap",
                    &seeder_addr,
                    "--trust-seeder",
                    &seeder_id,
                    "--runtime",
                    "containerd",
                    "--containerd-socket",
                    ctd.socket().to_str().unwrap(),
                    "--snapshotter",
                    ctd.snapshotter(),
                ],
                &root.join(format!("agent-{i}.log")),
            )
        })
        .collect();
    for a in &mut agents {
        let line = a.wait_line("imported ", Duration::from_secs(120));
        assert!(line.ends_with(&reference), "{}: {line}", a.name);
    }
    for (i, ctd) in runtimes.iter().enumerate() {
        let images = ctd.ctr_ok(&["images", "ls"]);
        assert!(
            images.contains(&reference),
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
            &reference,
            &format!("t{i}"),
            "/bin/busybox",
            "echo",
            "OK",
        ]);
        assert_eq!(out.trim(), "OK", "agent-{i}: container output");
    }
}
