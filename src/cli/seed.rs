//! `blobswarm seed`: resolve, ingest once, sign, publish, serve; with `--serve` a
//! long-running seeder behind an HTTP API; with `--wait` the CI gate; with `--api` the
//! same as a client of a running seeder.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use blobswarm_core::escape::escape_controls;
use blobswarm_peer::AgentConfig;
use blobswarm_seeder::api::{self, AutoSeed, Token};
use blobswarm_seeder::rollout::{self, Expect, ReleaseView, Verdict};
use blobswarm_seeder::service::{self, Service, SwarmBackend};
use blobswarm_seeder::source::{CredentialHelpers, SourceOptions};
use blobswarm_seeder::{Aggregator, SharedAggregator};
use libp2p::Multiaddr;

use super::api_client::{ApiArgs, Client};
use super::ingest_progress::IngestProgress;
use super::{keys, units};

/// Arguments of `blobswarm seed`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Image to seed: a registry reference (`host:port/repo:tag`, `repo@sha256:…`) or
    /// `oci-layout:DIR[:tag]` for an image CI just built. Optional with `--serve`.
    #[arg(required_unless_present = "serve")]
    image: Option<String>,
    /// Keep running and seed what the API (`--api-listen`) or registry notifications ask for.
    #[arg(long)]
    serve: bool,
    /// Serve the HTTP API (trigger, progress, notifications, dashboard) on this address.
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    #[command(flatten)]
    api: ApiArgs,
    /// Registry `host:port` whose push notifications (`/v1/notifications`) are seeded.
    #[arg(long)]
    notify_registry: Option<String>,
    /// Repository whose pushes are seeded automatically (`team/app` or `team/*`); repeat.
    #[arg(long)]
    auto_seed_repo: Vec<String>,
    /// Wait until the expected nodes imported the image; exit non-zero otherwise.
    #[arg(long)]
    wait: bool,
    /// With --wait: the number of nodes that must import it.
    #[arg(long, requires = "wait", conflicts_with = "all_nodes")]
    expect: Option<usize>,
    /// With --wait: every node that reports must import it (the default).
    #[arg(long, requires = "wait")]
    all_nodes: bool,
    /// With --wait: give up after this long (e.g. 90s, 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = units::parse_duration)]
    timeout: Duration,
    /// A node not heard from for 10 s shows as lost (and holds the wait gate); after
    /// this much longer it is dropped from status, the API and the gate (e.g. 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = units::parse_duration)]
    drop_lost_after: Duration,
    /// Enrolment public key (the id `blobswarm keygen` printed for the enrolment key):
    /// only progress reports carrying a certificate it issued count for `--wait`, status
    /// and the dashboard; repeat for several. Without one, every report is ignored and the
    /// gate cannot pass.
    #[arg(long, env = "BLOBSWARM_ENROLL_PUBKEY", value_delimiter = ',')]
    enroll_pubkey: Vec<libp2p::PeerId>,
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
    /// Registry user name (else docker config.json: its credential helper or auths entry;
    /// else anonymous).
    #[arg(long, env = "BLOBSWARM_REGISTRY_USERNAME")]
    username: Option<String>,
    /// The registry (`host:port` as in references) `--username`/`--password` belong to;
    /// they are never sent to another. Default: the registry of IMAGE for a one-shot
    /// seed; with `--serve`, the `--notify-registry` (required when neither is given).
    #[arg(long, env = "BLOBSWARM_REGISTRY_CREDENTIALS_FOR")]
    registry_credentials_for: Option<String>,
    /// With `--serve`: a registry (`host:port` as in references) `POST /v1/releases` may
    /// seed from, besides `--notify-registry`; repeat for several. Other registries and
    /// `oci-layout:` paths are refused over the API.
    #[arg(long, env = "BLOBSWARM_ALLOW_REGISTRY", value_delimiter = ',')]
    allow_registry: Vec<String>,
    /// Registry password; read from the environment so it never shows in `ps`.
    #[arg(long, env = "BLOBSWARM_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Registry credentials file, used when no username/password is given: a docker
    /// config.json, or a Kubernetes image pull secret (the mounted `.dockerconfigjson`
    /// file, or the Secret itself as JSON or YAML).
    #[arg(long, env = "BLOBSWARM_REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<PathBuf>,
    /// Longest silence from the registry while waiting for or reading an answer before
    /// the request is retried (4 attempts, with back-off), e.g. 30s, 2m.
    #[arg(long, default_value = "60s", value_parser = units::parse_duration)]
    registry_timeout: Duration,
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
    /// Serve a second copy of a chunk once every chunk went out once, even while the
    /// peer that got the first is connected (default: decline it for 5 s while that
    /// peer is up, so peers carry every further copy and the seeder uploads ~1x).
    #[arg(long)]
    no_upload_once: bool,
    #[command(flatten)]
    metrics: super::ops_args::MetricsArgs,
    /// Pre-shared swarm key file (`blobswarm keygen --swarm-key`): only nodes with the
    /// same key can connect.
    #[arg(long)]
    swarm_key_file: Option<PathBuf>,
    /// How long peers accept this release (e.g. 24h = 86400s); 0 for no expiry.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    ttl_secs: u64,
}

