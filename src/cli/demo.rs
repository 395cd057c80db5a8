//! `blobswarm demo`: a seeder and N peers in one process over loopback, moving a generated
//! image into N OCI layouts, with progress bars and a closing summary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use blobswarm_core::ReleaseId;
use blobswarm_peer::{AgentConfig, AgentHandle, AgentStatus, TargetConfig};
use blobswarm_seeder::IngestedBlob;
use blobswarm_seeder::source::{ResolvedImage, Source, SourceOptions};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use libp2p::identity::Keypair;
use sha2::{Digest as _, Sha256};

use super::demo_image::{DEMO_TAG, generate};
use super::units::{self, parse_size};

/// Arguments of `blobswarm demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Number of peers besides the seeder.
    #[arg(long, default_value_t = 8)]
    peers: usize,
    /// Image size (layers in total), e.g. 256MiB or 1GiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    size: u64,
    /// Chunk size.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Work directory (default: a temporary directory, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Turn the seeder's super-seeding off (to compare seeder upload and time with it on).
    #[arg(long)]
    no_super_seed: bool,
    /// Seed of the generated image contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>8} {bar:40} {bytes:>10}/{total_bytes:<10} {msg}")
        .expect("static template")
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=64).contains(&args.peers),
        "--peers must be between 1 and 64"
    );
    let tmp = tempfile::Builder::new()
        .prefix("blobswarm-demo")
        .tempdir()?;
    let root = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let chunk_size = u32::try_from(args.chunk_size).context("chunk size too large")?;
    let multi = MultiProgress::new();
    println!(
        "blobswarm demo: seeder + {} peers on 127.0.0.1, {} image, {} chunks, work dir {}",
        args.peers,
        units::bytes(args.size),
        units::bytes(args.chunk_size),
        root.display()
    );

    // 1. Generate the image.
    let source_dir = root.join("source");
    generate_image(&multi, &args, &source_dir).await?;

    // 2. Seeder: ingest once, sign, publish.
    let seeder_key = Keypair::generate_ed25519();
    let seeder_id = seeder_key.public().to_peer_id();
    let mut cfg = AgentConfig::new(seeder_key.clone(), root.join("seeder/store"));
    cfg.trusted = vec![seeder_id];
    cfg.node = cfg.node.with_super_seed(!args.no_super_seed);
    let (seeder, _seeder_task) = blobswarm_peer::spawn(cfg).await?;
    let seeder_addr = seeder.listen_addrs().await?[0].clone();
    let Ingested {
        image,
        blobs,
        total,
        source_read,
        secs: ingest_secs,
    } = ingest(&multi, &seeder, &source_dir, chunk_size).await?;
    let signed = blobswarm_seeder::sign_release(&image, &blobs, &seeder_key, 1, None)?;
    let local = blobswarm_seeder::service::local_blobs(blobs);

    // 3. Peers.
    let mut peers: Vec<(AgentHandle, ProgressBar, PathBuf)> = Vec::new();
    for i in 0..args.peers {
        let dir = root.join(format!("peer-{i}"));
        let mut cfg = AgentConfig::new(Keypair::generate_ed25519(), dir.join("store"));
        cfg.bootstrap = vec![seeder_addr.clone()];
        cfg.trusted = vec![seeder_id];
        cfg.target = Some(TargetConfig::OciLayout(dir.join("oci")));
        cfg.node = cfg.node.with_rng_seed(i as u64 + 1);
        let (handle, _task) = blobswarm_peer::spawn(cfg).await?;
        let bar = multi.add(
            ProgressBar::new(total)
                .with_style(bar_style())
                .with_prefix(format!("peer-{i}")),
        );
        peers.push((handle, bar, dir.join("oci")));
    }
    // Let the peers find each other before the release goes out, as a DaemonSet would be.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let release_id = seeder.publish(local, signed).await?;

    // 4. Watch until every peer has imported.
    let done = watch(&peers, release_id, started).await?;
    let wall = started.elapsed().as_secs_f64();

    // 5. Independent check: re-hash every blob each peer wrote and compare with its digest.
    let verify_started = Instant::now();
    verify_layouts(&peers, &image).await?;
    let verify_secs = verify_started.elapsed().as_secs_f64();

    multi.clear().ok();
    let seeder_status: AgentStatus = seeder.status().borrow().clone();
    print_summary(&Summary {
        total,
        source_read,
        ingest_secs,
        wall,
        verify_secs,
        seeder: &seeder_status,
        peers: &peers
            .iter()
            .map(|(h, _, _)| h.status().borrow().clone())
            .collect::<Vec<_>>(),
        done: &done,
        release: release_id,
        blobs: image.blobs.len(),
    });
    Ok(())
}

