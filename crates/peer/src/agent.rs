//! The libp2p adapter around the driver: the agent's configuration, its handle, and
//! `spawn`, which builds the swarm, reads what the store holds at start and runs the
//! event loop (`agent::adapter`). The agent's behaviour lives in `crate::driver`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use blobswarm_containerd_import::TargetConfig;
use blobswarm_core::node;
use blobswarm_core::store::FsStore;
use blobswarm_core::{ReleaseId, SignedRelease, TrustedSeeders};
use libp2p::{Multiaddr, PeerId, identity::Keypair};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use crate::behaviour::build_swarm;
use crate::bufpool::BufPool;
use crate::driver::{Driver, DriverConfig, Hooks, LocalBlob, NoHooks, Now, PeerIdentity, Startup};
use crate::error::{AgentError, NotReady};
use crate::status::AgentStatus;

mod adapter;

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
    /// Where completed releases are imported: an OCI layout directory or a containerd
    /// (the latter needs the `containerd` feature); None keeps them only in the store.
    pub target: Option<TargetConfig>,
    /// Scheduler tunables.
    pub node: node::Config,
    /// Neighbours to keep; peer exchange dials more until this many are connected.
    pub max_peers: usize,
    /// Registry reads for the herd guard; `Some` turns the guard on (see [`RegistryFallback`]).
    pub registry_fallback: Option<Arc<dyn crate::RegistryFallback>>,
    /// Name in progress reports (hostname or Kubernetes node name); None sends none.
    pub node_name: Option<String>,
    /// Enrolment certificate sent with every progress report: without one the seeder
    /// lists this node's reports as ignored and the CI gate does not count it.
    pub enrollment_cert: Option<blobswarm_core::enroll::NodeCert>,
    /// Where other nodes' progress reports go (seeders: the seeder crate's aggregator,
    /// for status, the wait gate and the dashboard); None ignores them.
    pub report_sink: Option<crate::SharedReportSink>,
    /// Pre-shared swarm key (libp2p pnet): only nodes with the same key connect.
    pub swarm_key: Option<libp2p::pnet::PreSharedKey>,
    /// Cap on the chunk store's blob bytes: superseded, imported releases are evicted
    /// least recently used first (see `store_cap`); None keeps everything.
    pub store_max_bytes: Option<u64>,
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
            target: None,
            node: node::Config::default(),
            max_peers: 32,
            registry_fallback: None,
            node_name: None,
            enrollment_cert: None,
            report_sink: None,
            swarm_key: None,
            store_max_bytes: None,
        }
    }
}

enum Command {
    Publish {
        blobs: Vec<LocalBlob>,
        release: SignedRelease,
        reply: oneshot::Sender<Result<ReleaseId, AgentError>>,
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
    reports: Option<crate::SharedReportSink>,
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

    /// Where other nodes' progress reports go ([`AgentConfig::report_sink`]), if anywhere.
    pub fn report_sink(&self) -> Option<&crate::SharedReportSink> {
        self.reports.as_ref()
    }

    /// `/readyz`: listening, joined the swarm (a neighbour connected, when `need_peer`),
    /// and the runtime answers when one is configured.
    ///
    /// # Errors
    /// What is not ready yet.
    pub async fn ready(&self, need_peer: bool) -> Result<(), NotReady> {
        let (listening, peers) = {
            let s = self.status.borrow();
            (!s.listen_addrs.is_empty(), s.peers)
        };
        if !listening {
            return Err(NotReady::NotListening);
        }
        if need_peer && peers == 0 {
            return Err(NotReady::NoPeer);
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
    ) -> Result<ReleaseId, AgentError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Publish {
                blobs,
                release,
                reply,
            })
            .await
            .map_err(|_| AgentError::Stopped)?;
        rx.await.map_err(|_| AgentError::Stopped)?
    }

    /// Dials a peer now (tests order connections with it; bootstrap peers are dialled
    /// at start).
    ///
    /// # Errors
    /// When the agent has stopped.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), AgentError> {
        self.commands
            .send(Command::Dial(addr))
            .await
            .map_err(|_| AgentError::Stopped)
    }

    /// Waits until the agent listens on at least one address and returns them.
    ///
    /// # Errors
    /// When the agent stops first.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, AgentError> {
        let mut rx = self.status.clone();
        let s = rx
            .wait_for(|s| !s.listen_addrs.is_empty())
            .await
            .map_err(|_| AgentError::StoppedBeforeListening)?;
        Ok(s.listen_addrs.clone())
    }
}

/// Starts an agent on the current tokio runtime.
///
/// # Errors
/// When the store cannot be opened, the swarm cannot be built or a listen address is refused.
pub async fn spawn(
    config: AgentConfig,
) -> Result<(AgentHandle, tokio::task::JoinHandle<()>), AgentError> {
    spawn_with_hooks(config, Box::new(NoHooks)).await
}