impl Args {
    fn expect(&self) -> Expect {
        self.expect.map_or(Expect::AllNodes, Expect::Count)
    }
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if !args.serve && args.api.url.is_some() {
        return run_remote(args).await;
    }
    let key = keys::load_or_create(&args.key_file)?;
    let chunk_size = u32::try_from(args.chunk_size).context("chunk size too large")?;
    let mut config = AgentConfig::new(key.clone(), args.data_dir.join("store"));
    config.listen = args.listen.clone();
    config.trusted = vec![key.public().to_peer_id()];
    config.swarm_key = args
        .swarm_key_file
        .as_deref()
        .map(super::swarm_key::load)
        .transpose()?;
    config.node = config.node.with_super_seed(true);
    config.node.upload_once = !args.no_upload_once;
    config.node.max_upload_rate = args.max_upload_rate;
    config.max_peers = args.max_peers;
    config.node.validate()?;
    let reports = aggregator(&args);
    let sink: blobswarm_peer::SharedReportSink = reports.clone();
    config.report_sink = Some(sink);
    let (agent, task) = blobswarm_peer::spawn(config).await?;
    for addr in agent.listen_addrs().await? {
        println!("listening {addr}");
    }
    let metrics = args.metrics.start(&agent, false).await?;
    let ttl = (args.ttl_secs > 0).then(|| Duration::from_secs(args.ttl_secs));
    let options = SourceOptions {
        platform: args.platform.clone(),
        insecure_registries: args.insecure_registry.clone(),
        username: args.username.clone(),
        password: args.password.clone(),
        credentials_for: credentials_for(&args)?,
        auth_file: args.registry_auth_file.clone(),
        read_timeout: Some(args.registry_timeout),
        // One runner for every image seeded: a helper is asked once per registry and TTL.
        credential_helpers: CredentialHelpers::default(),
    };
    // One-shot `seed IMAGE` watched on a terminal: a bar; a service or a log: log lines.
    let bar =
        !args.serve && args.image.is_some() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let backend = SwarmBackend::new(agent.clone(), metrics, key, options, chunk_size, ttl)
        .with_progress(Box::new(
            move |reference: &str, total: u64| -> Box<dyn service::IngestProgress> {
                Box::new(IngestProgress::new(reference, total, bar))
            },
        ));
    let service = Arc::new(Service::new(backend, reports));
    if let Some(addr) = args.api_listen {
        let token = Token::new(super::api_client::token(args.api.api_token_file.as_ref())?)?;
        let auto = AutoSeed {
            registry: args.notify_registry.clone(),
            repos: args.auto_seed_repo.clone(),
            allowed_registries: args.allow_registry.clone(),
        };
        let bound = api::serve(addr, api::router(Arc::clone(&service), token, auto)).await?;
        tracing::info!(%bound, "serving the API");
        println!("api http://{bound}");
    }
    if let Some(image) = &args.image {
        let started = Instant::now();
        let id = service.seed(image).await?;
        let view = service.release(&id).context("release vanished")?;
        println!("release {id} {}", escape_controls(&view.reference));
        tracing::info!(release = %id, secs = started.elapsed().as_secs_f64(), "published; serving until stopped (Ctrl-C or SIGTERM)");
        if args.wait {
            let expect = args.expect();
            return wait(args.timeout, expect, || {
                let v = service.release(&id);
                async move { v.context("release vanished") }
            })
            .await;
        }
    }
    tokio::select! {
        () = super::shutdown_signal() => {}
        _ = task => anyhow::bail!("seeder agent stopped unexpectedly"),
    }
    let s = agent.status().borrow().clone();
    println!(
        "uploaded {} bytes in {} chunks",
        s.uploaded_bytes, s.chunks_served
    );
    Ok(())
}

