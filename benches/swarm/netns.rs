//! The benchmark network: one bridge in the host namespace and one network namespace per
//! node, each joined by a veth pair whose two ends are shaped with `tc tbf`.
//!
//! Every name starts with [`PREFIX`], so a later run (or [`cleanup_stale`]) can find and
//! remove whatever an interrupted run left. Addresses are only from 198.18.0.0/15 (the
//! benchmarking range) and namespaces get no default route, so nothing can leave the box.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::procs::run;

/// Prefix of every namespace, link and bridge this harness creates.
pub(crate) const PREFIX: &str = "bswb-";
/// The bridge joining all namespaces; the host side holds [`HOST_ADDR`].
const BRIDGE: &str = "bswb-br0";
/// The host's address on the bridge (readiness checks from the harness process).
pub(crate) const HOST_ADDR: &str = "198.18.0.1";
/// Prefix length of the benchmark network: the whole 198.18.0.0/15.
const PREFIX_LEN: u8 = 15;

/// Runs `program` with `args`, failing with its output when it fails (see [`run`]).
pub(crate) fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    run(cmd)
}

/// A link rate as `tc` takes it (`250mbit`, `1gbit`), with its value in bytes per second.
#[derive(Debug, Clone)]
pub(crate) struct Rate {
    /// The string given to `tc`.
    pub(crate) tc: String,
    /// Bytes per second.
    pub(crate) bytes_per_sec: f64,
}

impl Rate {
    /// Parses `<number><kbit|mbit|gbit>`.
    pub(crate) fn parse(s: &str) -> anyhow::Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)]
            .iter()
            .find_map(|(unit, m)| lower.strip_suffix(unit).map(|n| (n.to_owned(), *m)))
            .with_context(|| format!("rate {s:?} must end in kbit, mbit or gbit"))?;
        let value: f64 = num
            .trim()
            .parse()
            .with_context(|| format!("rate {s:?} is not a number"))?;
        if value <= 0.0 {
            bail!("rate {s:?} must be positive");
        }
        Ok(Self {
            tc: lower,
            bytes_per_sec: value * mult / 8.0,
        })
    }
}

/// One namespace on the bridge.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    /// Namespace name (`bswb-…`).
    pub(crate) ns: String,
    /// Its address on the bridge.
    pub(crate) addr: String,
    /// The host-side veth: its rx counter is what the namespace sent.
    host_veth: String,
}

impl Node {
    /// Bytes this namespace has sent onto the bridge (IP packets with headers).
    pub(crate) fn tx_bytes(&self) -> anyhow::Result<u64> {
        let path = format!("/sys/class/net/{}/statistics/rx_bytes", self.host_veth);
        let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        s.trim().parse().with_context(|| format!("parsing {path}"))
    }

    /// The host-side veth, whose transmit counter is what this namespace received.
    pub(crate) fn host_veth(&self) -> &str {
        &self.host_veth
    }
}

/// The bridge and every namespace made so far; removes them all on drop.
#[derive(Debug)]
pub(crate) struct Net {
    rate: Rate,
    nodes: Vec<Node>,
}

impl Net {
    /// Creates the bridge. Call [`cleanup_stale`] first.
    pub(crate) fn new(rate: Rate) -> anyhow::Result<Self> {
        let net = Self {
            rate,
            nodes: Vec::new(),
        };
        sh("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{HOST_ADDR}/{PREFIX_LEN}"),
                "dev",
                BRIDGE,
            ],
        )?;
        sh("ip", &["link", "set", BRIDGE, "up"])?;
        Ok(net)
    }

    /// Adds namespace `bswb-<name>` with address `addr` (in 198.18.0.0/15), both link
    /// directions shaped to the configured rate.
    pub(crate) fn add(&mut self, name: &str, addr: &str) -> anyhow::Result<Node> {
        let rate = self.rate.clone();
        self.add_at(name, addr, &rate)
    }

    /// Like [`Net::add`], with both link directions shaped to `rate` instead (the
    /// registry's link under `--registry-rate`).
    pub(crate) fn add_at(&mut self, name: &str, addr: &str, rate: &Rate) -> anyhow::Result<Node> {
        assert!(
            addr.starts_with("198.18.") || addr.starts_with("198.19."),
            "benchmark addresses stay in 198.18.0.0/15, not {addr}"
        );
        let ns = format!("{PREFIX}{name}");
        let host_veth = format!("{PREFIX}{name}h");
        assert!(host_veth.len() <= 15, "interface name {host_veth} too long");
        sh("ip", &["netns", "add", &ns])?;
        let node = Node {
            ns: ns.clone(),
            addr: addr.to_owned(),
            host_veth: host_veth.clone(),
        };
        self.nodes.push(node.clone());
        sh(
            "ip",
            &[
                "link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        sh("ip", &["link", "set", &host_veth, "master", BRIDGE, "up"])?;
        let cidr = format!("{addr}/{PREFIX_LEN}");
        sh("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
        sh("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        // Egress of the host end is the namespace's download; egress of eth0 its upload.
        shape(rate, None, &host_veth)?;
        shape(rate, Some(&ns), "eth0")?;
        Ok(node)
    }

    /// Adds a namespace with only its loopback up (no link to anything).
    pub(crate) fn add_isolated(&mut self, name: &str) -> anyhow::Result<String> {
        let ns = format!("{PREFIX}{name}");
        sh("ip", &["netns", "add", &ns])?;
        self.nodes.push(Node {
            ns: ns.clone(),
            addr: "127.0.0.1".into(),
            host_veth: String::new(),
        });
        sh("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Removes everything this run created.
    pub(crate) fn teardown(&mut self) {
        self.nodes.clear();
        cleanup_stale();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Token-bucket shaping of one device's egress. The bucket holds 10 ms of traffic (at
/// least 64 KiB, so a full-size GSO packet fits) and packets wait at most 25 ms.
fn shape(rate: &Rate, ns: Option<&str>, dev: &str) -> anyhow::Result<()> {
    let burst = ((rate.bytes_per_sec / 100.0) as u64).max(64 << 10);
    let burst = burst.to_string();
    let mut args = Vec::new();
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    args.extend([
        "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate.tc, "burst", &burst,
        "latency", "25ms",
    ]);
    sh("tc", &args).map(drop)
}

/// A command running `program args` inside namespace `ns` (`ip netns exec` replaces itself
/// with the program, so the child's pid is the program's).
pub(crate) fn in_ns(ns: &str, program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program).args(args);
    cmd
}

/// Kills every process inside any `bswb-` namespace, then deletes those namespaces, any
/// leftover `bswb-` links and the bridge. Safe to call at any time, also with nothing to do;
/// errors are ignored because the point is to leave nothing behind.
pub(crate) fn cleanup_stale() {
    let list = sh("ip", &["netns", "list"]).unwrap_or_default();
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_owned)
        .collect();
    for ns in &names {
        let pids = sh("ip", &["netns", "pids", ns]).unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = sh("kill", &["-KILL", pid]);
        }
    }
    for ns in &names {
        let _ = sh("ip", &["netns", "del", ns]);
    }
    let links = sh("ip", &["-o", "link", "show"]).unwrap_or_default();
    for line in links.lines() {
        // "12: bswb-a0h@if11: <...>" -> "bswb-a0h"
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if name.starts_with(PREFIX) && name != BRIDGE {
            let _ = sh("ip", &["link", "del", name]);
        }
    }
    let _ = sh("ip", &["link", "del", BRIDGE]);
}
