//! `blobswarm status`: per-node state of the seeder's releases, read from its API.

use super::api_client::{ApiArgs, Client};
use super::units;
use blobswarm_seeder::rollout::ReleaseView;

/// Arguments of `blobswarm status`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    api: ApiArgs,
    /// Only this release (id `sha256:…` or the image as seeded); default: the newest.
    #[arg(long)]
    release: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// With the table format: show this many releases (newest first).
    #[arg(long, default_value_t = 1)]
    last: usize,
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// The API's JSON, for scripts.
    Json,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let client = Client::new(&args.api)?;
    if let Some(r) = &args.release {
        let view = client.release(r).await?;
        match args.output {
            Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
            Format::Table => print!("{}", table(&view)),
        }
        return Ok(());
    }
    let swarm = client.swarm().await?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&swarm)?),
        Format::Table => {
            let rate = swarm.throughput.last().map_or(0, |s| s.1);
            println!(
                "swarm: {} nodes reporting{}, {}/s, {} releases",
                swarm.nodes,
                if swarm.lost > 0 {
                    format!(" ({} lost)", swarm.lost)
                } else {
                    String::new()
                },
                units::bytes(rate),
                swarm.releases.len()
            );
            for r in swarm.releases.iter().take(args.last) {
                println!();
                print!("{}", table(r));
            }
            if !swarm.ignored.is_empty() {
                println!();
                print!(
                    "{}",
                    blobswarm_seeder::rollout::ignored_report(&swarm.ignored)
                );
                println!(
                    "({} reports ignored since the seeder started)",
                    swarm.ignored_total
                );
            }
        }
    }
    Ok(())
}

/// One release as a table: a header line, then one row per node.
pub(crate) fn table(r: &ReleaseView) -> String {
    let done = r.nodes.iter().filter(|n| n.state == "done").count();
    let mut out = format!(
        "release {} {}\n  {} on the seeder, {} of {} nodes done, {}\n",
        if r.id.is_empty() { "(seeding)" } else { &r.id },
        r.reference,
        r.state,
        done,
        r.nodes.len(),
        units::bytes(r.total_bytes)
    );
    if let Some(e) = &r.error {
        out.push_str(&format!("  error: {e}\n"));
    }
    let width = r
        .nodes
        .iter()
        .map(|n| n.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "  {:<width$}  {:<12} {:>7}  {:>12}  {:>5}  {}\n",
        "NODE", "STATE", "DONE", "RATE", "PEERS", "DETAIL"
    ));
    for n in &r.nodes {
        out.push_str(&format!(
            "  {:<width$}  {:<12} {:>6.1}%  {:>10}/s  {:>5}  {}\n",
            n.node,
            n.state,
            r.percent(n),
            units::bytes(n.rate),
            n.peers,
            n.reason.as_deref().unwrap_or("")
        ));
    }
    out
}