/// The aggregator the seeder's agent hands the nodes' progress reports to: trusting the
/// `--enroll-pubkey` keys, dropping nodes lost for `--drop-lost-after`, sampled for the
/// dashboard's throughput chart.
fn aggregator(args: &Args) -> SharedAggregator {
    let mut agg = Aggregator::default();
    agg.set_drop_after(args.drop_lost_after);
    if args.enroll_pubkey.is_empty() {
        tracing::warn!(
            "no --enroll-pubkey: progress reports are ignored, the wait gate cannot pass"
        );
    }
    agg.set_enrollment(blobswarm_core::enroll::EnrollmentKeys::new(
        args.enroll_pubkey.iter().copied(),
    ));
    let agg = Arc::new(std::sync::Mutex::new(agg));
    blobswarm_seeder::start_sampling(&agg);
    agg
}

/// `seed IMAGE --api URL [--wait …]`: ask a running seeder, then watch its reports.
async fn run_remote(args: Args) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    let image = args.image.clone().context("IMAGE is required")?;
    let view = client.seed(&image).await?;
    println!(
        "release {} {}",
        escape_controls(&view.id),
        escape_controls(&view.reference)
    );
    if !args.wait {
        return Ok(());
    }
    let id = view.id.clone();
    let client = &client;
    wait(args.timeout, args.expect(), || client.release(&id)).await
}

/// Polls `look` until the verdict is in or `timeout` passes; prints progress on change.
async fn wait<F, Fut>(timeout: Duration, expect: Expect, mut look: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ReleaseView>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let view = look().await?;
        let tally = view.tally();
        let done = tally.done;
        let line = format!("{done} of {} nodes done", tally.total);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        match rollout::verdict(&view, expect) {
            Verdict::Done => {
                println!(
                    "imported on {done} nodes: {}",
                    escape_controls(&view.reference)
                );
                return Ok(());
            }
            Verdict::Failed => {
                anyhow::bail!("rollout failed\n{}", rollout::missing_report(&view, expect))
            }
            Verdict::Pending if Instant::now() >= deadline => anyhow::bail!(
                "timed out after {:?}\n{}",
                timeout,
                rollout::missing_report(&view, expect)
            ),
            Verdict::Pending => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The one registry `--username`/`--password` may be sent to: explicit, else the
/// registry of the image of a one-shot seed, else the notification registry. A seeder
/// serving the API with credentials and none of these refuses to start, since an API
/// client could otherwise make it send them anywhere.
fn credentials_for(args: &Args) -> anyhow::Result<Option<String>> {
    if args.username.is_none() && args.password.is_none() {
        return Ok(None);
    }
    let scope = args
        .registry_credentials_for
        .clone()
        .or_else(|| {
            args.image
                .as_deref()
                .and_then(blobswarm_seeder::source::registry_of)
        })
        .or_else(|| args.notify_registry.clone());
    anyhow::ensure!(
        scope.is_some() || !args.serve,
        "--username/--password with --serve need --registry-credentials-for HOST: \
         otherwise a seed asked over the API could send them to any registry"
    );
    Ok(scope)
}
