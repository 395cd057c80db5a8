//! Running `blobswarm` as separate OS processes: stdout lines are read on a thread, and
//! every child is killed when its handle drops, so a failing test leaves nothing behind.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running `blobswarm` process.
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    /// Starts `blobswarm ARGS`, logging stderr to `log`.
    pub(crate) fn start(name: &str, args: &[&str], log: &Path) -> Self {
        let log_file = std::fs::File::create(log).expect("creating process log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_blobswarm"))
            .args(args)
            .env("BLOBSWARM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name: name.to_owned(),
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    pub(crate) fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return l[prefix.len()..].trim().to_owned();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_owned();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {prefix:?} line within {timeout:?}; saw {:?}",
                        self.name, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{}: exited ({status:?}) before printing {prefix:?}; saw {:?}",
                        self.name, self.seen
                    )
                }
            }
        }
    }

    /// Asks the process to stop (SIGTERM) and waits for it to exit.
    pub(crate) fn terminate(&mut self, timeout: Duration) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{}: did not exit within {timeout:?} of SIGTERM", self.name);
    }

    /// Whether a line starting with `prefix` has been printed so far (does not wait).
    pub(crate) fn printed(&mut self, prefix: &str) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().any(|l| l.starts_with(prefix))
    }

    /// Sends SIGKILL now.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `blobswarm ARGS` to completion and returns its trimmed stdout.
pub(crate) fn blobswarm(args: &[&str]) -> String {
    let out = blobswarm_testkit::run(Command::new(env!("CARGO_BIN_EXE_blobswarm")).args(args));
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .trim()
        .to_owned()
}

/// A `blobswarm seed` process serving `reference` from a plain-HTTP registry on 127.0.0.1.
pub(crate) struct Seeder {
    pub(crate) proc: Proc,
    /// Its peer id, what agents trust.
    pub(crate) id: String,
    /// Its listen multiaddr (with `/p2p/<id>`), what agents bootstrap from.
    pub(crate) addr: String,
}

impl Seeder {
    /// Creates the seeder key with `keygen`, starts `seed` and waits until it listens.
    pub(crate) fn start(root: &Path, reference: &str, registry_addr: &str) -> Self {
        Self::start_with(root, reference, registry_addr, &[])
    }

    /// [`Self::start`] with `extra` flags appended to `seed`.
    pub(crate) fn start_with(
        root: &Path,
        reference: &str,
        registry_addr: &str,
        extra: &[&str],
    ) -> Self {
        let key = root.join("seeder.key");
        let id = blobswarm(&["keygen", "--out", key.to_str().unwrap()]);
        let data_dir = root.join("seeder");
        let mut args = vec![
            "seed",
            reference,
            "--key-file",
            key.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--insecure-registry",
            registry_addr,
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::start("seeder", &args, &root.join("seeder.log"));
        let addr = proc.wait_line("listening ", Duration::from_secs(30));
        assert!(addr.ends_with(&id), "{addr} should end with /p2p/{id}");
        Self { proc, id, addr }
    }

    /// Starts agent `i` (data dir `root/agent-i`) that trusts and bootstraps from this
    /// seeder, with `extra` flags appended.
    pub(crate) fn start_agent(&self, root: &Path, i: usize, extra: &[&str]) -> Proc {
        self.start_agent_logged(root, i, extra, &root.join(format!("agent-{i}.log")))
    }

    /// [`Self::start_agent`] logging to `log` (a restarted agent keeps its earlier log).
    pub(crate) fn start_agent_logged(
        &self,
        root: &Path,
        i: usize,
        extra: &[&str],
        log: &Path,
    ) -> Proc {
        let dir = root.join(format!("agent-{i}"));
        let mut args = vec![
            "agent",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &self.addr,
            "--trust-seeder",
            &self.id,
        ];
        args.extend_from_slice(extra);
        Proc::start(&format!("agent-{i}"), &args, log)
    }
}
