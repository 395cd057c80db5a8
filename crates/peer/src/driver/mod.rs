//! The agent's behaviour without its network: a transport-neutral driver around the core
//! [`Node`], in the style of the core itself (inputs in, outputs out, time passed in).
//!
//! # Driving a `Driver`
//! Build it with [`Driver::new`] from what the store holds at start ([`Startup`]), then
//! feed every input through [`Driver::handle`] (or [`Driver::publish`]) with the current
//! [`Now`]; after each input drain [`Driver::poll_output`] until it returns `None` and
//! execute each [`Output`]; sleep until [`Driver::poll_timeout`] and feed [`Event::Timer`]
//! then. Time must never go backwards between calls.
//!
//! The driver owns the core node, the agent's policies (bans, the neighbour bound,
//! peer exchange, release sync, store cap, checkpoints, saved releases, imports,
//! progress reports) and the bookkeeping behind the status snapshot. It owns no socket,
//! spawns nothing and names no transport type: peers are a generic `P`, requests and
//! answers are matched through the opaque [`OutId`] and [`ReplyId`]. Hashing, disk and
//! import work are outputs whose results come back as events, so the adapter can run
//! them on blocking threads. `crate::agent` is the swarm adapter.

mod addr_bans;
mod bans;
mod checkpoint;
mod evict;
mod gossip;
mod hooks;
mod io;
mod net;
mod overlay;
mod releases;
mod reporter;
mod restore;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Display;
use std::hash::Hash;
use std::time::{Duration, Instant};

use blobswarm_core::enroll::NodeCert;
use blobswarm_core::node::{self, Node, PeerKey, RequestId};
use blobswarm_core::store::Resumed;
use blobswarm_core::wire::Request;
use blobswarm_core::{ChunkMap, ReleaseError, ReleaseId, SignedRelease, TrustedSeeders};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tracing::info;

pub use hooks::{Hooks, NoHooks};
pub(crate) use io::{CheckpointBlob, Event, Output, Snapshot};

use crate::status::ReleaseStatus;

/// How often the status snapshot is refreshed (and checkpoints and test hooks run).
pub(crate) const STATUS_EVERY: Duration = Duration::from_millis(200);
/// How often the driver syncs releases, exchanges peers, reports progress and trims the
/// store.
pub(crate) const MAINTAIN_EVERY: Duration = Duration::from_secs(3);
/// Refused release ids remembered to avoid re-verifying them; bounded against floods.
const MAX_REMEMBERED_REFUSALS: usize = 256;

/// A peer identity the driver can use: ordered and hashable, printable in logs, and
/// convertible from the bytes peer-exchange records carry.
pub(crate) trait PeerIdentity: PeerKey + Copy + Hash + Display + Send + 'static {
    /// Parses the form [`PeerKey::key_bytes`] produces; None when it is not an identity.
    fn from_key_bytes(bytes: &[u8]) -> Option<Self>;
}

/// The current time, both clocks: monotonic for timers, wall clock for release expiry
/// and report stamps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// Monotonic time.
    pub(crate) at: Instant,
    /// Milliseconds since the Unix epoch.
    pub(crate) unix_ms: u64,
}

/// Matches an outbound request the driver asked for with its answer or failure; the
/// adapter maps it to and from its transport's own id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct OutId(pub(crate) u64);

/// Names an inbound request until it is answered; allocated by the adapter, which keeps
/// the transport's reply channel under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ReplyId(pub(crate) u64);

/// The gossip topics the agent uses; the adapter drops messages on any other topic.
/// Public for [`Hooks::gossip`], through which a test agent publishes raw messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    /// Signed releases.
    Release,
    /// Swarm notices (seeder heartbeats, herd-guard claims).
    Notice,
    /// Progress reports.
    Report,
}

/// Names a received gossip message until the driver's [`Verdict`] on it; allocated by
/// the adapter, which keeps the transport's message id and relaying peer under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GossipId(pub(crate) u64);

