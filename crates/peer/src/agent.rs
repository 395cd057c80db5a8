//! The agent's event loop: owns the swarm, the core node and the store, and turns
//! network events into node inputs and node actions into network calls.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blobswarm_containerd_import::OciLayoutTarget;
use blobswarm_containerd_import::containerd::ContainerdConfig;
use blobswarm_core::node::{self, Action, ChunkOutcome, Inbound, Node, RequestId};
use blobswarm_core::store::FsStore;
use blobswarm_core::wire::{
    ErrorCode, MAX_PEER_RECORDS, PeerRecord, RELEASE_TOPIC, REPORT_TOPIC, Request, Response,
    SWARM_TOPIC, SwarmNotice,
};
use blobswarm_core::{ChunkMap, Digest, ReleaseId, SignedRelease, TrustedSeeders, codec};
use bytes::Bytes;
use futures::StreamExt;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{
    Multiaddr, PeerId, Swarm, gossipsub, identify, identity::Keypair, multiaddr::Protocol,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent, build_swarm};

mod evict;
mod hostile;
use crate::status::{AgentStatus, ReleaseStatus};

/// Fault injection for tests of hostile peers: what a misbehaving agent does when serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeFault {
    /// Flip one byte of every chunk served.
    FlipByte,
    /// Serve every chunk with a megabyte of extra bytes.
    Oversized,
    /// Answer chunk requests with a frame the codec refuses (a payload on a non-chunk answer).
    Malformed,
    /// Send every neighbour requests far above the rate limit.
    Flood,
}

/// Everything an agent needs to start; built from CLI flags at the edge.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Swarm identity (and, for seeders, the release signing key).
    pub keypair: Keypair,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial first (the seeder's service address in a cluster).
    pub bootstrap: Vec<Multiaddr>,
    /// Names resolved now and then, every address dialled (a headless Service).
    pub bootstrap_dns: Vec<crate::DnsBootstrap>,
    /// Seeder identities whose releases are accepted.
    pub trusted: Vec<PeerId>,
    /// Chunk store directory.
    pub store_dir: PathBuf,
    /// Where completed releases are written as an OCI layout (None: keep only in the store).
    pub layout_dir: Option<PathBuf>,
    /// Import completed releases into this containerd (needs the `containerd` feature).
    pub containerd: Option<ContainerdConfig>,
    /// Scheduler tunables.
    pub node: node::Config,
    /// Neighbours to keep; peer exchange dials more until this many are connected.
    pub max_peers: usize,
    /// Test-only fault injection.
    pub serve_fault: Option<ServeFault>,
    /// Registry reads for the herd guard; `Some` turns the guard on (see [`RegistryFallback`]).
    pub registry_fallback: Option<Arc<dyn crate::RegistryFallback>>,
    /// Name in progress reports (hostname or Kubernetes node name); None sends none.
    pub node_name: Option<String>,
    /// Enrolment certificate sent with every progress report: without one the seeder
    /// lists this node's reports as ignored and the CI gate does not count it.
    pub enrollment_cert: Option<blobswarm_core::enroll::NodeCert>,
    /// Keep other nodes' progress reports (seeders: for status, the wait gate, the dashboard).
    pub collect_reports: bool,
    /// Pre-shared swarm key (libp2p pnet): only nodes with the same key connect.
    pub swarm_key: Option<libp2p::pnet::PreSharedKey>,
    /// Cap on the chunk store's blob bytes: superseded, imported releases are evicted
    /// least recently used first (see `store_cap`); None keeps everything.
    pub store_max_bytes: Option<u64>,
    /// Test-only hostile mode: answer release syncs with every release ever accepted,
    /// superseded ones included (replay attacks in the chaos test).
    pub replay_old_releases: bool,
}

impl AgentConfig {
    /// A config with defaults for everything but identity, trust and directories.
    pub fn new(keypair: Keypair, store_dir: PathBuf) -> Self {
        Self {
            keypair,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("static multiaddr")],
            bootstrap: Vec::new(),
            bootstrap_dns: Vec::new(),
            trusted: Vec::new(),
            store_dir,
            layout_dir: None,
            containerd: None,
            node: node::Config::default(),
            max_peers: 32,
            serve_fault: None,
            registry_fallback: None,
            node_name: None,
            enrollment_cert: None,
            collect_reports: false,
            swarm_key: None,
            store_max_bytes: None,
            replay_old_releases: false,
        }
    }
}

/// A blob the local node holds in full (seeder side).
#[derive(Debug, Clone)]
pub struct LocalBlob {
    /// Its chunk map, built while ingesting.
    pub map: ChunkMap,
    /// Media type from the manifest.
    pub media_type: String,
}

