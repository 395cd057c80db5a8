//! Child processes of the benchmark: stdout lines are read on a thread and time-stamped
//! the moment they arrive, so completion times do not depend on when the harness looks.
//! Every child is killed when its handle drops, and on SIGINT/SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Pids of running children, for the signal handler.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn track(pid: u32, on: bool) {
    let mut list = CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if on {
        list.push(pid);
    } else {
        list.retain(|p| *p != pid);
    }
}

/// SIGKILLs every tracked child (signal handler path).
pub(crate) fn kill_all() {
    let list = CHILDREN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for pid in list {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

/// A running child whose stdout lines are collected with their arrival time.
pub(crate) struct Proc {
    pub(crate) name: String,
    child: Child,
    lines: Receiver<(Instant, String)>,
    seen: Vec<(Instant, String)>,
}

impl Proc {
    /// Starts `cmd` with stdout piped and stderr appended to `log`.
    pub(crate) fn start(name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = cmd
            .env("BLOBSWARM_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        track(child.id(), true);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child,
            lines: rx,
            seen: Vec::new(),
        })
    }

    /// The pid, for `/proc` readings.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line starting with `prefix`; returns when it arrived and the
    /// rest of the line.
    pub(crate) fn wait_line(
        &mut self,
        prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<(Instant, String)> {
        if let Some((t, l)) = self.seen.iter().find(|(_, l)| l.starts_with(prefix)) {
            return Ok((*t, l[prefix.len()..].trim().to_owned()));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((t, line)) => {
                    self.seen.push((t, line.clone()));
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok((t, rest.trim().to_owned()));
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: no {prefix:?} line within {timeout:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "{}: exited ({status:?}) before printing {prefix:?}",
                        self.name
                    )
                }
            }
        }
    }

    /// Whether the child has exited, and when the harness noticed.
    pub(crate) fn try_exit(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// SIGTERM, then wait up to `timeout` (SIGKILL after that).
    pub(crate) fn terminate(&mut self, timeout: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                track(self.pid(), false);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL now.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        track(self.pid(), false);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU seconds (user + system) and peak resident memory of a live process.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Usage {
    /// utime + stime, seconds.
    pub(crate) cpu_secs: f64,
    /// VmHWM, bytes.
    pub(crate) max_rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` (fields 14 and 15, in clock ticks) and `VmHWM` from
/// `/proc/<pid>/status`.
pub(crate) fn usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state); utime is field 14, stime field 15.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmHWM")?
        .parse()?;
    Ok(Usage {
        cpu_secs: ticks as f64 / clock_ticks_per_sec(),
        max_rss_bytes: hwm_kib * 1024,
    })
}

fn clock_ticks_per_sec() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Runs `cmd` to completion, failing with its output if it fails.
pub(crate) fn run(mut cmd: Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Nearest-rank percentile `p` (0 < p ≤ 1) of `values`.
pub(crate) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
