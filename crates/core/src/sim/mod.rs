//! A discrete-event simulation of a whole swarm, driving the very same [`Node`] state
//! machine the agent runs, on a virtual clock.
//!
//! # Model
//! - One seeder holding the image, `nodes` peers on a random overlay where every node
//!   keeps about `degree` neighbours (the seeder too).
//! - Every node has an uplink and a downlink of fixed rate, each a FIFO: a chunk occupies
//!   the sender's uplink for `size / up`, then arrives after the one-way latency, or later
//!   if the receiver's downlink is still busy. Control messages cost latency only; their
//!   encoded bytes are counted.
//! - Chunk bytes are never materialised: chunk maps are real structures with synthetic
//!   digests, and every received chunk counts as verified.
//! - Churn kills a fraction of peers at uniform random times within the lower bound;
//!   their neighbours see the disconnect one latency later.
//!
//! - The seeder can be removed part-way (`seeder_leaves_at`); peers then fall back to the
//!   herd guard, fetching each chunk nobody holds from a registry reached over their own
//!   downlink, and the report counts those fetches per chunk.
//!
//! - The seeder's read of the image from the registry can be modelled
//!   (`registry_read`): the seeder reads at `min(registry rate, its downlink)`, and in
//!   [`ReadMode::PublishAfterRead`] (today's seeder) it holds no chunk and publishes
//!   nothing before the whole image is read. Completion times then count from the start
//!   of that read, as the swarm benchmark's do from the seeder's start.
//!
//! The lower bound is `image / min(up, down)` plus one chunk's pipeline delay
//! (`chunk / up + 2 × latency`): no peer can receive the image faster.

mod event;
mod read;
mod report;
mod setup;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::node::{self, Action, ChunkOutcome, Inbound, Node, PeerKey};
use crate::wire::Response;
use crate::{Digest, codec};
use event::{EventQueue, Msg};
pub use read::{ReadMode, RegistryRead};
pub use report::SimReport;
use report::make_nodes;
use setup::{build_image, overlay};

/// A simulated node's identity: index 0 is the seeder and carries its real key bytes.
#[derive(Clone, Debug)]
pub struct SimPeer {
    idx: u32,
    key: Arc<Vec<u8>>,
}

impl PartialEq for SimPeer {
    fn eq(&self, other: &Self) -> bool {
        self.idx == other.idx
    }
}
impl Eq for SimPeer {}
impl PartialOrd for SimPeer {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SimPeer {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.idx.cmp(&other.idx)
    }
}
impl PeerKey for SimPeer {
    fn key_bytes(&self) -> Vec<u8> {
        self.key.as_ref().clone()
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Peers besides the seeder.
    pub nodes: usize,
    /// Total image size in bytes, split over a few layers.
    pub image_size: u64,
    /// Chunk size.
    pub chunk_size: u32,
    /// Uplink rate of every node, bytes per second.
    pub up_bytes_per_sec: f64,
    /// Downlink rate of every node, bytes per second.
    pub down_bytes_per_sec: f64,
    /// One-way latency between any two nodes.
    pub latency: Duration,
    /// Fraction of peers killed during the transfer.
    pub churn: f64,
    /// Remove the seeder at this fraction of the lower bound after the release.
    pub seeder_leaves_at: Option<f64>,
    /// Neighbours per node.
    pub degree: usize,
    /// Seed of every random choice (overlay, churn, schedulers).
    pub seed: u64,
    /// Scheduler config of the peers (the seeder adds super-seeding).
    pub node: node::Config,
    /// Give up after this much virtual time (guards against livelock).
    pub max_virtual: Duration,
    /// The seeder's read of the image from the registry; `None`: the seeder holds the
    /// image from the start (no read modelled).
    pub registry_read: Option<RegistryRead>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 100,
            image_size: 256 << 20,
            chunk_size: crate::DEFAULT_CHUNK_SIZE,
            up_bytes_per_sec: 125e6,
            down_bytes_per_sec: 125e6,
            latency: Duration::from_millis(1),
            churn: 0.0,
            seeder_leaves_at: None,
            degree: 16,
            seed: 1,
            node: node::Config::default(),
            max_virtual: Duration::from_secs(3600),
            registry_read: None,
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A parameter is out of range.
    #[error("invalid simulation: {0}")]
    Config(String),
}

struct World {
    cfg: SimConfig,
    base: Instant,
    nodes: Vec<Node<SimPeer>>,
    peers: Vec<SimPeer>,
    adj: Vec<BTreeSet<u32>>,
    dead: Vec<bool>,
    queue: EventQueue,
    up_free: Vec<Duration>,
    down_free: Vec<Duration>,
    timer_at: Vec<Option<Duration>>,
    done_at: Vec<Option<Duration>>,
    seeder_upload: u64,
    /// Chunks the seeder has sent at least once, and when the last of them left.
    injected: std::collections::HashSet<(Digest, u32)>,
    total_chunks: usize,
    injected_all_at: Option<Duration>,
    registry_fetches: std::collections::HashMap<(Digest, u32), u32>,
    /// Chunks the seeder had sent when it was removed.
    injected_at_kill: Option<usize>,
    control_bytes: u64,
    events: u64,
    /// Why the seeder could not publish the release, if it could not.
    publish_failed: Option<String>,
}

impl World {
    fn push(&mut self, at: Duration, msg: Msg) {
        self.queue.push(at, msg);
    }

