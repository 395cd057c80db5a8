//! Time to first peer byte: when chunk bytes first flow into any agent, read from the
//! host's interface counters, so the agents neither help nor pay for the measurement.
//!
//! Why not the agents' own counters: an agent counts a chunk once it is whole and
//! verified, and while the seeder's uplink is shared by N agents the first 4 MiB chunk
//! completes about N chunk-times after its first byte moved. The wire shows the first
//! byte.
//!
//! Control traffic (handshakes, gossip, have-updates) is small and bursty; chunk traffic
//! is sustained at the seeder's link rate. So a flow is [`SUSTAIN`] consecutive windows
//! of [`WINDOW`] in each of which the agents together received at least half of what the
//! seeder's link can send in that window ("busy"), and the first byte is where the run of
//! windows leading into the first flow rose above `busy / RAMP` (a loaded machine ramps
//! up unevenly). The largest window seen before that is kept, to show the margin.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::netns::Node;

/// Sampling window.
const WINDOW: Duration = Duration::from_millis(10);
/// Consecutive busy windows that make a flow of chunk bytes.
const SUSTAIN: usize = 3;
/// Windows kept to look back for the flow's start.
const HISTORY: usize = 100;
/// Going back from a sustained flow, windows with at least `busy / RAMP` bytes are its
/// ramp-up (idle control traffic is a few KiB per window).
const RAMP: f64 = 8.0;

/// What the watch saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    /// Start of the first sustained flow into the agents, if there was one.
    pub(crate) first: Option<Instant>,
    /// Most bytes the agents received in one window before that flow (control traffic).
    pub(crate) quiet_max_bytes: u64,
}

/// A thread sampling the agents' download counters until it sees the first flow.
pub(crate) struct FirstByte {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Seen>>,
}

impl FirstByte {
    /// Starts watching the download counters of `agents`; `link_bytes_per_sec` is the
    /// seeder's link rate.
    pub(crate) fn start(agents: &[Node], link_bytes_per_sec: f64) -> Self {
        let veths: Vec<String> = agents.iter().map(|n| n.host_veth().to_owned()).collect();
        let busy = link_bytes_per_sec * WINDOW.as_secs_f64() / 2.0;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || watch(&veths, busy, &flag));
        Self { stop, thread }
    }

    /// Stops the watch and returns what it saw.
    pub(crate) fn finish(self) -> anyhow::Result<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("first-byte watch panicked"))?
    }
}

fn watch(veths: &[String], busy: f64, stop: &AtomicBool) -> anyhow::Result<Seen> {
    let mut last = (Instant::now(), received(veths)?);
    // The last HISTORY windows: (start, bytes per WINDOW); the most of any older one.
    let mut recent: VecDeque<(Instant, f64)> = VecDeque::new();
    let mut older_max: f64 = 0.0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(WINDOW);
        let now = (Instant::now(), received(veths)?);
        let elapsed = now.0.duration_since(last.0).as_secs_f64();
        let bytes = (now.1 - last.1) as f64 * WINDOW.as_secs_f64() / elapsed;
        recent.push_back((last.0, bytes));
        last = now;
        if recent.len() > HISTORY
            && let Some((_, old)) = recent.pop_front()
        {
            older_max = older_max.max(old);
        }
        let n = recent.len();
        if n >= SUSTAIN && recent.iter().skip(n - SUSTAIN).all(|(_, b)| *b >= busy) {
            // The flow began where the traffic before it rose above a trickle.
            let mut first = n - SUSTAIN;
            while first > 0 && recent[first - 1].1 >= busy / RAMP {
                first -= 1;
            }
            let quiet = recent.iter().take(first).map(|(_, b)| *b);
            return Ok(Seen {
                first: Some(recent[first].0),
                quiet_max_bytes: quiet.fold(older_max, f64::max) as u64,
            });
        }
    }
    let quiet = recent.iter().map(|(_, b)| *b);
    Ok(Seen {
        first: None,
        quiet_max_bytes: quiet.fold(older_max, f64::max) as u64,
    })
}

/// Bytes the host has sent on `veths` (what their namespaces received), from one read of
/// `/proc/net/dev`.
fn received(veths: &[String]) -> anyhow::Result<u64> {
    let dev = std::fs::read_to_string("/proc/net/dev").context("reading /proc/net/dev")?;
    let mut sum = 0;
    for line in dev.lines() {
        let Some((name, fields)) = line.split_once(':') else {
            continue;
        };
        if veths.iter().any(|v| v == name.trim()) {
            // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit.
            let tx: u64 = fields
                .split_whitespace()
                .nth(8)
                .and_then(|f| f.parse().ok())
                .with_context(|| format!("transmit bytes of {} in /proc/net/dev", name.trim()))?;
            sum += tx;
        }
    }
    Ok(sum)
}
