//! A private, real containerd for import tests (needs root, `containerd`, `ctr`, `runc`).
//!
//! Each instance has its own root, state and sockets, so tests run in parallel and never
//! touch a node's containerd. The sockets live in a short `/tmp/bsw-ctd-XXXX` directory,
//! because a unix socket path must stay under ~100 bytes.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long containerd may take to start serving its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a terminated containerd may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// [`crate::require_tools`] for `containerd`, `ctr` and `runc`, plus root (containerd
/// mounts snapshots and runs containers). Same semantics: a missing piece skips the test
/// outside CI and fails it under CI.
pub fn require_containerd() -> bool {
    if !crate::require_tools(&["containerd", "ctr", "runc"]) {
        return false;
    }
    if crate::image::is_root() {
        return true;
    }
    assert!(
        !crate::under_ci(),
        "containerd tests need root; under CI a missing component is a failure"
    );
    eprintln!("SKIP: containerd tests need root");
    false
}

/// A containerd process owned by a test; stopped (and its mounts removed) on drop.
#[derive(Debug)]
pub struct Containerd {
    /// Short directory holding the sockets.
    sock_dir: tempfile::TempDir,
    /// `<tmp>/containerd`: config, root, state and log.
    base: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    snapshotter: String,
}

impl Containerd {
    /// Starts containerd with root, state and log under `tmp/containerd` and waits until
    /// its socket answers. The snapshotter is `overlayfs` if an overlay mount works here,
    /// else `native` (or `BLOBSWARM_TEST_SNAPSHOTTER`); the CRI plugin is configured with
    /// the same one. Panics with the log tail if containerd does not come up.
    pub fn start(tmp: &Path) -> Self {
        let base = tmp.join("containerd");
        fs::create_dir_all(&base).expect("create containerd base dir");
        let sock_dir = tempfile::Builder::new()
            .prefix("bsw-ctd-")
            .tempdir_in("/tmp")
            .expect("create short socket dir under /tmp");
        let root = base.join("root");
        let state = base.join("state");
        fs::create_dir_all(&root).expect("create containerd root");
        let snapshotter = std::env::var("BLOBSWARM_TEST_SNAPSHOTTER")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                if overlay_works(&base) {
                    "overlayfs".to_owned()
                } else {
                    "native".to_owned()
                }
            });
        let sock = sock_dir.path().join("c.sock");
        assert!(
            sock.as_os_str().len() < 100,
            "socket path {} too long for a unix socket",
            sock.display()
        );
        let config = base.join("config.toml");
        let q = |p: &Path| toml_string(&p.display().to_string());
        fs::write(
            &config,
            format!(
                r#"version = 2
root = {root}
state = {state}

[grpc]
  address = {sock}

[ttrpc]
  address = {ttrpc}

[debug]
  address = {debug}
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = {snap}
"#,
                root = q(&root),
                state = q(&state),
                sock = q(&sock),
                ttrpc = q(&sock_dir.path().join("c.sock.ttrpc")),
                debug = q(&sock_dir.path().join("d.sock")),
                opt = q(&base.join("opt")),
                snap = toml_string(&snapshotter),
            ),
        )
        .expect("write containerd config");
        let mut c = Self {
            sock_dir,
            log: base.join("containerd.log"),
            base,
            config,
            child: None,
            snapshotter,
        };
        c.spawn();
        eprintln!(
            "containerd up at {} (snapshotter {})",
            c.socket().display(),
            c.snapshotter
        );
        c
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.sock_dir.path().join("c.sock")
    }

    /// containerd's root directory (content store, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.base.join("root")
    }

    /// The snapshotter that works on this machine: `overlayfs` or `native`.
    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    /// The last `lines` lines of containerd's log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `ctr --address SOCK -n k8s.io ARGS` and returns its output (not checked).
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in("k8s.io", args)
    }

    /// [`Self::ctr`] that panics (with stderr and the log tail) unless it succeeds;
    /// returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        self.ctr_in_ok("k8s.io", args)
    }

    /// Runs `ctr --address SOCK -n NAMESPACE ARGS` (not checked): several agents can share
    /// one containerd, each in its own namespace.
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    /// [`Self::ctr_in`] that panics (with stderr and the log tail) unless it succeeds;
    /// returns stdout.
    pub fn ctr_in_ok(&self, namespace: &str, args: &[&str]) -> String {
        let out = self.ctr_in(namespace, args);
        assert!(
            out.status.success(),
            "ctr -n {namespace} {args:?} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- containerd log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail(30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills containerd with SIGKILL (a crash: no cleanup) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills containerd (if running) and starts it again with the same config and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "containerd is already running");
        // A crashed containerd leaves its socket file; waiting must see the new one.
        let _ = fs::remove_file(self.socket());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open containerd log");
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("poll containerd") {
                panic!(
                    "containerd exited with {status} during start\n--- log ---\n{}",
                    self.log_tail(40)
                );
            }
            if UnixStream::connect(self.socket()).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "containerd did not serve {} within {START_TIMEOUT:?}\n--- log ---\n{}",
                    self.socket().display(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// SIGTERM, then SIGKILL if containerd does not exit in time.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        kill_shims(&self.socket());
        for dir in [self.base.as_path(), self.sock_dir.path()] {
            unmount_under(dir);
        }
    }
}

/// Whether an overlay mount works on the filesystem under `dir` (it does not inside some
/// sandboxes or on top of another overlay).
fn overlay_works(dir: &Path) -> bool {
    let probe = dir.join("overlay-probe");
    let parts = ["lower", "upper", "work", "merged"].map(|p| probe.join(p));
    for p in &parts {
        if fs::create_dir_all(p).is_err() {
            return false;
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        parts[0].display(),
        parts[1].display(),
        parts[2].display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&parts[3])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        let _ = Command::new("umount").arg(&parts[3]).status();
    }
    let _ = fs::remove_dir_all(&probe);
    mounted
}

/// Unmounts every mount point under `dir`, deepest first, so the directory can be removed.
fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Ok(dir) = dir.canonicalize() else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let ok = Command::new("umount")
            .arg(&p)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
}

/// Kills containerd-shim processes started for this containerd (left when a test panics
/// while a container runs); they name our socket on their command line.
fn kill_shims(socket: &Path) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    let needle = socket.display().to_string();
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmdline) = fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("containerd-shim") && cmdline.contains(&needle) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