/// Generates the demo image into `source_dir`, with a progress bar.
async fn generate_image(
    multi: &MultiProgress,
    args: &Args,
    source_dir: &Path,
) -> anyhow::Result<()> {
    let gen_bar = multi.add(
        ProgressBar::new(args.size)
            .with_style(bar_style())
            .with_prefix("generate"),
    );
    let started = Instant::now();
    let (dir, size, seed, bar) = (
        source_dir.to_path_buf(),
        args.size,
        args.seed,
        gen_bar.clone(),
    );
    tokio::task::spawn_blocking(move || generate(&dir, size, seed, move |n| bar.inc(n))).await??;
    gen_bar.finish_with_message(format!("{:.1}s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// The generated image as the seeder ingested it into its store.
struct Ingested {
    image: ResolvedImage,
    blobs: Vec<IngestedBlob>,
    /// Bytes of all blobs.
    total: u64,
    /// Bytes read from the source (the image once, if all goes well).
    source_read: u64,
    secs: f64,
}

/// Reads the generated image from `source_dir` once into the seeder's store, hashing its
/// chunks, with a progress bar.
async fn ingest(
    multi: &MultiProgress,
    seeder: &AgentHandle,
    source_dir: &Path,
    chunk_size: u32,
) -> anyhow::Result<Ingested> {
    let source = Source::parse(
        &format!("oci-layout:{}:{DEMO_TAG}", source_dir.display()),
        SourceOptions::default(),
    )?;
    let image = source
        .resolve()
        .await
        .context("resolving the generated image")?;
    let total: u64 = image.blobs.iter().map(|b| b.size).sum();
    let ingest_bar = multi.add(
        ProgressBar::new(total)
            .with_style(bar_style())
            .with_prefix("ingest"),
    );
    let started = Instant::now();
    let store = Arc::clone(seeder.store());
    let blobs =
        blobswarm_seeder::ingest(&source, &image, &store, chunk_size, &|n| ingest_bar.inc(n))
            .await?;
    let secs = started.elapsed().as_secs_f64();
    ingest_bar.finish_with_message(format!("{secs:.1}s, {}", units::rate(total, secs)));
    let source_read: u64 = blobs.iter().map(|b| b.bytes_read).sum();
    Ok(Ingested {
        image,
        blobs,
        total,
        source_read,
        secs,
    })
}

/// Follows every peer's status until each has imported `release` (its bar at its bytes),
/// failing on the first import error or after 10 minutes; returns each peer's seconds
/// from `started` to its import.
async fn watch(
    peers: &[(AgentHandle, ProgressBar, PathBuf)],
    release: ReleaseId,
    started: Instant,
) -> anyhow::Result<Vec<Option<f64>>> {
    let mut done: Vec<Option<f64>> = vec![None; peers.len()];
    let deadline = started + Duration::from_secs(600);
    while done.iter().any(Option::is_none) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "demo did not finish within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (i, (handle, bar, _)) in peers.iter().enumerate() {
            let s = handle.status().borrow().clone();
            let Some(r) = s.releases.iter().find(|r| r.id == release) else {
                continue;
            };
            bar.set_position(r.have_bytes);
            if let Some(e) = &r.import_error {
                anyhow::bail!("peer-{i} failed to import: {e}");
            }
            if r.imported && done[i].is_none() {
                let secs = started.elapsed().as_secs_f64();
                done[i] = Some(secs);
                bar.finish_with_message(format!("{secs:.1}s, {} peers", s.peers));
            }
        }
    }
    Ok(done)
}

/// Re-hashes every blob of `image` in each peer's layout, all layouts at once.
async fn verify_layouts(
    peers: &[(AgentHandle, ProgressBar, PathBuf)],
    image: &ResolvedImage,
) -> anyhow::Result<()> {
    let mut checks = Vec::new();
    for (_, _, layout) in peers {
        let layout = layout.clone();
        let digests: Vec<_> = image.blobs.iter().map(|b| b.digest).collect();
        checks.push(tokio::task::spawn_blocking(move || {
            verify_layout(&layout, &digests)
        }));
    }
    for c in checks {
        c.await??;
    }
    Ok(())
}

/// Re-reads each blob from a peer's OCI layout and checks its SHA-256 against its name.
fn verify_layout(
    layout: &std::path::Path,
    digests: &[blobswarm_core::Digest],
) -> anyhow::Result<()> {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    for d in digests {
        let path = layout.join("blobs/sha256").join(d.hex());
        let mut f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let actual = blobswarm_core::Digest::from_bytes(h.finalize().into());
        anyhow::ensure!(
            actual == *d,
            "{} holds {actual}, expected {d}",
            path.display()
        );
    }
    Ok(())
}

struct Summary<'a> {
    total: u64,
    source_read: u64,
    ingest_secs: f64,
    wall: f64,
    verify_secs: f64,
    seeder: &'a AgentStatus,
    peers: &'a [AgentStatus],
    done: &'a [Option<f64>],
    release: ReleaseId,
    blobs: usize,
}

