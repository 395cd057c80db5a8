//! `blobswarm agent`: the per-node daemon.

use std::path::PathBuf;

use blobswarm_peer::{AgentConfig, TargetConfig};
use libp2p::{Multiaddr, PeerId};

use super::keys;

/// Arguments of `blobswarm agent`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// State directory: chunk store, OCI layout of completed images, identity key.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to serve other peers on.
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4002")]
    listen: Vec<Multiaddr>,
    /// Peers to dial at start: a multiaddr (`/ip4/…/tcp/4001`, `/p2p/<id>` optional), or
    /// `dns:NAME:PORT` (also `/dns4/NAME/tcp/PORT`): the name is resolved again every
    /// 30 s (every 5 s while no peer is connected) and every address is dialled, e.g. the
    /// seeder's headless Service. Repeat for several.
    #[arg(long)]
    bootstrap: Vec<blobswarm_peer::Bootstrap>,
    /// Seeder peer id whose signed releases are accepted; repeat for several.
    #[arg(long, required = true)]
    trust_seeder: Vec<PeerId>,
    /// Neighbours to keep connected.
    #[arg(long, default_value_t = 32)]
    max_peers: usize,
    /// Cap on bytes served to other nodes per second, e.g. 50MiB (default: no cap).
    #[arg(long, value_parser = super::units::parse_size)]
    max_upload_rate: Option<u64>,
    /// Cap on bytes fetched per second, e.g. 100MiB (default: no cap).
    #[arg(long, value_parser = super::units::parse_size)]
    max_download_rate: Option<u64>,
    /// Cap on the chunk store (DATA_DIR/store), e.g. 20GiB: superseded releases that are
    /// imported are evicted, least recently used first; the newest release of each image
    /// and downloads in flight are kept even over the cap (default: no cap).
    #[arg(long, value_parser = super::units::parse_size)]
    store_max_size: Option<u64>,
    /// Blobs (layers) downloaded at once (default: all of a release).
    #[arg(long)]
    max_active_blobs: Option<usize>,
    /// Where completed images go: `containerd` (CRI-visible, unpacked), `oci-layout`
    /// (DATA_DIR/oci), or `auto`: containerd when its socket exists and this binary was
    /// built with containerd support, else an OCI layout.
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    runtime: RuntimeChoice,
    #[command(flatten)]
    containerd: super::containerd_args::ContainerdArgs,
    #[command(flatten)]
    fallback: super::fallback::FallbackArgs,
    #[command(flatten)]
    metrics: super::ops_args::MetricsArgs,
    /// Name in progress reports (`blobswarm status`, the wait gate); default: hostname.
    #[arg(long, env = "BLOBSWARM_NODE_NAME")]
    node_name: Option<String>,
    /// Pre-shared swarm key file (`blobswarm keygen --swarm-key`): only nodes with the
    /// same key can connect.
    #[arg(long)]
    swarm_key_file: Option<PathBuf>,
    /// This node's enrolment certificate (`blobswarm enroll`): without one (or
    /// `--enrollment-key`) the seeder ignores its progress reports for the CI gate.
    #[arg(long, env = "BLOBSWARM_ENROLLMENT_CERT")]
    enrollment_cert: Option<PathBuf>,
    /// Enrolment key to issue this node's certificate at start (mount it into the agent
    /// DaemonSet only; a node holding it can enrol any name, see README "Security").
    #[arg(
        long,
        env = "BLOBSWARM_ENROLLMENT_KEY",
        conflicts_with = "enrollment_cert"
    )]
    enrollment_key: Option<PathBuf>,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let key = keys::load_or_create(&args.data_dir.join("identity.key"))?;
    let mut config = AgentConfig::new(key, args.data_dir.join("store"));
    config.listen = args.listen;
    for b in args.bootstrap {
        match b {
            blobswarm_peer::Bootstrap::Addr(a) => config.bootstrap.push(a),
            blobswarm_peer::Bootstrap::Dns(d) => config.bootstrap_dns.push(d),
        }
    }
    config.trusted = args.trust_seeder;
    config.swarm_key = args
        .swarm_key_file
        .as_deref()
        .map(super::swarm_key::load)
        .transpose()?;
    let containerd = args.containerd.config();
    let use_containerd = match args.runtime {
        RuntimeChoice::Containerd => true,
        RuntimeChoice::OciLayout => false,
        RuntimeChoice::Auto => cfg!(feature = "containerd") && containerd.socket.exists(),
    };
    if use_containerd {
        tracing::info!(socket = %containerd.socket.display(), namespace = %containerd.namespace, snapshotter = %containerd.snapshotter, "importing into containerd");
        config.target = Some(TargetConfig::Containerd(containerd));
    } else {
        tracing::info!(dir = %args.data_dir.join("oci").display(), "writing completed images as an OCI layout");
        config.target = Some(TargetConfig::OciLayout(args.data_dir.join("oci")));
    }
    config.max_peers = args.max_peers;
    config.store_max_bytes = args.store_max_size;
    config.node.max_upload_rate = args.max_upload_rate;
    config.node.max_download_rate = args.max_download_rate;
    config.node.max_active_blobs = args.max_active_blobs;
    config.node.herd = args
        .fallback
        .herd_config(config.keypair.public().to_peer_id().to_bytes());
    config.registry_fallback = args.fallback.fallback();
    config.node.validate()?;
    let node_name = super::ops_args::node_name(args.node_name);
    config.enrollment_cert = super::enroll::agent_cert(
        args.enrollment_cert.as_deref(),
        args.enrollment_key.as_deref(),
        &config.keypair.public().to_peer_id(),
        &node_name,
    )?;
    config.node_name = Some(node_name);
    let (agent, mut task) = blobswarm_peer::spawn(config).await?;
    args.metrics.start(&agent, true).await?;
    for addr in agent.listen_addrs().await? {
        println!("listening {addr}");
    }
    let mut status = agent.status();
    let mut announced = std::collections::HashSet::new();
    loop {
        tokio::select! {
            () = super::shutdown_signal() => break,
            _ = &mut task => anyhow::bail!("agent stopped unexpectedly"),
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                for r in s.releases.iter().filter(|r| r.imported) {
                    if announced.insert(r.id) {
                        println!("imported {} {}", r.id, r.reference);
                    }
                }
            }
        }
    }
    // Where the bytes came from, for operators and the crash-resume test.
    let st = agent.status().borrow().stats.clone();
    println!(
        "fetched {} resumed {}",
        st.bytes_from_peers + st.bytes_from_seeders + st.bytes_from_registry,
        st.bytes_resumed
    );
    Ok(())
}

/// Where an agent puts completed images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RuntimeChoice {
    /// containerd if its socket exists (and support is built in), else an OCI layout.
    Auto,
    /// Import into containerd.
    Containerd,
    /// Write an OCI layout under the data directory.
    OciLayout,
}