    fn instant(&self, at: Duration) -> Instant {
        self.base + at
    }

    fn control<T: Serialize>(&mut self, m: &T) {
        self.control_bytes +=
            codec::encode(m).map_or(0, |b| b.len() as u64) + codec::PREFIX_LEN as u64;
    }

    fn drain(&mut self, i: u32, now: Duration) {
        while let Some(action) = self.nodes[i as usize].poll_action() {
            match action {
                Action::Send { peer, id, request } => {
                    self.control(&request);
                    self.push(
                        now + self.cfg.latency,
                        Msg::Request {
                            to: peer.idx,
                            from: i,
                            id,
                            request,
                        },
                    );
                }
                Action::Publish(signed) => {
                    for k in 0..self.nodes.len() as u32 {
                        if k != i {
                            self.push(
                                now + 2 * self.cfg.latency,
                                Msg::Gossip {
                                    to: k,
                                    signed: signed.clone(),
                                },
                            );
                        }
                    }
                }
                Action::Notice(notice) => {
                    self.control(&notice);
                    self.push(now + 2 * self.cfg.latency, Msg::Notice { from: i, notice });
                }
                Action::FetchRegistry {
                    id,
                    blob,
                    index,
                    range,
                } => {
                    *self.registry_fetches.entry((blob, index)).or_default() += 1;
                    let size = range.end - range.start;
                    let recv_time =
                        Duration::from_secs_f64(size as f64 / self.cfg.down_bytes_per_sec);
                    let arrive = (now + 2 * self.cfg.latency + recv_time)
                        .max(self.down_free[i as usize] + recv_time);
                    self.down_free[i as usize] = arrive;
                    self.push(arrive, Msg::RegistryChunk { to: i, id });
                }
                Action::ReleaseComplete(_) if i != 0 => {
                    self.done_at[i as usize].get_or_insert(now);
                }
                _ => {}
            }
        }
        // Store the time the event fires at (a deadline already past fires now), so the
        // staleness check on delivery compares like with like.
        // Only an earlier deadline needs a new event: a later one is found again when the
        // pending timer fires (a spurious `handle_timeout` is harmless), so the queue does
        // not fill with a stale timer per input.
        let at = self.nodes[i as usize]
            .poll_timeout()
            .map(|t| t.saturating_duration_since(self.base).max(now));
        if let Some(at) = at
            && self.timer_at[i as usize].is_none_or(|t| at < t)
        {
            self.timer_at[i as usize] = Some(at);
            self.push(at, Msg::Timer { node: i });
        }
    }

    fn deliver(&mut self, now: Duration, msg: Msg) {
        let t = self.instant(now);
        match msg {
            Msg::Request {
                to,
                from,
                id,
                request,
            } => self.deliver_request(now, to, from, id, request),
            Msg::Response { to, id, response } => {
                if self.dead[to as usize] {
                    return;
                }
                let node = &mut self.nodes[to as usize];
                if matches!(response, Response::Chunk { .. }) {
                    if node.chunk_target(id).is_some() {
                        node.handle_chunk(id, ChunkOutcome::Stored, t);
                    }
                } else {
                    node.handle_response(id, response, t, 0);
                }
                self.drain(to, now);
            }
            Msg::UploadDone { node, to } => {
                if !self.dead[node as usize] {
                    let peer = self.peers[to as usize].clone();
                    self.nodes[node as usize].handle_upload_done(&peer, t);
                    self.drain(node, now);
                }
            }
            Msg::Gossip { to, signed } => {
                if !self.dead[to as usize] {
                    let _ = self.nodes[to as usize].handle_release(signed, t, 0);
                    self.drain(to, now);
                }
            }
            Msg::Timer { node } => {
                if !self.dead[node as usize] && self.timer_at[node as usize] == Some(now) {
                    self.timer_at[node as usize] = None;
                    self.nodes[node as usize].handle_timeout(t);
                    self.drain(node, now);
                }
            }
            Msg::Notice { from, notice } => {
                let sender = self.peers[from as usize].clone();
                for k in 0..self.nodes.len() {
                    if k != from as usize && !self.dead[k] {
                        self.nodes[k].handle_notice(&sender, notice.clone(), t);
                    }
                }
            }
            Msg::RegistryChunk { to, id } => {
                if !self.dead[to as usize] {
                    let node = &mut self.nodes[to as usize];
                    if node.chunk_target(id).is_some() {
                        node.handle_chunk(id, ChunkOutcome::Stored, t);
                    }
                    self.drain(to, now);
                }
            }
            Msg::Publish { signed } => {
                if let Err(e) = self.nodes[0].publish_release(signed, t, 0) {
                    self.publish_failed = Some(e.to_string());
                }
                self.drain(0, now);
            }
            Msg::Kill { node } => {
                self.dead[node as usize] = true;
                if node == 0 {
                    self.injected_at_kill = Some(self.injected.len());
                }
                for n in self.adj[node as usize].clone() {
                    self.push(
                        now + self.cfg.latency,
                        Msg::Disconnect {
                            node: n,
                            gone: node,
                        },
                    );
                }
            }
            Msg::Disconnect { node, gone } => {
                if !self.dead[node as usize] {
                    let peer = self.peers[gone as usize].clone();
                    self.nodes[node as usize].handle_peer_disconnected(&peer, t);
                    self.drain(node, now);
                }
            }
        }
    }