#[cfg(test)]
pub(crate) use gossip::MAX_NOTICE_BYTES;
pub(crate) use gossip::{RejectReason, Verdict, max_gossip_bytes, rejection_labels};

/// A blob the local node holds in full (seeder side).
#[derive(Debug, Clone)]
pub struct LocalBlob {
    /// Its chunk map, built while ingesting.
    pub map: ChunkMap,
    /// Media type from the manifest.
    pub media_type: String,
}

/// What the store held at start, read by the adapter before the driver exists.
#[derive(Debug, Default)]
pub(crate) struct Startup {
    /// Blobs with verified chunks on disk (see `FsStore::scan_resumable`).
    pub(crate) resumed: Vec<Resumed>,
    /// Releases saved by the previous run (see `saved_releases`), untrusted until the
    /// node verifies them again.
    pub(crate) saved: Vec<SignedRelease>,
}

/// Everything the driver decides with; built by the adapter from `AgentConfig`.
#[derive(Debug, Clone)]
pub(crate) struct DriverConfig<P> {
    /// This node's identity.
    pub(crate) me: P,
    /// Scheduler tunables.
    pub(crate) node: node::Config,
    /// Seeders whose releases are accepted.
    pub(crate) trusted: TrustedSeeders,
    /// Neighbours to keep.
    pub(crate) max_peers: usize,
    /// Whether completed releases are imported somewhere (OCI layout or a runtime).
    pub(crate) import_target: bool,
    /// Whether a registry fallback is plugged in (turns the herd guard on).
    pub(crate) registry_fallback: bool,
    /// Name in progress reports; None sends none.
    pub(crate) node_name: Option<String>,
    /// Enrolment certificate sent with every progress report.
    pub(crate) enrollment_cert: Option<NodeCert>,
    /// Keep other nodes' progress reports (seeders).
    pub(crate) collect_reports: bool,
    /// Cap on the store's blob bytes (see `store_cap`).
    pub(crate) store_max_bytes: Option<u64>,
}

/// The driver refused to start.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The scheduler configuration breaks an invariant.
    #[error("invalid node configuration: {0}")]
    NodeConfig(#[from] node::ConfigError),
}

/// Why the driver sent an outbound request.
#[derive(Debug, Clone, Copy)]
enum Origin<P> {
    Node(RequestId),
    PeerExchange,
    ReleaseSync,
    /// Sent by a test hook; its answer goes back to the hook.
    Hook(P),
}

/// One release's timeline on this node.
#[derive(Debug, Default)]
struct ReleaseTiming {
    accepted: Option<Instant>,
    completed: Option<Duration>,
    import_started: Option<Instant>,
    import_time: Option<Duration>,
    imported: bool,
    import_error: Option<String>,
}

/// The agent's behaviour; see the module docs for the calling protocol.
pub(crate) struct Driver<P> {
    config: DriverConfig<P>,
    node: Node<P>,
    hooks: Box<dyn Hooks<P>>,
    rng: StdRng,
    outputs: VecDeque<Output<P>>,
    next_out: u64,
    outbound: HashMap<OutId, Origin<P>>,
    /// Peers with a connection up, neighbours or not (what the transport sees).
    connected: BTreeSet<P>,
    addr_book: BTreeMap<P, Vec<Vec<u8>>>,
    releases: HashMap<ReleaseId, ReleaseTiming>,
    refused: HashSet<ReleaseId>,
    /// Gossip messages rejected since start, by topic and reason (a metric).
    gossip_rejected: BTreeMap<(Topic, RejectReason), u64>,
    /// Chunk answers cut off because the requester read too slowly (a metric).
    serves_cut: u64,
    /// Connections refused since start, by reason label (a metric).
    connections_denied: BTreeMap<&'static str, u64>,
    /// Chunk serves in progress, to free their upload slots when they end.
    serving: HashMap<ReplyId, P>,
    /// Inbound peers beyond `max_peers`, served discovery only, then disconnected.
    bootstrap_only: overlay::BootstrapOnly<P>,
    bans: bans::Bans<P>,
    /// Listen addresses of banned peers, against identity churn.
    addr_bans: addr_bans::AddrBans<P>,
    checkpoints: checkpoint::Checkpoints,
    store_cap: evict::StoreCap,
    reporter: Option<reporter::Reporter>,
    uploaded_bytes: u64,
    chunks_served: u64,
    chunks_verified: u64,
    next_status: Instant,
    next_maintain: Instant,
}

