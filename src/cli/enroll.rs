//! `blobswarm enroll` and the agent's enrolment flags: certificates that let a node's
//! progress reports count towards the CI gate (see `blobswarm_core::enroll`).
//!
//! The enrolment key is an ordinary identity key (`blobswarm keygen --out enroll.key`
//! prints the public id the seeder trusts with `--enroll-pubkey`). Certificates are issued
//! either per node, offline, with `blobswarm enroll` (the key never reaches a node), or by
//! each agent at start from a key mounted into the agent DaemonSet only
//! (`agent --enrollment-key`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use blobswarm_core::enroll::{CertBody, EnrollmentKeys, NodeCert};
use libp2p::PeerId;
use libp2p::identity::Keypair;

/// Largest certificate file read.
const MAX_CERT_FILE: u64 = 4096;
/// How long a certificate an agent issues itself at start is valid (it issues a new one
/// at every start).
const SELF_ISSUED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Arguments of `blobswarm enroll`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The enrolment key file (`blobswarm keygen --out FILE`).
    #[arg(long)]
    enrollment_key: PathBuf,
    /// The node's name, exactly as its agent reports it (`agent --node-name`).
    #[arg(long)]
    node: String,
    /// The agent's peer id; or give `--data-dir` to read (or create) its identity key.
    #[arg(
        long,
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    peer: Option<PeerId>,
    /// The agent's data directory (its `identity.key` is created if it does not exist yet,
    /// so a node can be provisioned before its agent first runs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How long the certificate is valid, e.g. 90d, 12h.
    #[arg(long, default_value = "365d", value_parser = super::units::parse_duration)]
    valid_for: Duration,
    /// Write the certificate here (for `agent --enrollment-cert`) instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let issuer = super::keys::load(&args.enrollment_key)?;
    let peer = match (args.peer, &args.data_dir) {
        (Some(p), _) => p,
        (None, Some(dir)) => super::keys::load_or_create(&dir.join("identity.key"))?
            .public()
            .to_peer_id(),
        (None, None) => anyhow::bail!("give --peer or --data-dir"),
    };
    let text = issue(&issuer, &args.node, &peer, args.valid_for)?.to_text()?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, format!("{text}\n"))
                .with_context(|| format!("writing certificate {}", path.display()))?;
            eprintln!(
                "enrolled node {:?} (key {peer}) until {} days from now: {}",
                args.node,
                args.valid_for.as_secs() / 86_400,
                path.display()
            );
        }
        None => println!("{text}"),
    }
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A certificate for `node` with key `peer`, valid from now for `valid_for`.
fn issue(
    issuer: &Keypair,
    node: &str,
    peer: &PeerId,
    valid_for: Duration,
) -> anyhow::Result<NodeCert> {
    let now = unix_ms();
    let body = CertBody {
        node_name: node.to_owned(),
        peer: peer.to_bytes(),
        issued_unix_ms: now,
        expires_unix_ms: now.saturating_add(u64::try_from(valid_for.as_millis())?),
    };
    Ok(NodeCert::issue(issuer, &body)?)
}

/// The agent's certificate from `--enrollment-cert FILE` or, issued now, from
/// `--enrollment-key FILE`; checked to name this agent's key and node name, so a wrong
/// file stops the agent at start instead of its reports being ignored later.
pub(crate) fn agent_cert(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    me: &PeerId,
    node_name: &str,
) -> anyhow::Result<Option<NodeCert>> {
    let cert = match (cert_file, key_file) {
        (Some(path), _) => {
            let text = super::keys::read_bounded(
                path,
                MAX_CERT_FILE,
                "enrolment certificate",
                "certificate",
                |p| std::fs::read_to_string(p),
            )?;
            NodeCert::from_text(&text)
                .with_context(|| format!("enrolment certificate {}", path.display()))?
        }
        (None, Some(path)) => {
            let issuer = super::keys::load(path)?;
            issue(&issuer, node_name, me, SELF_ISSUED_VALIDITY)?
        }
        (None, None) => return Ok(None),
    };
    // Checked against its own issuer: what matters here is that it names this node.
    let issuer = cert.issuer()?;
    cert.verify(&EnrollmentKeys::new([issuer]), me, node_name, unix_ms())
        .with_context(|| {
            format!("enrolment certificate does not fit this agent ({node_name}, {me})")
        })?;
    tracing::info!(node = node_name, %issuer, "enrolled: progress reports carry a certificate");
    Ok(Some(cert))
}
