//! `blobswarm status`: per-node state of the seeder's releases, read from its API.

use super::api_client::{ApiArgs, Client};
use super::units;
use blobswarm_core::escape::{escape_controls, printable};
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
            // The list carries a few nodes per release; each release shown is read
            // whole (up to the API's page bound).
            for r in swarm.releases.iter().take(args.last) {
                let key = if r.id.is_empty() { &r.image } else { &r.id };
                let full = client.release(key).await.unwrap_or_else(|_| r.clone());
                println!();
                print!("{}", table(&full));
            }
            if !swarm.banned.is_empty() {
                println!();
                print!(
                    "{}",
                    blobswarm_seeder::rollout::banned_report(&swarm.banned)
                );
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

/// One release as a table: a header line, then one row per node listed. Every string
/// that came off the network (names, reasons, reference, error) is escaped.
pub(crate) fn table(r: &ReleaseView) -> String {
    let tally = r.tally();
    let mut out = format!(
        "release {} {}\n  {} on the seeder, {} of {} nodes done, {}\n",
        if r.id.is_empty() {
            "(seeding)".to_owned()
        } else {
            escape_controls(&r.id)
        },
        escape_controls(&r.reference),
        escape_controls(&r.state),
        tally.done,
        tally.total,
        units::bytes(r.total_bytes)
    );
    if let Some(e) = &r.error {
        out.push_str(&format!("  error: {}\n", escape_controls(e)));
    }
    let names: Vec<String> = r.nodes.iter().map(|n| printable(&n.node)).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "  {:<width$}  {:<12} {:>7}  {:>12}  {:>5}  {}\n",
        "NODE", "STATE", "DONE", "RATE", "PEERS", "DETAIL"
    ));
    for (n, name) in r.nodes.iter().zip(&names) {
        out.push_str(&format!(
            "  {:<width$}  {:<12} {:>6.1}%  {:>10}/s  {:>5}  {}\n",
            name,
            printable(&n.state),
            r.percent(n),
            units::bytes(n.rate),
            n.peers,
            printable(n.reason.as_deref().unwrap_or(""))
        ));
    }
    let unlisted = tally.total.saturating_sub(r.nodes.len());
    if unlisted > 0 {
        let counts: Vec<String> = r
            .state_counts()
            .iter()
            .map(|(state, n)| format!("{n} {}", printable(state)))
            .collect();
        out.push_str(&format!(
            "  … {unlisted} more nodes not listed (all nodes: {})\n",
            counts.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use blobswarm_seeder::rollout::NodeState;

    fn node(name: &str, state: &str, reason: Option<&str>) -> NodeState {
        NodeState {
            node: name.into(),
            peer: "12D3KooW".into(),
            state: state.into(),
            reason: reason.map(str::to_owned),
            have_bytes: 50,
            rate: 0,
            peers: 1,
            age_ms: 0,
        }
    }

    fn view(nodes: Vec<NodeState>) -> ReleaseView {
        ReleaseView {
            id: "sha256:ab".into(),
            image: "img".into(),
            reference: "reg/img:v1\u{1b}[2J".into(),
            state: "published".into(),
            error: Some("registry said\n<script>x</script>".into()),
            total_bytes: 100,
            published_age_ms: 0,
            nodes,
            counts: Default::default(),
            nodes_offset: 0,
            ignored: vec![],
        }
    }

    #[test]
    fn strings_from_the_network_are_escaped_in_the_table() {
        let t = table(&view(vec![node(
            "evil\u{1b}[31m\n<script>",
            "failed",
            Some("disk\r\nfull\u{7}"),
        )]));
        assert!(
            !t.contains('\u{1b}') && !t.contains('\r') && !t.contains('\u{7}'),
            "{t}"
        );
        assert_eq!(t.lines().count(), 5, "one line per row: {t}");
        assert!(t.contains("evil\\u{1b}[31m\\n<script>"), "{t}");
        assert!(t.contains("disk\\r\\nfull\\u{7}"), "{t}");
        assert!(t.contains("reg/img:v1\\u{1b}[2J"), "{t}");
        assert!(
            t.contains("error: registry said\\n<script>x</script>"),
            "{t}"
        );
    }

    #[test]
    fn a_page_of_nodes_says_how_many_more_there_are_and_counts_all() {
        let mut v = view(vec![node("a", "done", None), node("b", "missing", None)]);
        v.counts = [("done".to_owned(), 700), ("missing".to_owned(), 300)].into();
        let t = table(&v);
        assert!(t.contains("700 of 1000 nodes done"), "{t}");
        assert!(
            t.contains("… 998 more nodes not listed (all nodes: 700 done, 300 missing)"),
            "{t}"
        );
    }
}
