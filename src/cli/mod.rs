//! Subcommands, one module each, plus the small helpers they share.

mod agent;
mod api_client;
mod containerd_args;
mod demo;
mod demo_image;
mod enroll;
mod fallback;
mod import;
mod ingest_progress;
mod keygen;
mod keys;
mod ops_args;
mod seed;
mod sim;
mod status;
mod swarm_key;
mod units;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Move container images to every node of a cluster peer-to-peer: the registry serves
/// each blob once, peers verify every chunk with SHA-256 and serve it onward at once.
#[derive(Debug, Parser)]
#[command(name = "blobswarm", version, about)]
pub(crate) struct Cli {
    /// Log lines on stderr: `text` for people, `json` for log collectors (one object a
    /// line: timestamp, level, target, message and the event's fields, plus the span).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "BLOBSWARM_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines (coloured at a terminal).
    Text,
    /// One JSON object a line, with stable field names.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run an in-process swarm (seeder + N peers over loopback) moving a generated image.
    Demo(demo::Args),
    /// Resolve an image, read each blob once, sign a release and serve it to the swarm.
    Seed(seed::Args),
    /// Join the swarm, fetch and verify releases from trusted seeders, write them out.
    Agent(agent::Args),
    /// Simulate a swarm of thousands of nodes with the real scheduler on a virtual clock.
    Sim(sim::Args),
    /// Import an image from an OCI layout into containerd (what the agent does after a download).
    Import(import::Args),
    /// Create an identity key file and print its peer id (the id agents trust).
    Keygen(keygen::Args),
    /// Show per-node progress of the seeder's releases (reads the seeder API).
    Status(status::Args),
    /// Issue a node's enrolment certificate, so its progress reports count for the CI gate.
    Enroll(enroll::Args),
}

impl Command {
    pub(crate) fn default_log_level(&self) -> &'static str {
        match self {
            Self::Demo(_) | Self::Sim(_) | Self::Status(_) => "warn",
            _ => "info",
        }
    }

    pub(crate) async fn run(self) -> anyhow::Result<()> {
        match self {
            Self::Demo(a) => demo::run(a).await,
            Self::Seed(a) => seed::run(a).await,
            Self::Agent(a) => agent::run(a).await,
            Self::Keygen(a) => keygen::run(a),
            Self::Import(a) => import::run(a).await,
            Self::Sim(a) => sim::run(a),
            Self::Status(a) => status::run(a).await,
            Self::Enroll(a) => enroll::run(a),
        }
    }
}

/// Logs go to stderr (stdout carries the few machine-readable lines tests and scripts read).
///
/// In `json` format every line is one object: `timestamp` (RFC 3339, UTC), `level`
/// (`TRACE`…`ERROR`), `target` (the module), `message` (when the event has one), each
/// field of the event under its own name, and `span` (the innermost span's name and
/// fields) when there is one.
pub(crate) fn init_tracing(default_level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_env("BLOBSWARM_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},libp2p_gossipsub=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            // Colour codes only for a person at a terminal; files, pipes and `kubectl logs`
            // get plain text that grep can match.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Reports the error that ends the process: `error: …` on stderr, or in `json` format
/// one more log line (level ERROR), so a log collector sees it like any other.
pub(crate) fn report_exit_error(format: LogFormat, e: &anyhow::Error) {
    match format {
        LogFormat::Text => eprintln!("error: {e:#}"),
        LogFormat::Json => tracing::error!(target: "blobswarm", "{e:#}"),
    }
}

/// Waits for Ctrl-C or SIGTERM (what Kubernetes sends on pod shutdown).
pub(crate) async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