    /// A request reaches `to`: its answer, or for a chunk the upload over `to`'s uplink
    /// and `from`'s downlink.
    fn deliver_request(
        &mut self,
        now: Duration,
        to: u32,
        from: u32,
        id: node::RequestId,
        request: crate::wire::Request,
    ) {
        if self.dead[to as usize] {
            return;
        }
        let t = self.instant(now);
        let inbound =
            self.nodes[to as usize].handle_request(&self.peers[from as usize], request, t);
        match inbound {
            Inbound::Respond(r) => self.respond(from, id, r, now),
            Inbound::Peers => self.respond(from, id, Response::Peers(vec![]), now),
            Inbound::ServeChunk { blob, index, range } => {
                self.upload(now, to, from, id, (blob, index), range.end - range.start);
            }
        }
        self.drain(to, now);
    }

    /// Chunk `chunk` of `size` bytes from `to` to `from`: FIFO on `to`'s uplink, then on
    /// `from`'s downlink, one latency in between.
    fn upload(
        &mut self,
        now: Duration,
        to: u32,
        from: u32,
        id: node::RequestId,
        (blob, index): (Digest, u32),
        size: u64,
    ) {
        let start = now.max(self.up_free[to as usize]);
        let sent = start + Duration::from_secs_f64(size as f64 / self.cfg.up_bytes_per_sec);
        self.up_free[to as usize] = sent;
        let recv_time = Duration::from_secs_f64(size as f64 / self.cfg.down_bytes_per_sec);
        let arrive = (sent + self.cfg.latency).max(self.down_free[from as usize] + recv_time);
        self.down_free[from as usize] = arrive;
        if to == 0 {
            self.seeder_upload += size;
            if self.injected.insert((blob, index)) && self.injected.len() == self.total_chunks {
                self.injected_all_at = Some(sent);
            }
        }
        self.push(sent, Msg::UploadDone { node: to, to: from });
        self.push(
            arrive,
            Msg::Response {
                to: from,
                id,
                response: Response::Chunk { blob, index },
            },
        );
    }

