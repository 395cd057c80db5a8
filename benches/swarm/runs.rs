//! One measurement each: N direct pulls (baseline), seeder + N agents (blobswarm), and the
//! 2-peer loopback transfer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::firstbyte::FirstByte;
use crate::images::Registry;
use crate::netns::{Node, in_ns};
use crate::procs::{Proc, Usage, percentile, run, usage};

/// What the runs share: the binary, the work directory, the image and the namespaces.
pub(crate) struct Bench {
    pub(crate) bin: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) registry: Registry,
    pub(crate) seeder: Node,
    pub(crate) agents: Vec<Node>,
    /// Config and layer digests with sizes, to check each agent's layout.
    pub(crate) blobs: Vec<(String, u64)>,
    /// Longest any single run may take.
    pub(crate) timeout: Duration,
    /// Rate of the seeder's and agents' links, bytes per second.
    pub(crate) link_bytes_per_sec: f64,
}

/// N simultaneous `skopeo copy` pulls straight from the registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Baseline {
    /// Seconds from start until each pull finished, sorted.
    pub(crate) done_secs: Vec<f64>,
    /// Seconds until the last pull finished.
    pub(crate) time_to_all_secs: f64,
    #[serde(flatten)]
    pub(crate) registry: Egress,
}

/// What the registry served during one run (stored flat in `results.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Egress {
    /// Bytes the registry's namespace sent on its link (IP packets, headers included).
    #[serde(rename = "registry_wire_bytes")]
    pub(crate) wire_bytes: u64,
    /// Response body bytes of successful GETs in the registry's access log.
    #[serde(rename = "registry_http_bytes")]
    pub(crate) http_bytes: u64,
    /// Blob GETs the registry served.
    #[serde(rename = "registry_blob_gets")]
    pub(crate) blob_gets: usize,
}

/// Seeder + N agents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Swarm {
    /// Seconds from seeder start to its `release` line (resolve + ingest + sign).
    pub(crate) release_secs: f64,
    /// Seconds from seeder start until each agent printed `imported`, sorted.
    pub(crate) done_secs: Vec<f64>,
    /// p50 / p99 / max of `done_secs` (nearest rank).
    pub(crate) p50_secs: f64,
    pub(crate) p99_secs: f64,
    pub(crate) max_secs: f64,
    #[serde(flatten)]
    pub(crate) registry: Egress,
    /// Chunk bytes the seeder reports it uploaded.
    pub(crate) seeder_upload_bytes: u64,
    /// Bytes the seeder's namespace sent on its link.
    pub(crate) seeder_wire_bytes: u64,
    /// Per agent, in agent order: CPU seconds and peak RSS when the last agent finished.
    pub(crate) agents: Vec<Usage>,
    /// Per agent, in agent order: chunk bytes it received (its `fetched` line at exit;
    /// `None` if it was killed before printing it).
    #[serde(default)]
    pub(crate) agent_fetched_bytes: Vec<Option<u64>>,
    /// Seconds from seeder start until chunk bytes first flowed into any agent, read
    /// from the agents' link counters (see `firstbyte.rs`); `None` if never seen.
    #[serde(default)]
    pub(crate) first_peer_byte_secs: Option<f64>,
    /// Most bytes the agents together received in one 10 ms window before that flow:
    /// control traffic, to compare with the flow threshold (half of what the link moves
    /// in a window; a burst over it is no flow unless three windows in a row are).
    #[serde(default)]
    pub(crate) quiet_window_max_bytes: u64,
}

/// Seeder and one agent over 127.0.0.1 in a namespace of their own, unshaped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Loopback {
    pub(crate) image_bytes: u64,
    /// Seconds from the seeder's `release` line to the agent's `imported` line.
    pub(crate) transfer_secs: f64,
    pub(crate) throughput_bytes_per_sec: f64,
    /// Seconds the seeder took from its start to `release` (read + hash + store).
    pub(crate) seeder_ingest_secs: f64,
    pub(crate) agent: Usage,
}

fn secs(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64()
}

