//! `blobswarm-rogue agent …`: a real blobswarm agent (`blobswarm_peer::spawn_with_hooks`)
//! started with [`crate::hostile`]'s hooks, for the end-to-end tests that need a
//! misbehaving node as a separate process. It takes the agent flags those tests pass to
//! `blobswarm agent` plus its attack modes, and prints the same `listening` and
//! `imported` lines. The production binary has no flag that makes an agent misbehave.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blobswarm_core::enroll::{CertBody, EnrollError, NodeCert};
use blobswarm_peer::{AgentConfig, AgentError, TargetConfig};
use clap::Parser;
use libp2p::identity::{DecodingError, Keypair};
use libp2p::{Multiaddr, PeerId};
use tracing_subscriber::EnvFilter;

use crate::hostile::{self, ServeFault};

mod attacks;
mod churn;
mod claims;
mod slow;

pub use attacks::{Attacks, HOSTILE_NAME, Plan};
pub use churn::Churn;
pub use claims::Claims;

/// Largest key file read; a real one is about 70 bytes.
const MAX_KEY_FILE: u64 = 4096;
/// How long a certificate the rogue issues itself at start is valid.
const CERT_VALIDITY_MS: u64 = 24 * 3600 * 1000;

/// The rogue binary's command line: `agent` and the agent's flags, as `blobswarm agent`.
#[derive(Debug, Parser)]
#[command(
    name = "blobswarm-rogue",
    about = "A misbehaving blobswarm agent, for tests"
)]
pub enum Cli {
    /// Runs a real agent with hostile hooks.
    Agent(Args),
}

/// The flags of `blobswarm agent` the end-to-end tests use, and the attack modes.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// State directory: chunk store, OCI layout of completed images, identity key.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address to serve other peers on.
    #[arg(long, default_value = "/ip4/127.0.0.1/tcp/0")]
    listen: Vec<Multiaddr>,
    /// Peers to dial at start (multiaddrs).
    #[arg(long)]
    bootstrap: Vec<Multiaddr>,
    /// Seeder peer id whose signed releases are accepted; repeat for several.
    #[arg(long, required = true)]
    trust_seeder: Vec<PeerId>,
    /// Accepted for symmetry with `blobswarm agent`: the rogue always writes an OCI layout.
    #[arg(long, value_parser = ["oci-layout"], default_value = "oci-layout")]
    runtime: String,
    /// Name in progress reports (default: the hostname, as `blobswarm agent`).
    #[arg(long)]
    node_name: Option<String>,
    /// Enrolment key to issue this node's certificate at start, as `blobswarm agent`.
    #[arg(long)]
    enrollment_key: Option<PathBuf>,
    /// How to misbehave when serving.
    #[arg(long, value_enum)]
    hostile: Option<Hostile>,
    /// Answer release syncs with old, superseded releases (the replay attack).
    #[arg(long)]
    replay_old_releases: bool,
    /// Attack from inside the swarm (issue #18 findings 1-5, 8, 10; see `attacks`)
    /// instead of serving badly.
    #[arg(long, conflicts_with_all = ["hostile", "replay_old_releases"])]
    attack: bool,
    /// Only claim every chunk of the `--blob`s for the herd guard and never fetch one
    /// (finding 8 alone; see `claims`), behaving otherwise.
    #[arg(long, conflicts_with_all = ["hostile", "replay_old_releases", "attack"])]
    claim_only: bool,
    /// A blob digest of the coming release (wrong-length haves and claims); repeat.
    #[arg(long)]
    blob: Vec<blobswarm_core::Digest>,
    /// An honest node's certificate file, sent as the rogue's own, with `--stolen-name`.
    #[arg(long, requires_all = ["attack", "stolen_name"])]
    stolen_cert: Option<PathBuf>,
    /// The node name the stolen certificate was issued for.
    #[arg(long, requires = "stolen_cert")]
    stolen_name: Option<String>,
    /// Also read chunk answers from the first bootstrap peer slowly, from a second raw
    /// identity (finding 6; see `slow`).
    #[arg(long, requires = "attack")]
    slow_reader: bool,
    /// Fresh identities minted per churn lane (see `churn`); 0: none.
    #[arg(long, default_value_t = 0)]
    churn: usize,
    /// Churn lanes running at once, each from its own listen address.
    #[arg(long, default_value_t = 4)]
    churn_lanes: usize,
}

/// The serving faults, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Hostile {
    /// Flip a byte of every chunk served.
    Corrupt,
    /// Serve chunks longer than their chunk map says.
    Oversized,
    /// Answer chunk requests with frames the codec refuses.
    Malformed,
    /// Flood neighbours with requests above the rate limit.
    Flood,
}

impl From<Hostile> for ServeFault {
    fn from(h: Hostile) -> Self {
        match h {
            Hostile::Corrupt => Self::FlipByte,
            Hostile::Oversized => Self::Oversized,
            Hostile::Malformed => Self::Malformed,
            Hostile::Flood => Self::Flood,
        }
    }
}