fn print_summary(s: &Summary<'_>) {
    let n = s.peers.len() as u64;
    let peer_up: u64 = s.peers.iter().map(|p| p.uploaded_bytes).sum();
    let delivered = s.total * n;
    println!();
    println!("release {}", s.release);
    println!("image size                 {}", units::bytes(s.total));
    println!(
        "read from source           {} ({:.2}x image) in {:.1}s at {}",
        units::bytes(s.source_read),
        s.source_read as f64 / s.total as f64,
        s.ingest_secs,
        units::rate(s.source_read, s.ingest_secs)
    );
    println!(
        "seeder uploaded            {} ({:.2}x image)",
        units::bytes(s.seeder.uploaded_bytes),
        s.seeder.uploaded_bytes as f64 / s.total as f64
    );
    println!(
        "peers uploaded             {} ({:.0}% of all delivered bytes)",
        units::bytes(peer_up),
        100.0 * peer_up as f64 / delivered.max(1) as f64
    );
    println!(
        "delivered                  {} to {n} peers in {:.1}s, {} aggregate",
        units::bytes(delivered),
        s.wall,
        units::rate(delivered, s.wall)
    );
    println!();
    println!(
        "{:<8} {:>8} {:>11} {:>12} {:>12} {:>9} {:>8}",
        "peer", "done(s)", "throughput", "from seeder", "from peers", "uploaded", "rejected"
    );
    for (i, (p, t)) in s.peers.iter().zip(s.done).enumerate() {
        let t = t.unwrap_or(f64::NAN);
        println!(
            "{:<8} {:>8.1} {:>11} {:>12} {:>12} {:>9} {:>8}",
            format!("peer-{i}"),
            t,
            units::rate(s.total, t),
            units::bytes(p.stats.bytes_from_seeders),
            units::bytes(p.stats.bytes_from_peers),
            units::bytes(p.uploaded_bytes),
            p.stats.chunks_rejected
        );
    }
    let times: Vec<f64> = s.done.iter().flatten().copied().collect();
    let max = times.iter().copied().fold(0.0, f64::max);
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!();
    println!("time to all peers          {max:.1}s (first {min:.1}s)");
    println!(
        "verification               every chunk SHA-256-checked on receipt; {} blobs x {} layouts re-hashed, all digests match ({:.1}s)",
        s.blobs,
        s.peers.len(),
        s.verify_secs
    );
}