    /// Kills `churn × nodes` random peers (never the seeder) at uniform random times
    /// within `lower_bound` after `publish_at`; returns how many.
    fn schedule_churn(
        &mut self,
        publish_at: Duration,
        lower_bound: f64,
        rng: &mut StdRng,
    ) -> usize {
        let killed = (self.cfg.churn * self.cfg.nodes as f64).round() as usize;
        let mut victims: Vec<u32> = (1..self.nodes.len() as u32).collect();
        for k in 0..killed {
            let pick = rng.gen_range(k..victims.len());
            victims.swap(k, pick);
            let at = publish_at + Duration::from_secs_f64(rng.r#gen::<f64>() * lower_bound);
            self.push(at, Msg::Kill { node: victims[k] });
        }
        killed
    }

    /// Delivers events in time order until every live peer is done, nothing is left, or
    /// `max_virtual` passed.
    fn run_events(&mut self) {
        let n = self.nodes.len();
        while let Some((at, msg)) = self.queue.pop() {
            if at > self.cfg.max_virtual {
                break;
            }
            self.events += 1;
            self.deliver(at, msg);
            if self.events.is_multiple_of(4096)
                && (1..n).all(|i| self.dead[i] || self.done_at[i].is_some())
            {
                break;
            }
        }
    }

    fn respond(&mut self, to: u32, id: node::RequestId, r: Response, now: Duration) {
        self.control(&r);
        if matches!(r, Response::Ack) {
            // Nothing waits on an acknowledgement (have-updates are fire-and-forget):
            // count its bytes, skip its delivery.
            return;
        }
        self.push(
            now + self.cfg.latency,
            Msg::Response {
                to,
                id,
                response: r,
            },
        );
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Runs one simulation to completion (or to `max_virtual`).
///
/// # Errors
/// [`SimError::Config`] when a parameter is out of range.
pub fn run(cfg: SimConfig) -> Result<SimReport, SimError> {
    if cfg.nodes == 0
        || cfg.up_bytes_per_sec <= 0.0
        || cfg.down_bytes_per_sec <= 0.0
        || cfg.registry_read.is_some_and(|r| r.bytes_per_sec <= 0.0)
        || !(0.0..1.0).contains(&cfg.churn)
    {
        return Err(SimError::Config(
            "need nodes ≥ 1, positive rates and 0 ≤ churn < 1".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let key = Keypair::ed25519_from_bytes(rng.r#gen::<[u8; 32]>())
        .map_err(|e| SimError::Config(e.to_string()))?;
    let seeder_id = key.public().to_peer_id();
    let (maps, signed) = build_image(&cfg, &key)?;
    let n = cfg.nodes + 1;
    let seeder_key = Arc::new(seeder_id.to_bytes());
    let peers: Vec<SimPeer> = (0..n as u32)
        .map(|idx| SimPeer {
            idx,
            key: if idx == 0 {
                seeder_key.clone()
            } else {
                Arc::new(idx.to_be_bytes().to_vec())
            },
        })
        .collect();
    let mut nodes = make_nodes(&cfg, &peers, seeder_id)?;
    let base = Instant::now();
    for m in &maps {
        nodes[0].add_local_blob(m.clone(), "application/vnd.oci.image.layer.v1.tar", base);
    }
    let adj = overlay(n, cfg.degree, &mut rng);
    let lower_bound = cfg.image_size as f64 / cfg.up_bytes_per_sec.min(cfg.down_bytes_per_sec)
        + f64::from(cfg.chunk_size) / cfg.up_bytes_per_sec
        + 2.0 * cfg.latency.as_secs_f64();
    let mut w = World {
        base,
        nodes,
        peers,
        dead: vec![false; n],
        queue: EventQueue::default(),
        up_free: vec![Duration::ZERO; n],
        down_free: vec![Duration::ZERO; n],
        timer_at: vec![None; n],
        done_at: vec![None; n],
        seeder_upload: 0,
        injected: std::collections::HashSet::new(),
        total_chunks: maps.iter().map(|m| m.count() as usize).sum(),
        injected_all_at: None,
        registry_fetches: std::collections::HashMap::new(),
        injected_at_kill: None,
        control_bytes: 0,
        events: 0,
        publish_failed: None,
        adj,
        cfg: cfg.clone(),
    };
    for i in 0..n as u32 {
        for j in w.adj[i as usize].clone() {
            let peer = w.peers[j as usize].clone();
            w.nodes[i as usize].handle_peer_connected(peer, base);
        }
    }
    for i in 0..n as u32 {
        w.drain(i, Duration::ZERO);
    }
    // The seeder starts reading at `read_from`; it publishes once the read is done.
    let read_from = 10 * cfg.latency;
    let read_secs = cfg
        .registry_read
        .map(|r| r.secs(cfg.image_size, cfg.down_bytes_per_sec));
    let publish_at = read_from + read_secs.map_or(Duration::ZERO, Duration::from_secs_f64);
    if read_secs.is_some() {
        // After the read: an event, so nothing before `publish_at` sees the release.
        w.push(publish_at, Msg::Publish { signed });
    } else {
        // Right after connecting (the runs before registry reads were modelled, kept
        // bit for bit: publishing through the queue would reorder same-time events).
        w.nodes[0]
            .publish_release(signed, base + publish_at, 0)
            .map_err(|e| SimError::Config(e.to_string()))?;
        w.drain(0, publish_at);
    }
    let seeder_leaves = cfg
        .seeder_leaves_at
        .map(|f| publish_at + Duration::from_secs_f64(f * lower_bound));
    if let Some(at) = seeder_leaves {
        w.push(at, Msg::Kill { node: 0 });
    }
    let killed = w.schedule_churn(publish_at, lower_bound, &mut rng);
    w.run_events();
    if let Some(e) = w.publish_failed.take() {
        return Err(SimError::Config(e));
    }
    let missing_at_kill =
        seeder_leaves.map(|_| w.total_chunks - w.injected_at_kill.unwrap_or(w.injected.len()));
    let mut report = w.report(&maps, killed, read_from, lower_bound, missing_at_kill);
    if let Some(read) = read_secs {
        report.registry_read_secs = Some(read);
        report.max_over_read_or_bound = Some(report.max_secs / read.max(lower_bound));
        // The seeder's pace counts from its release, whatever the read took.
        report.seeder_injected_all_secs -= (publish_at - read_from).as_secs_f64();
    }
    Ok(report)
}