/// Why the rogue could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RogueError {
    /// A key or certificate file could not be read or written.
    #[error("file {path}: {source}")]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The identity key file holds no keypair.
    #[error("key file {path} does not hold a libp2p keypair: {source}")]
    KeyDecode {
        /// The key file.
        path: PathBuf,
        /// Why it does not decode.
        source: DecodingError,
    },
    /// An enrolment certificate could not be issued.
    #[error("issuing a certificate for node {node}: {source}")]
    Enroll {
        /// The node name.
        node: String,
        /// Why.
        source: Box<EnrollError>,
    },
    /// The agent refused to start or stopped.
    #[error("agent: {0}")]
    Agent(Box<AgentError>),
    /// The async runtime could not start.
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// The binary's `main`: parses the command line, runs the rogue agent until SIGTERM.
pub fn main() -> ExitCode {
    let Cli::Agent(args) = Cli::parse();
    let filter = EnvFilter::try_from_env("BLOBSWARM_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,libp2p_gossipsub=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RogueError::Runtime)
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

impl From<AgentError> for RogueError {
    fn from(e: AgentError) -> Self {
        Self::Agent(Box::new(e))
    }
}

/// Runs the rogue agent until SIGTERM or until the agent stops.
///
/// # Errors
/// When the key, the certificate or the agent cannot be set up, or the agent stops.
pub async fn run(args: Args) -> Result<(), RogueError> {
    let key = load_or_create_key(&args.data_dir.join("identity.key"))?;
    let mut config = AgentConfig::new(key, args.data_dir.join("store"));
    config.listen = args.listen.clone();
    config.bootstrap = args.bootstrap.clone();
    config.trusted = args.trust_seeder.clone();
    config.target = Some(TargetConfig::OciLayout(args.data_dir.join("oci")));
    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    if let Some(issuer) = &args.enrollment_key {
        let issuer = load_key(issuer)?;
        config.enrollment_cert = Some(issue_cert(&issuer, &node_name, &config.keypair.public())?);
    }
    // An attacking rogue sends only its forged reports (`attacks`), never an honest one.
    config.node_name = (!args.attack && !args.claim_only).then_some(node_name);
    let hooks = hooks(&args, &config.keypair)?;
    let (agent, task) = blobswarm_peer::spawn_with_hooks(config, hooks).await?;
    for addr in agent.listen_addrs().await? {
        println!("listening {addr}");
    }
    if let (true, Some(seeder)) = (args.slow_reader, args.bootstrap.first()) {
        tokio::spawn(slow::run(seeder.clone(), args.blob.clone()));
    }
    if args.churn > 0 {
        tokio::spawn(churn::run(Churn {
            bootstrap: args.bootstrap.clone(),
            dir: args.data_dir.join("churn"),
            per_lane: args.churn,
            lanes: args.churn_lanes,
        }));
    }
    print_imports(agent, task).await
}

/// The rogue's hooks: the attacks, or serving faults.
fn hooks(args: &Args, key: &Keypair) -> Result<Box<dyn blobswarm_peer::Hooks<PeerId>>, RogueError> {
    if args.claim_only {
        tracing::warn!(
            blobs = args.blob.len(),
            "claiming chunks it never fetches (test agent)"
        );
        return Ok(Box::new(Claims::new(&args.blob)));
    }
    if !args.attack {
        let fault = args.hostile.map(ServeFault::from);
        tracing::warn!(
            ?fault,
            replay = args.replay_old_releases,
            "misbehaving on purpose (test agent)"
        );
        return Ok(hostile::hooks(fault, args.replay_old_releases));
    }
    let stolen = match (&args.stolen_cert, &args.stolen_name) {
        (Some(path), Some(name)) => {
            let text = std::fs::read_to_string(path).map_err(|source| RogueError::KeyFile {
                path: path.clone(),
                source,
            })?;
            Some((text, name.clone()))
        }
        _ => None,
    };
    tracing::warn!(blobs = args.blob.len(), "attacking the swarm (test agent)");
    Ok(Box::new(Attacks::new(&Plan {
        key: key.clone(),
        blobs: args.blob.clone(),
        stolen,
    })))
}

/// Prints `imported <id> <reference>` once per imported release, like `blobswarm agent`,
/// until SIGTERM or the agent stops.
async fn print_imports(
    agent: blobswarm_peer::AgentHandle,
    mut task: tokio::task::JoinHandle<()>,
) -> Result<(), RogueError> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(RogueError::Runtime)?;
    let mut status = agent.status();
    let mut announced = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = &mut task => return Err(AgentError::Stopped.into()),
            changed = status.changed() => {
                if changed.is_err() {
                    return Ok(());
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
}

/// This machine's hostname, the name `blobswarm agent` reports under by default.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A certificate naming `node` for `key`, signed by `issuer`, valid from now.
///
/// # Errors
/// When the certificate cannot be signed.
pub fn issue_cert(
    issuer: &Keypair,
    node: &str,
    key: &libp2p::identity::PublicKey,
) -> Result<NodeCert, RogueError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let body = CertBody {
        node_name: node.to_owned(),
        peer: key.to_peer_id().to_bytes(),
        issued_unix_ms: now,
        expires_unix_ms: now.saturating_add(CERT_VALIDITY_MS),
    };
    NodeCert::issue(issuer, &body).map_err(|source| RogueError::Enroll {
        node: node.to_owned(),
        source: Box::new(source),
    })
}

/// The keypair at `path` (libp2p protobuf encoding, as `blobswarm keygen` writes).
///
/// # Errors
/// When the file cannot be read or holds no keypair.
pub fn load_key(path: &Path) -> Result<Keypair, RogueError> {
    let file_err = |source| RogueError::KeyFile {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(file_err)?.len();
    if len > MAX_KEY_FILE {
        return Err(file_err(std::io::Error::other(format!(
            "{len} bytes, not a key"
        ))));
    }
    let bytes = std::fs::read(path).map_err(file_err)?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|source| RogueError::KeyDecode {
        path: path.to_owned(),
        source,
    })
}

/// The keypair at `path`, created there first if the file does not exist.
fn load_or_create_key(path: &Path) -> Result<Keypair, RogueError> {
    if path.exists() {
        return load_key(path);
    }
    let key = Keypair::generate_ed25519();
    let file_err = |source| RogueError::KeyFile {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(file_err)?;
    }
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|source| RogueError::KeyDecode {
            path: path.to_owned(),
            source,
        })?;
    std::fs::write(path, bytes).map_err(file_err)?;
    Ok(key)
}