impl<P: PeerIdentity> Driver<P> {
    /// A driver that resumes what `startup` holds: verified chunks first, then the newest
    /// saved release of each image, fed through the node like gossip.
    ///
    /// # Errors
    /// [`DriverError::NodeConfig`] when the scheduler configuration is invalid.
    pub(crate) fn new(
        config: DriverConfig<P>,
        hooks: Box<dyn Hooks<P>>,
        startup: Startup,
        now: Now,
    ) -> Result<Self, DriverError> {
        let mut node_config = config.node.clone();
        if config.registry_fallback && node_config.herd.is_none() {
            node_config.herd = Some(node::HerdConfig::new(config.me.key_bytes()));
        }
        let seed = node_config.rng_seed ^ fnv(&config.me.key_bytes());
        let node = Node::new(node_config, config.trusted.clone())?;
        let mut driver = Self {
            node,
            hooks,
            rng: StdRng::seed_from_u64(seed),
            outputs: VecDeque::new(),
            next_out: 0,
            outbound: HashMap::new(),
            connected: BTreeSet::new(),
            addr_book: BTreeMap::new(),
            releases: HashMap::new(),
            refused: HashSet::new(),
            gossip_rejected: BTreeMap::new(),
            serves_cut: 0,
            connections_denied: BTreeMap::new(),
            serving: HashMap::new(),
            bootstrap_only: overlay::BootstrapOnly::default(),
            bans: bans::Bans::new(config.node.ban_duration),
            addr_bans: addr_bans::AddrBans::new(config.node.ban_duration),
            checkpoints: checkpoint::Checkpoints::default(),
            store_cap: evict::StoreCap::default(),
            reporter: config
                .node_name
                .as_deref()
                .map(|name| reporter::Reporter::new(name, config.enrollment_cert.clone())),
            uploaded_bytes: 0,
            chunks_served: 0,
            chunks_verified: 0,
            next_status: now.at,
            next_maintain: now.at,
            config,
        };
        driver.resume(startup, now);
        driver.drain_node(now);
        Ok(driver)
    }

    /// Feeds one input; then drain [`Driver::poll_output`].
    pub(crate) fn handle(&mut self, event: Event<P>, now: Now) {
        match event {
            Event::Connected(peer) => self.on_connected(peer, now),
            Event::Disconnected(peer) => self.on_disconnected(peer, now),
            Event::PeerAddrs {
                peer,
                addrs,
                listen,
            } => {
                self.addr_book.insert(peer, addrs);
                self.on_listen_addrs(peer, &listen, now.at);
            }
            Event::Endpoint {
                peer,
                remote,
                dialled,
            } => self.on_endpoint(peer, remote, dialled, now.at),
            Event::ConnectionDenied => self.count_denied("limit"),
            Event::Gossip {
                id,
                topic,
                source,
                data,
            } => self.on_gossip(id, topic, source, &data, now),
            Event::Request {
                peer,
                reply,
                request,
            } => self.on_request(peer, reply, request, now),
            Event::Response {
                out,
                response,
                payload,
            } => self.on_response(out, response, payload, now),
            Event::RequestFailed {
                out,
                peer,
                error,
                violation,
            } => self.on_request_failed(out, peer, &error, violation, now),
            Event::InboundFailed {
                peer,
                reply,
                error,
                violation,
                slow_reader,
            } => {
                if slow_reader {
                    self.serves_cut += 1;
                    info!(%peer, %error, "answer cut off: the peer reads too slowly");
                }
                self.on_inbound_failed(peer, reply, &error, violation, now);
            }
            Event::ReplyEnded(reply) => self.finish_upload(reply, now),
            Event::ChunkRead {
                reply,
                blob,
                index,
                bytes,
            } => self.on_chunk_read(reply, blob, index, bytes, now),
            Event::ChunkDone { id, blob, outcome } => self.on_chunk_done(id, blob, outcome, now),
            Event::RegistryChunk {
                id,
                blob,
                index,
                result,
            } => self.on_registry_chunk(id, blob, index, result, now),
            Event::ImportDone { id, result } => self.on_import_done(id, result, now),
            Event::CheckpointDone => self.checkpoints.done(),
            Event::Timer => self.on_timer(now),
            Event::Shutdown => {
                if let Some(work) = self.checkpoints.flush(&self.node) {
                    self.outputs.push_back(Output::Checkpoint(work));
                }
            }
        }
        self.drain_node(now);
    }