enum Command {
    Publish {
        blobs: Vec<LocalBlob>,
        release: SignedRelease,
        reply: oneshot::Sender<Result<ReleaseId, String>>,
    },
    Dial(Multiaddr),
}

/// Controls a running agent; cheap to clone.
#[derive(Clone)]
pub struct AgentHandle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<AgentStatus>,
    peer_id: PeerId,
    store: Arc<FsStore>,
    runtime: crate::runtime::Runtime,
    reports: crate::reports::SharedAggregator,
}

impl AgentHandle {
    /// This agent's identity.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The agent's chunk store (the seeder ingests into it before publishing).
    pub fn store(&self) -> &Arc<FsStore> {
        &self.store
    }

    /// Other nodes' newest progress reports (filled when `collect_reports` is set).
    pub fn reports(&self) -> &crate::reports::SharedAggregator {
        &self.reports
    }

    /// `/readyz`: listening, joined the swarm (a neighbour connected, when `need_peer`),
    /// and the runtime answers when one is configured.
    ///
    /// # Errors
    /// What is not ready yet.
    pub async fn ready(&self, need_peer: bool) -> Result<(), String> {
        let (listening, peers) = {
            let s = self.status.borrow();
            (!s.listen_addrs.is_empty(), s.peers)
        };
        if !listening {
            return Err("not listening yet".into());
        }
        if need_peer && peers == 0 {
            return Err("no peer connected yet".into());
        }
        self.runtime.ping().await
    }

    /// A receiver of status snapshots, updated a few times a second.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// Seeder side: registers locally stored blobs and announces a signed release.
    ///
    /// # Errors
    /// When the agent has stopped or refuses the release (e.g. it does not trust its own key).
    pub async fn publish(
        &self,
        blobs: Vec<LocalBlob>,
        release: SignedRelease,
    ) -> anyhow::Result<ReleaseId> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                blobs,
                release,
                reply,
            })
            .await
            .map_err(|_| anyhow::anyhow!("agent stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("agent stopped"))?
            .map_err(|e| anyhow::anyhow!(e))
    }

    /// Dials a peer now (tests order connections with it; bootstrap peers are dialled
    /// at start).
    ///
    /// # Errors
    /// When the agent has stopped.
    pub async fn dial(&self, addr: Multiaddr) -> anyhow::Result<()> {
        self.commands
            .send(Command::Dial(addr))
            .await
            .map_err(|_| anyhow::anyhow!("agent stopped"))
    }

    /// Waits until the agent listens on at least one address and returns them.
    ///
    /// # Errors
    /// When the agent stops first.
    pub async fn listen_addrs(&self) -> anyhow::Result<Vec<Multiaddr>> {
        let mut rx = self.status.clone();
        let s = rx
            .wait_for(|s| !s.listen_addrs.is_empty())
            .await
            .map_err(|_| anyhow::anyhow!("agent stopped before listening"))?;
        Ok(s.listen_addrs.clone())
    }
}

