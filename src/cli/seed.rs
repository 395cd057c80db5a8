//! `blobswarm seed IMAGE`: resolve, ingest once, sign, publish, serve.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use blobswarm_peer::AgentConfig;
use blobswarm_seeder::source::{Source, SourceOptions};
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::Multiaddr;

use super::{keys, units};

/// Arguments of `blobswarm seed`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Image to seed: a registry reference (`host:port/repo:tag`, `repo@sha256:…`) or
    /// `oci-layout:DIR[:tag]` for an image CI just built.
    image: String,
    /// Seeder identity; created if missing. Agents trust its peer id.
    #[arg(long, default_value = "blobswarm-seeder.key")]
    key_file: PathBuf,
    /// Chunk store directory.
    #[arg(long, default_value = "blobswarm-seeder")]
    data_dir: PathBuf,
    /// Address to serve the swarm on.
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/4001")]
    listen: Vec<Multiaddr>,
    /// Registry (`host:port`) to reach over plain HTTP; repeat for several.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// Seed only this platform (`os/arch[/variant]`) of a multi-platform image.
    #[arg(long)]
    platform: Option<String>,
    /// Registry user name (else docker config.json, else anonymous).
    #[arg(long, env = "BLOBSWARM_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Registry password; read from the environment so it never shows in `ps`.
    #[arg(long, env = "BLOBSWARM_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Chunk size (e.g. 4MiB); the unit of verification and of parallel download.
    #[arg(long, default_value = "4MiB", value_parser = units::parse_size)]
    chunk_size: u64,
    /// Neighbours to serve at once; agents dialling a full seeder learn other peers
    /// from it and are then disconnected, so the overlay stays bounded at any size.
    #[arg(long, default_value_t = 32)]
    max_peers: usize,
    /// Cap on bytes served to the swarm per second, e.g. 100MiB (default: no cap).
    #[arg(long, value_parser = units::parse_size)]
    max_upload_rate: Option<u64>,
    /// How long peers accept this release (e.g. 24h = 86400s); 0 for no expiry.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    ttl_secs: u64,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let key = keys::load_or_create(&args.key_file)?;
    let chunk_size = u32::try_from(args.chunk_size).context("chunk size too large")?;
    let source = Source::parse(
        &args.image,
        SourceOptions {
            platform: args.platform.clone(),
            insecure_registries: args.insecure_registry.clone(),
            username: args.username.clone(),
            password: args.password.clone(),
        },
    )
    .with_context(|| format!("parsing image reference {}", args.image))?;
    let image = source
        .resolve()
        .await
        .with_context(|| format!("resolving {}", args.image))?;
    let total: u64 = image.blobs.iter().map(|b| b.size).sum();
    tracing::info!(reference = %image.reference, root = %image.root.digest, blobs = image.blobs.len(), bytes = total, "resolved");

    let mut config = AgentConfig::new(key.clone(), args.data_dir.join("store"));
    config.listen = args.listen.clone();
    config.trusted = vec![key.public().to_peer_id()];
    config.node = config.node.with_super_seed(true);
    config.node.max_upload_rate = args.max_upload_rate;
    config.max_peers = args.max_peers;
    config.node.validate()?;
    let (agent, task) = blobswarm_peer::spawn(config).await?;
    for addr in agent.listen_addrs().await? {
        println!("listening {addr}");
    }

    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "ingest {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template"),
    );
    let started = Instant::now();
    let store = Arc::clone(agent.store());
    let blobs = blobswarm_seeder::ingest(&source, &image, &store, chunk_size, &|n| bar.inc(n))
        .await
        .with_context(|| format!("ingesting {}", image.reference))?;
    bar.finish_and_clear();
    let read: u64 = blobs.iter().map(|b| b.bytes_read).sum();
    tracing::info!(
        bytes_read = read,
        secs = started.elapsed().as_secs_f64(),
        "ingested every blob once"
    );

    let sequence = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_millis() as u64);
    let ttl = (args.ttl_secs > 0).then(|| Duration::from_secs(args.ttl_secs));
    let signed = blobswarm_seeder::sign_release(&image, &blobs, &key, sequence, ttl)?;
    let local = super::local_blobs(blobs);
    let id = agent.publish(local, signed).await?;
    println!("release {id} {}", image.reference);
    tracing::info!(release = %id, "published; serving until stopped (Ctrl-C or SIGTERM)");

    tokio::select! {
        () = super::shutdown_signal() => {}
        _ = task => anyhow::bail!("seeder agent stopped unexpectedly"),
    }
    let s = agent.status().borrow().clone();
    tracing::info!(
        uploaded = s.uploaded_bytes,
        chunks = s.chunks_served,
        "seeder stopped"
    );
    println!(
        "uploaded {} bytes in {} chunks",
        s.uploaded_bytes, s.chunks_served
    );
    Ok(())
}