    /// Seeder side: registers locally stored blobs and announces a signed release.
    ///
    /// # Errors
    /// The [`ReleaseError`] when the node refuses the release (e.g. it does not trust
    /// its own key).
    pub(crate) fn publish(
        &mut self,
        blobs: Vec<LocalBlob>,
        release: SignedRelease,
        now: Now,
    ) -> Result<ReleaseId, ReleaseError> {
        for b in blobs {
            self.node.add_local_blob(b.map, &b.media_type, now.at);
        }
        let result = self.node.publish_release(release, now.at, now.unix_ms);
        self.drain_node(now);
        result
    }

    /// The next thing the adapter must do, if any.
    pub(crate) fn poll_output(&mut self) -> Option<Output<P>> {
        self.outputs.pop_front()
    }

    /// When [`Event::Timer`] is next due.
    pub(crate) fn poll_timeout(&self) -> Instant {
        let periodic = self.next_status.min(self.next_maintain);
        self.node
            .poll_timeout()
            .map_or(periodic, |t| t.min(periodic))
    }

    /// The driver's part of the status, as of `now`.
    pub(crate) fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            peers: self.node.peer_count(),
            releases: self.release_statuses(),
            stats: self.node.stats().clone(),
            uploaded_bytes: self.uploaded_bytes,
            chunks_served: self.chunks_served,
            chunks_verified: self.chunks_verified,
            import_target: self.config.import_target,
            bans: self.bans.counts(now),
            banned: self.bans.list(now),
            releases_evicted: self.store_cap.evicted,
            store_bytes: self.store_bytes(),
            store_max_bytes: self.config.store_max_bytes,
            gossip_rejected: self
                .gossip_rejected
                .iter()
                .map(|((t, r), n)| ((t.label(), r.label()), *n))
                .collect(),
            serves_cut: self.serves_cut,
            connections_denied: self.connections_denied.clone(),
        }
    }

    /// Runs whichever of the node's timer, the status refresh and maintenance are due.
    fn on_timer(&mut self, now: Now) {
        if self.node.poll_timeout().is_some_and(|t| t <= now.at) {
            self.node.handle_timeout(now.at);
        }
        if self.next_status <= now.at {
            self.next_status = now.at + STATUS_EVERY;
            self.publish_status(now);
            if let Some(work) = self.checkpoints.tick(&self.node, now.at) {
                self.outputs.push_back(Output::Checkpoint(work));
            }
            self.hook_tick();
        }
        if self.next_maintain <= now.at {
            self.next_maintain = now.at + MAINTAIN_EVERY;
            self.maintain(now);
        }
    }

    fn publish_status(&mut self, now: Now) {
        let snapshot = self.snapshot(now.at);
        self.outputs.push_back(Output::Status(Box::new(snapshot)));
    }

    /// A fresh id for an outbound request of `origin`.
    fn send(&mut self, peer: P, request: Request, origin: Origin<P>) {
        self.next_out += 1;
        let out = OutId(self.next_out);
        self.outbound.insert(out, origin);
        self.outputs.push_back(Output::Send { peer, out, request });
    }
}

/// FNV-1a: spreads the scheduler seed over node identities, so the nodes of one swarm
/// do not all pick the same neighbour index.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