/// Starts an agent on the current tokio runtime.
///
/// # Errors
/// When the store cannot be opened, the swarm cannot be built or a listen address is refused.
pub async fn spawn(
    config: AgentConfig,
) -> anyhow::Result<(AgentHandle, tokio::task::JoinHandle<()>)> {
    let store = Arc::new(FsStore::open(&config.store_dir)?);
    let layout = match &config.layout_dir {
        Some(dir) => Some(Arc::new(OciLayoutTarget::open(dir)?)),
        None => None,
    };
    let runtime = crate::runtime::Runtime::connect(config.containerd.clone()).await?;
    let peer_id = config.keypair.public().to_peer_id();
    let mut swarm = build_swarm(
        config.keypair.clone(),
        config.node.request_timeout,
        config.swarm_key,
    )?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone())?;
    }
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    let mut node_config = config.node.clone();
    if config.registry_fallback.is_some() && node_config.herd.is_none() {
        node_config.herd = Some(node::HerdConfig::new(peer_id.to_bytes()));
    }
    let reports = crate::reports::SharedAggregator::default();
    if config.collect_reports {
        crate::reports::start_sampling(&reports);
    }
    let mut node = Node::new(
        node_config,
        TrustedSeeders::new(config.trusted.iter().copied()),
    )?;
    crate::checkpoint::resume(&store, &mut node).await?;
    let restored = crate::saved_releases::restore(
        store.root(),
        &mut node,
        &TrustedSeeders::new(config.trusted.iter().copied()),
        Instant::now(),
        unix_ms(),
    );
    if restored > 0 {
        info!(restored, "releases restored from disk");
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (internal_tx, internal_rx) = mpsc::channel(256);
    let (status_tx, status_rx) = watch::channel(AgentStatus {
        peer_id: Some(peer_id),
        ..AgentStatus::default()
    });
    for target in config.bootstrap_dns.clone() {
        let commands = cmd_tx.downgrade();
        tokio::spawn(crate::dns_bootstrap::run(
            target,
            status_rx.clone(),
            move |addr| {
                commands
                    .upgrade()
                    .is_some_and(|tx| tx.try_send(Command::Dial(addr)).is_ok() || !tx.is_closed())
            },
        ));
    }
    let event_loop_name = config.node_name.clone();
    let enrollment_cert = config.enrollment_cert.clone();
    let collect = config.collect_reports;
    let runtime_handle = runtime.clone();
    let bans = hostile::Bans::new(config.node.ban_duration);
    let event_loop = EventLoop {
        swarm,
        node,
        store: store.clone(),
        layout,
        runtime,
        config,
        commands: cmd_rx,
        internal_tx,
        internal_rx,
        status: status_tx,
        outbound: HashMap::new(),
        addr_book: HashMap::new(),
        listen_addrs: Vec::new(),
        uploaded_bytes: 0,
        chunks_served: 0,
        releases: HashMap::new(),
        refused: HashSet::new(),
        serving: HashMap::new(),
        bootstrap_only: Default::default(),
        chunks_verified: 0,
        reporter: config_reporter(&event_loop_name, enrollment_cert),
        aggregator: collect.then(|| reports.clone()),
        bans,
        checkpoints: crate::checkpoint::Checkpoints::new(),
        store_cap: evict::StoreCap::default(),
        replay_stash: Vec::new(),
    };
    let task = tokio::spawn(event_loop.run());
    Ok((
        AgentHandle {
            commands: cmd_tx,
            status: status_rx,
            peer_id,
            store,
            runtime: runtime_handle,
            reports,
        },
        task,
    ))
}

fn config_reporter(
    name: &Option<String>,
    cert: Option<blobswarm_core::enroll::NodeCert>,
) -> Option<crate::reports::Reporter> {
    name.as_deref()
        .map(|name| crate::reports::Reporter::new(name, cert))
}

/// Why we sent an outbound request.
enum Origin {
    Node(RequestId),
    PeerExchange,
    ReleaseSync,
    /// Test-only hostile mode: each answer triggers the next request to that peer.
    Flood(PeerId),
}

/// Results of work done off the event loop.
enum Internal {
    ChunkDone {
        id: RequestId,
        blob: Digest,
        outcome: ChunkOutcome,
    },
    Serve {
        request_id: InboundRequestId,
        channel: ResponseChannel<(Response, Bytes)>,
        blob: Digest,
        index: u32,
        bytes: Option<Vec<u8>>,
    },
    Imported {
        id: ReleaseId,
        result: Result<(), String>,
    },
    RegistryChunk {
        id: RequestId,
        blob: Digest,
        index: u32,
        result: Result<Bytes, String>,
    },
}

#[derive(Default)]
struct ReleaseTiming {
    accepted: Option<Instant>,
    completed: Option<Duration>,
    import_started: Option<Instant>,
    import_time: Option<Duration>,
    imported: bool,
    import_error: Option<String>,
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    node: Node<PeerId>,
    store: Arc<FsStore>,
    layout: Option<Arc<OciLayoutTarget>>,
    runtime: crate::runtime::Runtime,
    config: AgentConfig,
    commands: mpsc::Receiver<Command>,
    internal_tx: mpsc::Sender<Internal>,
    internal_rx: mpsc::Receiver<Internal>,
    status: watch::Sender<AgentStatus>,
    outbound: HashMap<OutboundRequestId, Origin>,
    addr_book: HashMap<PeerId, Vec<Multiaddr>>,
    listen_addrs: Vec<Multiaddr>,
    uploaded_bytes: u64,
    chunks_served: u64,
    releases: HashMap<ReleaseId, ReleaseTiming>,
    refused: HashSet<ReleaseId>,
    /// Chunk serves in progress, to free their upload slots when they end.
    serving: HashMap<InboundRequestId, PeerId>,
    /// Inbound peers beyond `max_peers`, served discovery only, then disconnected.
    bootstrap_only: crate::overlay::BootstrapOnly,
    chunks_verified: u64,
    /// Sends this node's progress reports (None: not configured).
    reporter: Option<crate::reports::Reporter>,
    /// Keeps other nodes' reports (seeders).
    aggregator: Option<crate::reports::SharedAggregator>,
    checkpoints: crate::checkpoint::Checkpoints,
    bans: hostile::Bans,
    store_cap: evict::StoreCap,
    /// Test-only: releases a replaying agent hands out again (see `hostile`).
    replay_stash: Vec<SignedRelease>,
}

