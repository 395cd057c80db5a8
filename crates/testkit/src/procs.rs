//! Running a program under test (the `blobswarm` binary, or any other the tests build) as
//! separate OS processes: stdout lines are read on a thread, and every child is killed when
//! its handle drops, so a failing test leaves nothing behind.
//!
//! The binary's path is a parameter ([`Binary`]) because only the test target knows it
//! (`env!("CARGO_BIN_EXE_blobswarm")`); this crate is built before the binary exists.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// The program the end-to-end tests run, named by its path.
///
/// A test file declares it once:
/// `const BLOBSWARM: Binary = Binary::new(env!("CARGO_BIN_EXE_blobswarm"));`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binary(&'static str);

impl Binary {
    /// The binary at `path` (from `env!("CARGO_BIN_EXE_<name>")`).
    pub const fn new(path: &'static str) -> Self {
        Self(path)
    }

    /// Its path.
    pub fn path(self) -> &'static Path {
        Path::new(self.0)
    }

    /// A [`Command`] for it, for tests that need their own environment or stdio.
    pub fn command(self) -> Command {
        Command::new(self.0)
    }

    /// Runs it with `args` to completion (panicking if it fails) and returns its trimmed
    /// stdout.
    pub fn run(self, args: &[&str]) -> String {
        let out = crate::run(self.command().args(args));
        String::from_utf8(out.stdout)
            .expect("utf-8 output")
            .trim()
            .to_owned()
    }

    /// Writes a new node key to `out` with `keygen` and returns the peer id it prints.
    pub fn keygen(self, out: &Path) -> String {
        self.run(&["keygen", "--out", out.to_str().expect("utf-8 key path")])
    }

    /// Starts it with `args` as a [`Proc`] called `name`, logging stderr to `log`.
    pub fn start(self, name: &str, args: &[&str], log: &Path) -> Proc {
        Proc::start(self, name, args, log)
    }
}

/// A running process of a [`Binary`]: its stdout lines can be awaited, and it is killed
/// when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The name failure messages use (`seeder`, `agent-3`, …).
    pub name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    /// Starts `bin ARGS` with `BLOBSWARM_LOG=info`, logging stderr to `log`.
    ///
    /// # Panics
    /// If the log cannot be created or the process cannot be started.
    pub fn start(bin: Binary, name: &str, args: &[&str], log: &Path) -> Self {
        let log_file = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("creating process log {}: {e}", log.display()));
        let mut child = bin
            .command()
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
    ///
    /// # Panics
    /// If no such line comes within `timeout`, or the process exits first.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> String {
        self.wait_nth_line(prefix, 1, timeout)
    }

    /// Waits for the `n`th stdout line (from 1) starting with `prefix` and returns the
    /// rest of it: `imported ` twice for a second release.
    ///
    /// # Panics
    /// If fewer such lines come within `timeout`, or the process exits first.
    pub fn wait_nth_line(&mut self, prefix: &str, n: usize, timeout: Duration) -> String {
        let rest = |l: &String| l[prefix.len()..].trim().to_owned();
        if let Some(l) = self
            .seen
            .iter()
            .filter(|l| l.starts_with(prefix))
            .nth(n - 1)
        {
            return rest(l);
        }
        let mut count = self.seen.iter().filter(|l| l.starts_with(prefix)).count();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        count += 1;
                        if count == n {
                            return rest(&line);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: {count} of {n} {prefix:?} lines within {timeout:?}; saw {:?}",
                        self.name, self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{}: exited ({status:?}) before printing {prefix:?} {n} times; saw {:?}",
                        self.name, self.seen
                    )
                }
            }
        }
    }

    /// The peer id at the end of the first `listening <multiaddr>/p2p/<id>` line.
    pub fn wait_peer_id(&mut self, timeout: Duration) -> String {
        let addr = self.wait_line("listening ", timeout);
        addr.rsplit('/').next().unwrap_or_default().to_owned()
    }

    /// Asks the process to stop (SIGTERM) and waits for it to exit.
    ///
    /// # Panics
    /// If it is still running `timeout` after the signal.
    pub fn terminate(&mut self, timeout: Duration) {
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
    pub fn printed(&mut self, prefix: &str) -> bool {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.iter().any(|l| l.starts_with(prefix))
    }

    /// The process id (for /proc readings such as peak RSS).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL now and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
