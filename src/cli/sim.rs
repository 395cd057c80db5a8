//! `blobswarm sim`: a discrete-event simulation of a whole swarm driving the same core
//! scheduler the agents run, to see how it scales before a cluster does.

use std::time::{Duration, Instant};

use blobswarm_core::sim::{self, SimConfig};

use super::units::{self, parse_size};

/// Arguments of `blobswarm sim`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Peers besides the seeder.
    #[arg(long, default_value_t = 200)]
    nodes: usize,
    /// Image size, e.g. 3GiB.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    image_size: u64,
    /// Chunk size.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Uplink of every node, e.g. 1Gbit or 200Mbit.
    #[arg(long, default_value = "1Gbit", value_parser = parse_rate)]
    up: f64,
    /// Downlink of every node.
    #[arg(long, default_value = "1Gbit", value_parser = parse_rate)]
    down: f64,
    /// One-way latency in milliseconds.
    #[arg(long, default_value_t = 1.0)]
    latency_ms: f64,
    /// Fraction of peers killed during the transfer (0 to <1).
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Remove the seeder at this fraction of the lower bound (e.g. 0.3); peers then fall
    /// back to the herd guard for chunks nobody holds.
    #[arg(long)]
    seeder_leaves_at: Option<f64>,
    /// Neighbours per node.
    #[arg(long, default_value_t = 16)]
    degree: usize,
    /// Random seed; the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scheduler: chunk requests in flight per node (default: the agent's).
    #[arg(long)]
    max_requests: Option<usize>,
    /// Scheduler: chunk requests in flight to one peer.
    #[arg(long)]
    max_requests_per_peer: Option<usize>,
    /// Scheduler: chunks served at once per node.
    #[arg(long)]
    max_uploads: Option<usize>,
    /// Scheduler: chunks served at once to one peer.
    #[arg(long)]
    max_uploads_per_peer: Option<usize>,
    /// Override: have-update batch window in milliseconds (0: announce each chunk at once).
    #[arg(long)]
    have_batch_ms: Option<u64>,
    /// Seeder: plain super-seeding only (a second copy of a chunk once every chunk
    /// went out once), instead of declining a chunk while the peer that got it is up.
    #[arg(long)]
    no_upload_once: bool,
    /// Model the seeder's read of the image from a registry behind a link of this rate
    /// (capped by the seeder's downlink), as today's seeder does it: the release is
    /// published only after the whole read. Times then count from the read's start.
    #[arg(long, value_parser = parse_rate)]
    registry_rate: Option<f64>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Parses link rates like `1Gbit`, `200Mbit`, `500kbit` into bytes per second.
fn parse_rate(s: &str) -> Result<f64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let (n, unit): (f64, _) = super::units::number_and_unit(&lower, true)
        .ok_or_else(|| format!("{s:?} is not a rate (examples: 1Gbit, 200Mbit)"))?;
    let bits = match unit {
        "gbit" | "g" => 1e9,
        "mbit" | "m" => 1e6,
        "kbit" | "k" => 1e3,
        "bit" | "" => 1.0,
        other => {
            return Err(format!(
                "unknown rate unit {other:?} in {s:?} (use Gbit, Mbit or kbit)"
            ));
        }
    };
    if n <= 0.0 {
        return Err(format!("rate {s:?} must be positive"));
    }
    Ok(n * bits / 8.0)
}

/// The agent's scheduler config with the overrides given on the command line.
fn node_config(args: &Args) -> blobswarm_core::node::Config {
    let mut c = blobswarm_core::node::Config::default();
    if let Some(n) = args.max_requests {
        c.max_requests_total = n;
    }
    if let Some(n) = args.max_requests_per_peer {
        c.max_requests_per_peer = n;
    }
    if let Some(n) = args.max_uploads {
        c.max_uploads = n;
    }
    if let Some(n) = args.max_uploads_per_peer {
        c.max_uploads_per_peer = n;
    }
    if let Some(ms) = args.have_batch_ms {
        c.have_batch = Duration::from_millis(ms);
    }
    c.upload_once = !args.no_upload_once;
    c
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let cfg = SimConfig {
        nodes: args.nodes,
        image_size: args.image_size,
        chunk_size: u32::try_from(args.chunk_size)?,
        up_bytes_per_sec: args.up,
        down_bytes_per_sec: args.down,
        latency: Duration::from_secs_f64(args.latency_ms / 1000.0),
        churn: args.churn,
        seeder_leaves_at: args.seeder_leaves_at,
        degree: args.degree,
        seed: args.seed,
        node: node_config(&args),
        registry_read: args.registry_rate.map(|bytes_per_sec| sim::RegistryRead {
            bytes_per_sec,
            mode: sim::ReadMode::PublishAfterRead,
        }),
        ..SimConfig::default()
    };
    let started = Instant::now();
    let r = sim::run(cfg)?;
    let wall = started.elapsed().as_secs_f64();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "simulated {} peers + seeder, {} image, {:.0} Mbit/s up / {:.0} Mbit/s down, {} ms latency, churn {:.0}%, degree {}, seed {}",
        r.nodes,
        units::bytes(r.image_bytes),
        args.up * 8.0 / 1e6,
        args.down * 8.0 / 1e6,
        args.latency_ms,
        args.churn * 100.0,
        args.degree,
        args.seed
    );
    println!("lower bound            {:>8.2} s", r.lower_bound_secs);
    if let (Some(read), Some(ratio)) = (r.registry_read_secs, r.max_over_read_or_bound) {
        println!(
            "registry read          {read:>8.2} s (release after the whole read; times count from its start)"
        );
        println!("max / max(read, bound) {ratio:>8.2}");
    }
    println!(
        "p50 / p99 / max        {:>8.2} / {:.2} / {:.2} s",
        r.p50_secs, r.p99_secs, r.max_secs
    );
    println!("p99 / lower bound      {:>8.2}", r.p99_over_lower_bound);
    println!("seeder upload / image  {:>8.2}", r.seeder_upload_over_image);
    println!(
        "seeder sent every chunk {:>7.2} s",
        r.seeder_injected_all_secs
    );
    println!(
        "registry fetches/blob  {:>8.0}",
        r.registry_fetches_per_blob
    );
    if args.seeder_leaves_at.is_some() {
        println!(
            "seeder left; missing   {:>8} chunks, {} fetched from the registry, at most {} per chunk",
            r.chunks_missing_when_seeder_left,
            r.registry_chunk_fetches,
            r.registry_fetches_max_per_chunk
        );
    }
    println!(
        "control bytes / node   {:>8}",
        units::bytes(r.control_bytes_per_node as u64)
    );
    println!("killed / incomplete    {:>8} / {}", r.killed, r.incomplete);
    println!("events                 {:>8} in {wall:.1} s wall", r.events);
    anyhow::ensure!(
        r.incomplete == 0,
        "{} surviving peers did not complete",
        r.incomplete
    );
    Ok(())
}