impl Bench {
    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Baseline: every one of the first `n` agent namespaces pulls the image itself.
    pub(crate) fn baseline(&self, n: usize) -> anyhow::Result<Baseline> {
        let dir = self.work.join(format!("baseline-{n}"));
        std::fs::create_dir_all(&dir)?;
        let mark = self.registry.settle_log();
        let wire_before = self.registry.node.tx_bytes()?;
        let start = Instant::now();
        let mut pulls = Vec::new();
        for (i, node) in self.agents[..n].iter().enumerate() {
            let args = Self::args(&[
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{}", self.registry.reference()),
                &format!("oci:{}:v1", dir.join(format!("pull-{i}")).display()),
            ]);
            let cmd = in_ns(&node.ns, Path::new("skopeo"), &args);
            pulls.push(Proc::start(
                &format!("pull-{i}"),
                cmd,
                &dir.join(format!("pull-{i}.log")),
            )?);
        }
        let mut done = vec![None; n];
        while done.iter().any(Option::is_none) {
            if start.elapsed() > self.timeout {
                bail!(
                    "baseline with {n} pulls did not finish within {:?}",
                    self.timeout
                );
            }
            for (i, p) in pulls.iter_mut().enumerate() {
                if done[i].is_none()
                    && let Some(status) = p.try_exit()?
                {
                    if !status.success() {
                        let log = std::fs::read_to_string(dir.join(format!("pull-{i}.log")));
                        bail!(
                            "skopeo pull {i} failed ({status}): {}",
                            log.unwrap_or_default()
                        );
                    }
                    done[i] = Some(start.elapsed().as_secs_f64());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut done_secs: Vec<f64> = done.into_iter().map(|d| d.unwrap_or_default()).collect();
        done_secs.sort_by(f64::total_cmp);
        std::thread::sleep(Duration::from_millis(200));
        let wire = self.registry.node.tx_bytes()? - wire_before;
        let registry = self.egress(wire, mark)?;
        std::fs::remove_dir_all(&dir)?;
        Ok(Baseline {
            time_to_all_secs: done_secs.last().copied().unwrap_or_default(),
            done_secs,
            registry,
        })
    }

    /// blobswarm: the seeder pulls once, `n` agents fetch from each other.
    pub(crate) fn blobswarm(&self, n: usize) -> anyhow::Result<Swarm> {
        let dir = self.work.join(format!("swarm-{n}"));
        std::fs::create_dir_all(&dir)?;
        let key = dir.join("seeder.key");
        let bin = self.bin.to_str().context("binary path")?;
        let mut keygen = std::process::Command::new(bin);
        keygen.args(["keygen", "--out", key.to_str().context("key path")?]);
        let id = run(keygen)?;
        let listen = format!("/ip4/{}/tcp/4001", self.seeder.addr);
        let mark = self.registry.settle_log();
        let reg_before = self.registry.node.tx_bytes()?;
        let seeder_before = self.seeder.tx_bytes()?;

        let start = Instant::now();
        let watch = FirstByte::start(&self.agents[..n], self.link_bytes_per_sec);
        let seed_args = Self::args(&[
            "seed",
            &self.registry.reference(),
            "--key-file",
            key.to_str().context("key path")?,
            "--data-dir",
            dir.join("seeder").to_str().context("dir")?,
            "--listen",
            &listen,
            "--insecure-registry",
            &self.registry.addr,
        ]);
        let mut seeder = Proc::start(
            "seeder",
            in_ns(&self.seeder.ns, &self.bin, &seed_args),
            &dir.join("seeder.log"),
        )?;
        seeder.wait_line("listening ", Duration::from_secs(30))?;
        let mut agents = self.start_agents(&dir, n, &format!("{listen}/p2p/{id}"), &id)?;
        let (released, _) = seeder.wait_line("release ", self.timeout)?;
        let mut done_secs = Vec::new();
        for a in &mut agents {
            let left = self.timeout.saturating_sub(start.elapsed());
            let (t, _) = a.wait_line("imported ", left)?;
            done_secs.push(secs(start, t));
        }
        let usages = agents
            .iter()
            .map(|a| usage(a.pid()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let seen = watch.finish()?;
        let reg_wire = self.registry.node.tx_bytes()? - reg_before;
        let seeder_wire = self.seeder.tx_bytes()? - seeder_before;
        seeder.terminate(Duration::from_secs(20));
        let (_, uploaded) = seeder.wait_line("uploaded ", Duration::from_secs(5))?;
        let seeder_upload_bytes = uploaded
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .context("seeder's uploaded line")?;
        let mut fetched = Vec::new();
        for a in &mut agents {
            a.terminate(Duration::from_secs(10));
            fetched.push(fetched_bytes(a));
        }
        self.check_layouts(&dir, n)?;
        let registry = self.egress(reg_wire, mark)?;
        std::fs::remove_dir_all(&dir)?;
        let mut sorted = done_secs.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(Swarm {
            release_secs: secs(start, released),
            p50_secs: percentile(&sorted, 0.5),
            p99_secs: percentile(&sorted, 0.99),
            max_secs: sorted.last().copied().unwrap_or_default(),
            done_secs: sorted,
            registry,
            seeder_upload_bytes,
            seeder_wire_bytes: seeder_wire,
            agents: usages,
            agent_fetched_bytes: fetched,
            first_peer_byte_secs: seen.first.map(|t| secs(start, t)),
            quiet_window_max_bytes: seen.quiet_max_bytes,
        })
    }

    /// Starts `n` agents (one per agent namespace) that bootstrap from `bootstrap` and
    /// trust seeder `id`.
    fn start_agents(
        &self,
        dir: &Path,
        n: usize,
        bootstrap: &str,
        id: &str,
    ) -> anyhow::Result<Vec<Proc>> {
        let mut agents = Vec::new();
        for (i, node) in self.agents[..n].iter().enumerate() {
            let args = Self::args(&[
                "agent",
                "--data-dir",
                dir.join(format!("agent-{i}")).to_str().context("dir")?,
                "--listen",
                &format!("/ip4/{}/tcp/4002", node.addr),
                "--bootstrap",
                bootstrap,
                "--trust-seeder",
                id,
                "--runtime",
                "oci-layout",
            ]);
            agents.push(Proc::start(
                &format!("agent-{i}"),
                in_ns(&node.ns, &self.bin, &args),
                &dir.join(format!("agent-{i}.log")),
            )?);
        }
        Ok(agents)
    }

    /// The registry's egress: `wire` bytes on its link, and what its access log shows
    /// since `mark` once it has settled.
    fn egress(&self, wire: u64, mark: u64) -> anyhow::Result<Egress> {
        self.registry.settle_log();
        let (http_bytes, blob_gets) = self.registry.served_since(mark)?;
        Ok(Egress {
            wire_bytes: wire,
            http_bytes,
            blob_gets,
        })
    }

    /// Every agent's OCI layout holds every blob at its full size (agents verified every
    /// chunk on receipt; re-hashing N copies here would only slow the run).
    fn check_layouts(&self, dir: &Path, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            for (digest, size) in &self.blobs {
                let path = dir.join(format!("agent-{i}/oci/blobs/sha256/{}", &digest[7..]));
                let got = std::fs::metadata(&path)
                    .with_context(|| format!("agent-{i} has no {digest}"))?
                    .len();
                if got != *size {
                    bail!("agent-{i}: {digest} is {got} bytes, expected {size}");
                }
            }
        }
        Ok(())
    }
}

/// Chunk bytes an agent received, from the `fetched <bytes> resumed <bytes>` line it
/// prints when it stops; `None` (with a warning) when it had to be killed first.
fn fetched_bytes(agent: &mut Proc) -> Option<u64> {
    let fetched = agent
        .wait_line("fetched ", Duration::from_secs(5))
        .ok()
        .and_then(|(_, line)| line.split_whitespace().next()?.parse().ok());
    if fetched.is_none() {
        eprintln!(
            "{}: no fetched line at exit; its CPU per GiB counts the image",
            agent.name
        );
    }
    fetched
}

/// Seeder and one agent on 127.0.0.1 inside namespace `ns`, moving the layout at `layout`.
pub(crate) fn loopback(
    bin: &Path,
    ns: &str,
    layout: &Path,
    image_bytes: u64,
    dir: &Path,
) -> anyhow::Result<Loopback> {
    std::fs::create_dir_all(dir)?;
    let key = dir.join("seeder.key");
    let mut keygen = std::process::Command::new(bin);
    keygen.args(["keygen", "--out", key.to_str().context("key path")?]);
    let id = run(keygen)?;
    // Each process is named "loopback <role>" and logs to <dir>/<role>.log.
    let spawn = |role: &str, args: &[String]| {
        Proc::start(
            &format!("loopback {role}"),
            in_ns(ns, bin, args),
            &dir.join(format!("{role}.log")),
        )
    };
    let start = Instant::now();
    let seed_args = Bench::args(&[
        "seed",
        &format!("oci-layout:{}:v1", layout.display()),
        "--key-file",
        key.to_str().context("key path")?,
        "--data-dir",
        dir.join("seeder").to_str().context("dir")?,
        "--listen",
        "/ip4/127.0.0.1/tcp/4001",
    ]);
    let mut seeder = spawn("seeder", &seed_args)?;
    seeder.wait_line("listening ", Duration::from_secs(30))?;
    let agent_args = Bench::args(&[
        "agent",
        "--data-dir",
        dir.join("agent").to_str().context("dir")?,
        "--listen",
        "/ip4/127.0.0.1/tcp/4002",
        "--bootstrap",
        &format!("/ip4/127.0.0.1/tcp/4001/p2p/{id}"),
        "--trust-seeder",
        &id,
        "--runtime",
        "oci-layout",
    ]);
    let mut agent = spawn("agent", &agent_args)?;
    let timeout = Duration::from_secs(600);
    let (released, _) = seeder.wait_line("release ", timeout)?;
    let (imported, _) = agent.wait_line("imported ", timeout)?;
    let agent_usage = usage(agent.pid())?;
    agent.terminate(Duration::from_secs(10));
    seeder.terminate(Duration::from_secs(10));
    let transfer_secs = secs(released, imported);
    std::fs::remove_dir_all(dir)?;
    Ok(Loopback {
        image_bytes,
        transfer_secs,
        throughput_bytes_per_sec: image_bytes as f64 / transfer_secs,
        seeder_ingest_secs: secs(start, released),
        agent: agent_usage,
    })
}
