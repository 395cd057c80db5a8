//! Disk full with a real process: an agent whose data directory sits on a tmpfs too small
//! for the image reports the full disk naming the file, pauses (no peer is blamed, nothing
//! is imported half-way), and completes once the tmpfs is grown.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use blobswarm_testkit::{Binary, Swarm, TestImage, assert_layout_holds, require_tool, wait_until};

const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));
const IMAGE: TestImage = TestImage::new(32 << 20, 9, "test/diskfull");

/// A tmpfs mounted for the test's life; unmounted on drop, also when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot mount a tmpfs on {} (needs root)", dir.display());
        Self(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot grow the tmpfs on {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_pauses_the_download_with_a_clear_error_and_it_completes_when_space_returns() {
    if !require_tool("mount") {
        return;
    }
    let Some(swarm) = Swarm::start(BLOBSWARM, IMAGE, &[]) else {
        return;
    };
    let (root, seeder, pushed) = (&swarm.root, &swarm.seeder, &swarm.pushed);
    let blobs = pushed.blobs();

    // The agent's data dir is `root/agent-0`: put it on a tmpfs half the image's size.
    let disk = Tmpfs::mount(&root.join("agent-0"), "16m");
    let mut agent = seeder.start_agent(0, &[]);
    let log_path = root.join("agent-0.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until(
        Duration::from_secs(60),
        "a disk-full error in the log",
        || log().contains("No space left on device"),
    );
    let full_at = Instant::now();
    // Paused, not failed: it keeps running, imports nothing, and keeps its peers.
    std::thread::sleep(Duration::from_secs(4));
    let text = log();
    let line = text
        .lines()
        .find(|l| l.contains("No space left on device"))
        .unwrap();
    assert!(
        line.contains("cannot store chunk") && line.contains("/store/partial/"),
        "the error names what failed and the file: {line}"
    );
    assert!(
        line.contains("download paused"),
        "the error says what happens next: {line}"
    );
    assert!(!agent.printed("imported "), "imported with a full disk");
    assert!(
        !text.contains("misbehaved"),
        "a full disk is nobody's fault:\n{text}"
    );
    let layout = root.join("agent-0/oci/blobs/sha256");
    for b in &blobs {
        let hex = b.digest.trim_start_matches("sha256:");
        assert!(
            !layout.join(hex).exists(),
            "{} reached the image store before the download finished",
            b.digest
        );
    }
    let errors = text.matches("No space left on device").count();

    disk.resize("128m");
    agent.wait_line("imported ", Duration::from_secs(60));
    eprintln!(
        "disk full: {errors} store errors logged while full; completed {:.1}s after space returned (4 s of that the test's own wait)",
        full_at.elapsed().as_secs_f64()
    );
    assert_layout_holds(&root.join("agent-0/oci"), &blobs, "agent-0");
    pushed.assert_one_get_per_blob();
    agent.kill();
    drop(disk);
}