/// [`spawn`] with `hooks` called by the agent's driver at the points a misbehaving agent
/// acts differently: the hostile-peer and chaos tests start attackers this way (see
/// `blobswarm_testkit::hostile`), while an operator's config has no way to make an agent misbehave.
///
/// # Errors
/// As [`spawn`].
pub async fn spawn_with_hooks(
    config: AgentConfig,
    hooks: Box<dyn Hooks<PeerId>>,
) -> Result<(AgentHandle, tokio::task::JoinHandle<()>), AgentError> {
    let (store, runtime) = open_targets(&config).await?;
    let peer_id = config.keypair.public().to_peer_id();
    // Buffers are in use by at most the chunks requested plus the chunks being served.
    let pool = BufPool::new(config.node.max_requests_total + config.node.max_uploads);
    let swarm = start_swarm(&config, pool.clone())?;
    let scan_store = store.clone();
    let startup = Startup {
        resumed: tokio::task::spawn_blocking(move || crate::checkpoint::scan(&scan_store))
            .await
            .map_err(|source| AgentError::Scan {
                path: config.store_dir.clone(),
                source,
            })?,
        saved: crate::saved_releases::load(store.root()),
    };
    let import_target = !runtime.is_none();
    let driver = Driver::new(
        driver_config(&config, peer_id, import_target),
        hooks,
        startup,
        now(),
    )?;
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = watch::channel(AgentStatus {
        peer_id: Some(peer_id),
        ..AgentStatus::default()
    });
    resolve_bootstrap_names(&config, &cmd_tx, &status_rx);
    let reports = config.report_sink.clone();
    let event_loop = adapter::EventLoop::new(adapter::Parts {
        swarm,
        driver,
        store: store.clone(),
        runtime: runtime.clone(),
        bootstrap: config.bootstrap,
        registry_fallback: config.registry_fallback,
        commands: cmd_rx,
        status: status_tx,
        aggregator: reports.clone(),
        pool,
    });
    let task = tokio::spawn(event_loop.run());
    Ok((
        AgentHandle {
            commands: cmd_tx,
            status: status_rx,
            peer_id,
            store,
            runtime,
            reports,
        },
        task,
    ))
}

/// The chunk store and the import target, opened (and containerd connected) at start
/// so a wrong path or socket stops the agent with one line naming it.
async fn open_targets(
    config: &AgentConfig,
) -> Result<(Arc<FsStore>, crate::runtime::Runtime), AgentError> {
    let store = FsStore::open(&config.store_dir).map_err(|source| AgentError::Store {
        path: config.store_dir.clone(),
        source,
    })?;
    let runtime = crate::runtime::Runtime::connect(config.target.clone())
        .await
        .map_err(|e| match &config.target {
            Some(TargetConfig::OciLayout(dir)) => AgentError::Layout {
                path: dir.clone(),
                source: Box::new(e),
            },
            _ => AgentError::Runtime(blobswarm_core::error_chain(&e)),
        })?;
    Ok((Arc::new(store), runtime))
}

/// Builds the swarm, listens and dials the bootstrap addresses.
fn start_swarm(
    config: &AgentConfig,
    pool: BufPool,
) -> Result<libp2p::Swarm<crate::behaviour::Behaviour>, AgentError> {
    let mut swarm = build_swarm(
        config.keypair.clone(),
        config.node.request_timeout,
        config.swarm_key,
        config.max_peers,
        pool,
    )?;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| AgentError::Listen {
                addr: addr.clone(),
                source,
            })?;
    }
    for addr in &config.bootstrap {
        if let Err(e) = swarm.dial(addr.clone()) {
            warn!(%addr, error = %e, "cannot dial bootstrap peer");
        }
    }
    Ok(swarm)
}

/// Resolves each bootstrap name now and then, dialling what it finds, until the agent
/// stops.
fn resolve_bootstrap_names(
    config: &AgentConfig,
    cmd_tx: &mpsc::Sender<Command>,
    status_rx: &watch::Receiver<AgentStatus>,
) {
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
}

/// The driver's share of the config: what it decides with.
fn driver_config(config: &AgentConfig, me: PeerId, import_target: bool) -> DriverConfig<PeerId> {
    DriverConfig {
        me,
        node: config.node.clone(),
        trusted: TrustedSeeders::new(config.trusted.iter().copied()),
        max_peers: config.max_peers,
        import_target,
        registry_fallback: config.registry_fallback.is_some(),
        node_name: config.node_name.clone(),
        enrollment_cert: config.enrollment_cert.clone(),
        collect_reports: config.report_sink.is_some(),
        store_max_bytes: config.store_max_bytes,
    }
}

impl PeerIdentity for PeerId {
    fn from_key_bytes(bytes: &[u8]) -> Option<Self> {
        Self::from_bytes(bytes).ok()
    }
}

/// Both clocks, read once per input.
fn now() -> Now {
    Now {
        at: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}