/// Refused release ids remembered to avoid re-verifying them; bounded against floods.
const MAX_REMEMBERED_REFUSALS: usize = 256;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl EventLoop {
    async fn run(mut self) {
        let mut status_tick = tokio::time::interval(Duration::from_millis(200));
        let mut maintenance = tokio::time::interval(Duration::from_secs(3));
        loop {
            let timeout = self.node.poll_timeout();
            let sleep = async move {
                match timeout {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                Some(msg) = self.internal_rx.recv() => self.on_internal(msg),
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                () = sleep => self.node.handle_timeout(Instant::now()),
                _ = status_tick.tick() => {
                    self.publish_status();
                    self.checkpoints.tick(&self.node, &self.store, Instant::now());
                    self.misbehave();
                }
                _ = maintenance.tick() => self.maintain(),
            }
            self.drain_actions();
        }
        debug!("agent event loop stopped");
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Publish {
                blobs,
                release,
                reply,
            } => {
                let now = Instant::now();
                for b in blobs {
                    self.node.add_local_blob(b.map, &b.media_type, now);
                }
                let result = self
                    .node
                    .publish_release(release, now, unix_ms())
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            Command::Dial(addr) => {
                if let Err(e) = self.swarm.dial(addr.clone()) {
                    warn!(%addr, error = %e, "cannot dial peer");
                }
            }
        }
    }

    fn drain_actions(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Send { peer, id, request } => {
                    let out = self.swarm.behaviour_mut().rr.send_request(&peer, request);
                    self.outbound.insert(out, Origin::Node(id));
                }
                Action::Publish(signed) => self.gossip_release(&signed),
                Action::Notice(notice) => self.gossip_notice(&notice),
                Action::FetchRegistry {
                    id,
                    blob,
                    index,
                    range,
                } => self.fetch_from_registry(id, blob, index, range),
                Action::ReleaseAccepted(id) => {
                    if let Some(r) = self.node.release(&id) {
                        info!(release = %id.short(), reference = %r.reference, bytes = r.total_bytes(), "release accepted");
                    }
                    self.releases.entry(id).or_default().accepted = Some(Instant::now());
                    self.keep_for_replay(id);
                    self.save_release(id);
                    self.enforce_store_cap();
                }
                Action::ReleaseRefused { id, reason } => {
                    warn!(release = %id.short(), error = %reason, "release refused");
                    crate::saved_releases::forget(self.store.root(), &id);
                    if self.refused.len() >= MAX_REMEMBERED_REFUSALS {
                        self.refused.clear();
                    }
                    self.refused.insert(id);
                }
                Action::BlobComplete(blob) => self.finalize_blob(blob),
                Action::ReleaseComplete(id) => self.release_complete(id),
                Action::Misbehaved { peer, reason } => {
                    self.ban_peer(peer, crate::status::BanKind::BadChunk, &reason);
                }
            }
        }
    }

    /// Herd guard: this node won the claim on a chunk nobody holds; read it from the
    /// registry of a release that contains the blob. The bytes take the same
    /// verify-then-store path as a chunk from a peer.
    fn fetch_from_registry(
        &mut self,
        id: RequestId,
        blob: Digest,
        index: u32,
        range: std::ops::Range<u64>,
    ) {
        let reference = self.node.release_ids().find_map(|r| {
            let release = self.node.release(r)?;
            release
                .blobs
                .iter()
                .any(|b| b.digest == blob)
                .then(|| release.reference.clone())
        });
        let (Some(fallback), Some(reference)) = (self.config.registry_fallback.clone(), reference)
        else {
            warn!(blob = %blob.short(), index, "registry fetch requested but no registry fallback is configured");
            self.node.handle_failure(id, Instant::now());
            return;
        };
        info!(blob = %blob.short(), index, %reference, "herd guard: fetching an orphaned chunk from the registry");
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = fallback.read_range(reference, blob, range).await;
            let _ = tx
                .send(Internal::RegistryChunk {
                    id,
                    blob,
                    index,
                    result,
                })
                .await;
        });
    }

    fn gossip_release(&mut self, signed: &SignedRelease) {
        let Ok(bytes) = codec::encode(signed) else {
            return;
        };
        let topic = gossipsub::IdentTopic::new(RELEASE_TOPIC);
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_) | Err(gossipsub::PublishError::Duplicate) => {}
            // Peers that join later learn the release through the sync on connect.
            Err(e) => debug!(error = %e, "release gossip not sent"),
        }
    }

    /// Keeps an accepted release on disk for a restart (see `saved_releases`).
    fn save_release(&self, id: ReleaseId) {
        let Some(signed) = self.node.signed_release(&id).cloned() else {
            return;
        };
        let root = self.store.root().to_owned();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::saved_releases::save(&root, &signed) {
                warn!(release = %id.short(), error = %e, "cannot save release for a restart");
            }
        });
    }

    fn gossip_notice(&mut self, notice: &SwarmNotice) {
        let Ok(bytes) = codec::encode(notice) else {
            return;
        };
        let topic = gossipsub::IdentTopic::new(SWARM_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            // No subscribed neighbour yet (InsufficientPeers): the next heartbeat retries.
            debug!(error = %e, "swarm notice not sent");
        }
    }

    fn finalize_blob(&self, blob: Digest) {
        let Some(map) = self.node.chunk_map(&blob).cloned() else {
            return;
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            // The map first, so a restart finds the complete blob resumable.
            let saved = store.save_map(&map);
            if let Err(e) = saved.and_then(|()| store.finalize(&blob, map.size()).map(|_| ())) {
                warn!(%blob, error = %e, "cannot finalize blob");
            }
        });
    }

    fn release_complete(&mut self, id: ReleaseId) {
        let timing = self.releases.entry(id).or_default();
        timing.completed = timing.accepted.map(|t| t.elapsed());
        let Some(release) = self.node.release(&id).cloned() else {
            return;
        };
        info!(release = %id.short(), reference = %release.reference, secs = timing.completed.map(|d| d.as_secs_f64()), "release complete");
        if self.layout.is_none() && self.runtime.is_none() {
            return;
        }
        if self.node.is_superseded(&id) {
            // The newer release replaces it at once; importing it would only move the
            // tag backwards for a moment (and forwards again) on this node.
            info!(release = %id.short(), reference = %release.reference, "superseded by a newer release of this image; not imported");
            timing.imported = true;
            return;
        }
        timing.import_started = Some(Instant::now());
        let layout = self.layout.clone();
        let runtime = self.runtime.clone();
        let store = self.store.clone();
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let result = import_release(store, layout, runtime, release).await;
            let _ = tx.send(Internal::Imported { id, result }).await;
        });
    }

    fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::RegistryChunk {
                id,
                blob,
                index,
                result,
            } => match result {
                Ok(bytes) => self.verify_and_store(id, bytes),
                Err(e) => {
                    warn!(blob = %blob.short(), index, error = %e, "herd guard: registry read failed");
                    self.node.handle_failure(id, Instant::now());
                }
            },
            Internal::ChunkDone { id, blob, outcome } => {
                match &outcome {
                    ChunkOutcome::LocalError(e) => warn!(
                        error = %e,
                        pause_secs = self.config.node.store_error_pause.as_secs_f64(),
                        "cannot store chunk; download paused"
                    ),
                    ChunkOutcome::Stored => self.checkpoints.chunk_stored(blob),
                    ChunkOutcome::Corrupt(_) => {}
                }
                if matches!(outcome, ChunkOutcome::Stored) {
                    self.chunks_verified += 1;
                }
                self.node.handle_chunk(id, outcome, Instant::now());
            }
            Internal::Serve {
                request_id,
                channel,
                blob,
                index,
                bytes,
            } => {
                let response = match bytes {
                    Some(bytes) => {
                        self.store_cap.served(blob, Instant::now());
                        self.uploaded_bytes += bytes.len() as u64;
                        self.chunks_served += 1;
                        let mut chunk = (Response::Chunk { blob, index }, Bytes::from(bytes));
                        self.fault_chunk(&mut chunk);
                        chunk
                    }
                    None => (Response::Error(ErrorCode::NotFound), Bytes::new()),
                };
                if self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_response(channel, response)
                    .is_err()
                {
                    // The requester is gone; no ResponseSent or InboundFailure may follow.
                    self.finish_upload(request_id);
                }
            }
            Internal::Imported { id, result } => {
                let t = self.releases.entry(id).or_default();
                match result {
                    Ok(()) => {
                        info!(release = %id.short(), "release imported");
                        t.imported = true;
                        t.import_time = t.import_started.map(|s| s.elapsed());
                    }
                    Err(e) => {
                        warn!(release = %id.short(), error = %e, "import failed");
                        t.import_error = Some(e);
                    }
                }
                self.enforce_store_cap();
                self.publish_status();
                self.send_report();
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                info!(address = %full, "listening");
                self.listen_addrs.push(full);
                self.publish_status();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => {
                if self.refuse_banned(peer_id) {
                    return;
                }
                if self.node.peer_count() >= self.config.max_peers {
                    // Neighbour set full: answer its discovery requests, then let it go.
                    debug!(peer = %peer_id, "neighbour set full; peer is bootstrap-only");
                    self.bootstrap_only.admit(peer_id, now);
                    return;
                }
                debug!(peer = %peer_id, "connected");
                self.node.handle_peer_connected(peer_id, now);
                let out = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_request(&peer_id, Request::Peers);
                self.outbound.insert(out, Origin::PeerExchange);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                if self.bootstrap_only.remove(&peer_id) {
                    return;
                }
                debug!(peer = %peer_id, "disconnected");
                self.node.handle_peer_disconnected(&peer_id, now);
                // A neighbour left (not a bootstrap-only peer whose grace ran out).
                if self.node.peer_count() < self.config.max_peers
                    && let Some(next) = self.bootstrap_only.promote()
                {
                    debug!(peer = %next, "bootstrap-only peer promoted to neighbour");
                    self.node.handle_peer_connected(next, now);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let addrs: Vec<Multiaddr> = info
                    .listen_addrs
                    .into_iter()
                    .filter(|a| !a.iter().any(|p| matches!(p, Protocol::P2pCircuit)))
                    .take(blobswarm_core::wire::MAX_ADDRS_PER_PEER)
                    .collect();
                for a in &addrs {
                    self.swarm.add_peer_address(peer_id, a.clone());
                }
                self.addr_book.insert(peer_id, addrs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) if message.topic == gossipsub::IdentTopic::new(SWARM_TOPIC).hash() => {
                let notice = codec::decode::<SwarmNotice>(&message.data)
                    .map_err(|e| e.to_string())
                    .and_then(|n| n.validate().map(|()| n).map_err(|e| e.to_string()));
                match (notice, message.source) {
                    (Ok(notice), Some(from)) => {
                        self.node.handle_notice(&from, notice, Instant::now());
                    }
                    (Err(e), source) => warn!(?source, error = %e, "malformed swarm notice"),
                    (Ok(_), None) => {}
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) if message.topic == gossipsub::IdentTopic::new(REPORT_TOPIC).hash() => {
                self.receive_report(message.source, &message.data);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                message,
                ..
            })) => match codec::decode::<SignedRelease>(&message.data) {
                Ok(signed) => self.accept_release(signed),
                Err(e) => {
                    warn!(source = ?message.source, error = %e, "malformed release on gossip")
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Rr(event)) => self.on_rr_event(event),
            _ => {}
        }
    }

    /// Hands a release to the node; a refused one is remembered (boundedly) so the periodic
    /// release sync does not re-verify and re-log it every few seconds.
    fn accept_release(&mut self, signed: SignedRelease) {
        let id = signed.id();
        if self.refused.contains(&id) {
            return;
        }
        // A refusal is logged when the node's `ReleaseRefused` action is drained.
        let _ = self.node.handle_release(signed, Instant::now(), unix_ms());
    }

    fn on_rr_event(&mut self, event: request_response::Event<Request, (Response, Bytes)>) {
        let now = Instant::now();
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request_id,
                    request,
                    channel,
                } => self.on_request(peer, request_id, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_response(request_id, response),
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                ..
            } => {
                if let Some(Origin::Node(id)) = self.outbound.remove(&request_id) {
                    debug!(%peer, %error, "request failed");
                    self.node.handle_failure(id, now);
                }
                if let request_response::OutboundFailure::Io(e) = &error
                    && hostile::is_protocol_violation(e)
                {
                    self.ban_peer(
                        peer,
                        crate::status::BanKind::BadFrame,
                        &format!("sent a frame we refuse: {e}"),
                    );
                }
            }
            request_response::Event::InboundFailure {
                peer,
                error,
                request_id,
                ..
            } => {
                debug!(%peer, %error, "inbound request failed");
                self.finish_upload(request_id);
                if let request_response::InboundFailure::Io(e) = &error
                    && hostile::is_protocol_violation(e)
                {
                    self.ban_peer(
                        peer,
                        crate::status::BanKind::BadFrame,
                        &format!("sent a frame we refuse: {e}"),
                    );
                }
            }
            request_response::Event::ResponseSent { request_id, .. } => {
                self.finish_upload(request_id);
            }
        }
    }

    /// Frees the upload slot of a chunk serve, whichever way it ended; once per serve.
    fn finish_upload(&mut self, request_id: InboundRequestId) {
        if let Some(peer) = self.serving.remove(&request_id) {
            self.node.handle_upload_done(&peer, Instant::now());
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        request_id: InboundRequestId,
        request: Request,
        channel: ResponseChannel<(Response, Bytes)>,
    ) {
        if !self.admit_request(peer) {
            return;
        }
        if self.bootstrap_only.contains(&peer)
            && !crate::overlay::answered_when_bootstrap_only(&request)
        {
            let answer = match request {
                Request::Have { .. } => Response::Ack,
                _ => Response::Error(ErrorCode::Busy),
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .rr
                .send_response(channel, (answer, Bytes::new()));
            return;
        }
        match self.node.handle_request(&peer, request, Instant::now()) {
            Inbound::Respond(mut r) => {
                self.fault_releases(&mut r);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_response(channel, (r, Bytes::new()));
            }
            Inbound::Peers => {
                let records = self.peer_records(&peer);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_response(channel, (Response::Peers(records), Bytes::new()));
            }
            Inbound::ServeChunk { blob, index, range } => {
                self.serving.insert(request_id, peer);
                let store = self.store.clone();
                let tx = self.internal_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let bytes = store.read_range(&blob, range).ok();
                    let _ = tx.blocking_send(Internal::Serve {
                        request_id,
                        channel,
                        blob,
                        index,
                        bytes,
                    });
                });
            }
        }
    }

    fn on_response(
        &mut self,
        request_id: OutboundRequestId,
        (response, payload): (Response, Bytes),
    ) {
        let now = Instant::now();
        match self.outbound.remove(&request_id) {
            Some(Origin::Node(id)) => match response {
                Response::Chunk { .. } => self.verify_and_store(id, payload),
                other => self.node.handle_response(id, other, now, unix_ms()),
            },
            Some(Origin::Flood(peer)) => self.flood(peer, 1),
            Some(Origin::PeerExchange) => {
                if let Response::Peers(records) = response {
                    self.dial_records(records);
                }
            }
            Some(Origin::ReleaseSync) => {
                if let Response::Releases(list) = response {
                    for signed in list {
                        self.accept_release(signed);
                    }
                }
            }
            None => {}
        }
    }

    /// Hashes the chunk against its map on a blocking thread, stores it if it matches,
    /// and reports the outcome back to the loop. Unverified bytes never reach the store.
    fn verify_and_store(&mut self, id: RequestId, payload: Bytes) {
        let Some((map, index)) = self.node.chunk_target(id) else {
            return;
        };
        let store = self.store.clone();
        let tx = self.internal_tx.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = match map.verify(index, &payload) {
                Err(e) => ChunkOutcome::Corrupt(e),
                Ok(()) => match store.write_chunk(&map, index, &payload) {
                    Ok(()) => ChunkOutcome::Stored,
                    Err(e) => ChunkOutcome::LocalError(e.to_string()),
                },
            };
            let blob = map.blob();
            let _ = tx.blocking_send(Internal::ChunkDone { id, blob, outcome });
        });
    }

    fn peer_records(&self, asking: &PeerId) -> Vec<PeerRecord> {
        self.addr_book
            .iter()
            .filter(|(p, addrs)| *p != asking && !addrs.is_empty() && self.swarm.is_connected(p))
            .take(MAX_PEER_RECORDS)
            .map(|(p, addrs)| PeerRecord {
                peer: p.to_bytes(),
                addrs: addrs.iter().map(|a| a.to_vec()).collect(),
            })
            .collect()
    }

    fn dial_records(&mut self, records: Vec<PeerRecord>) {
        let me = *self.swarm.local_peer_id();
        for r in records {
            if self.swarm.connected_peers().count() >= self.config.max_peers {
                return;
            }
            let Ok(peer) = PeerId::from_bytes(&r.peer) else {
                continue;
            };
            if peer == me
                || self.swarm.is_connected(&peer)
                || self.bans.is_banned(&peer, Instant::now())
            {
                continue;
            }
            let addrs: Vec<Multiaddr> = r
                .addrs
                .into_iter()
                .filter_map(|a| Multiaddr::try_from(a).ok())
                .collect();
            if addrs.is_empty() {
                continue;
            }
            let opts = DialOpts::peer_id(peer).addresses(addrs).build();
            if let Err(e) = self.swarm.dial(opts) {
                debug!(%peer, error = %e, "peer exchange dial failed");
            }
        }
    }

    /// Periodic upkeep: re-dial bootstrap peers when alone, ask a neighbour for releases
    /// (covers gossip sent before we were subscribed), and refresh peer exchange.
    fn maintain(&mut self) {
        self.log_progress();
        self.enforce_store_cap();
        for peer in self.bootstrap_only.take_due(Instant::now()) {
            debug!(%peer, "closing bootstrap-only connection");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        self.send_report();
        let connected: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        if connected.is_empty() {
            for addr in self.config.bootstrap.clone() {
                let _ = self.swarm.dial(addr);
            }
            return;
        }
        let pick = connected[rand::random::<usize>() % connected.len()];
        let rr = &mut self.swarm.behaviour_mut().rr;
        let out = rr.send_request(&pick, Request::Releases);
        self.outbound.insert(out, Origin::ReleaseSync);
        if connected.len() < self.config.max_peers {
            let out = self
                .swarm
                .behaviour_mut()
                .rr
                .send_request(&pick, Request::Peers);
            self.outbound.insert(out, Origin::PeerExchange);
        }
    }

    /// One structured line per release still downloading, so a long transfer shows progress.
    fn log_progress(&self) {
        for r in self.status.borrow().releases.iter().filter(|r| !r.complete) {
            info!(
                release = %r.id.short(),
                reference = %r.reference,
                have = r.have_bytes,
                total = r.total_bytes,
                percent = format_args!("{:.1}", 100.0 * r.have_bytes as f64 / r.total_bytes.max(1) as f64),
                peers = self.node.peer_count(),
                "downloading"
            );
        }
    }

    /// Gossips this node's progress report (when a node name is configured).
    fn send_report(&mut self) {
        let Some(reporter) = self.reporter.as_mut() else {
            return;
        };
        let report = reporter.report(&self.status.borrow(), Instant::now(), unix_ms());
        let Ok(bytes) = codec::encode(&report) else {
            return;
        };
        let topic = gossipsub::IdentTopic::new(REPORT_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            debug!(error = %e, "progress report not sent");
        }
    }

    /// Keeps a neighbour's progress report when this node aggregates them (seeders).
    fn receive_report(&self, source: Option<PeerId>, data: &[u8]) {
        let (Some(agg), Some(from)) = (&self.aggregator, source) else {
            return;
        };
        match blobswarm_core::wire::ProgressReport::decode(data) {
            Ok(report) => agg
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(from, report, unix_ms()),
            Err(e) => warn!(%from, error = %e, "malformed progress report"),
        }
    }

    fn publish_status(&mut self) {
        let progress: HashMap<Digest, u64> = self
            .node
            .progress()
            .into_iter()
            .map(|p| (p.blob, p.have_bytes))
            .collect();
        let releases = self
            .node
            .release_ids()
            .filter_map(|id| {
                let r = self.node.release(id)?;
                let t = self.releases.get(id);
                Some(ReleaseStatus {
                    id: *id,
                    reference: r.reference.clone(),
                    total_bytes: r.total_bytes(),
                    have_bytes: r
                        .blobs
                        .iter()
                        .map(|b| progress.get(&b.digest).copied().unwrap_or(0))
                        .sum(),
                    complete: self.node.release_complete(id),
                    imported: t.is_some_and(|t| t.imported),
                    import_error: t.and_then(|t| t.import_error.clone()),
                    download_time: t.and_then(|t| t.completed),
                    import_time: t.and_then(|t| t.import_time),
                })
            })
            .collect();
        let status = AgentStatus {
            peer_id: Some(*self.swarm.local_peer_id()),
            listen_addrs: self.listen_addrs.clone(),
            peers: self.node.peer_count(),
            releases,
            stats: self.node.stats().clone(),
            uploaded_bytes: self.uploaded_bytes,
            chunks_served: self.chunks_served,
            chunks_verified: self.chunks_verified,
            import_target: self.layout.is_some() || !self.runtime.is_none(),
            updated: Some(Instant::now()),
            bans: self.bans.counts(Instant::now()),
            releases_evicted: self.store_cap.evicted,
        };
        self.status.send_replace(status);
    }
}

/// Makes every blob of `release` durable, then writes it to the OCI layout and/or
/// containerd. Runs off the event loop; each blob is read from the store once per target.
async fn import_release(
    store: Arc<FsStore>,
    layout: Option<Arc<OciLayoutTarget>>,
    runtime: crate::runtime::Runtime,
    release: Arc<blobswarm_core::Release>,
) -> Result<(), String> {
    let (store2, release2) = (store.clone(), release.clone());
    tokio::task::spawn_blocking(move || {
        for b in &release2.blobs {
            store2
                .finalize(&b.digest, b.size)
                .map_err(|e| e.to_string())?;
        }
        if let Some(layout) = layout {
            layout
                .import(&release2, |d| store2.blob_path(d))
                .map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(())
    })
    .await
    .map_err(|e| format!("import task failed: {e}"))??;
    runtime.import(&release, &store).await
}
