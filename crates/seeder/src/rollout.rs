//! What the seeder API returns about a release (JSON shared by the server, `blobswarm
//! status` and the wait gate) and the wait gate's verdict, a pure function of it so the
//! local and the over-the-API wait decide alike. One definition for both ends: the
//! server serialises these types, the CLI client deserialises the same ones.

use serde::{Deserialize, Serialize};

/// One release (or a seeding job that has not produced one yet) across the swarm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseView {
    /// Release id (`sha256:…`); empty while the seeder is still ingesting.
    pub id: String,
    /// What was asked to be seeded.
    pub image: String,
    /// The resolved reference agents import under.
    pub reference: String,
    /// seeding, published or failed (on the seeder).
    pub state: String,
    /// Why seeding failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes in the release.
    pub total_bytes: u64,
    /// Milliseconds since the seeder published it (0 while seeding).
    #[serde(default)]
    pub published_age_ms: u64,
    /// Every node that reports, with its state for this release ("missing" when it has
    /// not accepted the release).
    pub nodes: Vec<NodeState>,
    /// Reports that did not count (no or a bad enrolment certificate, a node name held
    /// by another key), newest first, bounded: what the gate tells CI it ignored.
    #[serde(default)]
    pub ignored: Vec<crate::IgnoredReport>,
}

/// One node's state for one release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Node name.
    pub node: String,
    /// Peer id.
    pub peer: String,
    /// waiting, downloading, verifying, importing, done, failed, missing or lost (no
    /// report for a while).
    pub state: String,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Bytes verified.
    pub have_bytes: u64,
    /// Bytes per second.
    pub rate: u64,
    /// Connected neighbours.
    pub peers: u32,
    /// Milliseconds since the node's newest report.
    pub age_ms: u64,
}

/// The swarm as `GET /v1/releases` returns it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SwarmView {
    /// Nodes reporting.
    pub nodes: usize,
    /// Nodes not heard from for a while (not yet dropped).
    #[serde(default)]
    pub lost: usize,
    /// Swarm-wide throughput samples: (unix ms, bytes per second).
    pub throughput: Vec<(u64, u64)>,
    /// Releases, newest first.
    pub releases: Vec<ReleaseView>,
    /// Reports that did not count, newest first (bounded).
    #[serde(default)]
    pub ignored: Vec<crate::IgnoredReport>,
    /// Reports ignored since the seeder started.
    #[serde(default)]
    pub ignored_total: u64,
}

impl ReleaseView {
    /// Percent of bytes a node holds.
    pub fn percent(&self, n: &NodeState) -> f64 {
        100.0 * n.have_bytes as f64 / self.total_bytes.max(1) as f64
    }

    /// `node: state (detail)` for a node that is not done, as the wait gate prints it.
    pub fn why(&self, n: &NodeState) -> String {
        let detail = match n.state.as_str() {
            "failed" | "lost" => n.reason.clone().unwrap_or_default(),
            "missing" => "has not received the release".into(),
            "downloading" | "verifying" => format!("{:.1} %", self.percent(n)),
            _ => String::new(),
        };
        let node = blobswarm_core::escape::printable(&n.node);
        let detail = blobswarm_core::escape::printable(&detail);
        if detail.is_empty() {
            format!("{node}: {}", n.state)
        } else {
            format!("{node}: {} ({detail})", n.state)
        }
    }
}

/// The detail shown for a lost node.
pub fn lost_reason(age_ms: u64) -> String {
    format!("no report for {}s", age_ms / 1000)
}

/// Which nodes the wait gate waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// At least this many nodes.
    Count(usize),
    /// Every node that reports (at least one).
    AllNodes,
}

/// The wait gate's answer for one look at a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every expected node imported the image.
    Done,
    /// Not yet; keep polling.
    Pending,
    /// Cannot succeed any more (every node settled, too few done): stop now.
    Failed,
}

/// `--all-nodes` only counts nodes that have reported; agents report every 3 s, so the
/// gate waits this long after publishing before it trusts the set of nodes it sees.
pub const ALL_NODES_SETTLE_MS: u64 = 10_000;

/// Decides the wait gate from one view of the release.
pub fn verdict(view: &ReleaseView, expect: Expect) -> Verdict {
    if view.state == "failed" {
        return Verdict::Failed;
    }
    let done = view.nodes.iter().filter(|n| n.state == "done").count();
    let settled = view
        .nodes
        .iter()
        .all(|n| n.state == "done" || n.state == "failed");
    let failed = view.nodes.iter().any(|n| n.state == "failed");
    match expect {
        Expect::Count(n) if done >= n => Verdict::Done,
        Expect::Count(n) if settled && failed && view.nodes.len() >= n => Verdict::Failed,
        Expect::AllNodes
            if !view.nodes.is_empty()
                && done == view.nodes.len()
                && view.published_age_ms >= ALL_NODES_SETTLE_MS =>
        {
            Verdict::Done
        }
        Expect::AllNodes if !view.nodes.is_empty() && settled && failed => Verdict::Failed,
        _ => Verdict::Pending,
    }
}

/// The per-node list of what is missing and why, for a failed or timed-out wait.
pub fn missing_report(view: &ReleaseView, expect: Expect) -> String {
    let mut out = String::new();
    if let Some(e) = &view.error {
        out.push_str(&format!("seeding {} failed: {e}\n", view.image));
    }
    let done = view.nodes.iter().filter(|n| n.state == "done").count();
    match expect {
        Expect::Count(n) => out.push_str(&format!(
            "{done} of {n} expected nodes imported {} ({} nodes reporting)\n",
            view.reference,
            view.nodes.len()
        )),
        Expect::AllNodes => out.push_str(&format!(
            "{done} of {} nodes imported {}\n",
            view.nodes.len(),
            view.reference
        )),
    }
    for n in view.nodes.iter().filter(|n| n.state != "done") {
        out.push_str(&format!("  {}\n", view.why(n)));
    }
    if let Expect::Count(n) = expect
        && view.nodes.len() < n
    {
        out.push_str(&format!(
            "  {} expected nodes have never reported\n",
            n - view.nodes.len()
        ));
    }
    out.push_str(&ignored_report(&view.ignored));
    out
}

/// Ignored reports listed for the gate and `status` (the first [`SHOW_IGNORED`]).
pub fn ignored_report(ignored: &[crate::IgnoredReport]) -> String {
    if ignored.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "ignored reports from {} keys (not counted):\n",
        ignored.len()
    );
    for i in ignored.iter().take(SHOW_IGNORED) {
        out.push_str(&format!(
            "  {} ({}): {}\n",
            i.node,
            i.peer,
            blobswarm_core::escape::printable(&i.reason)
        ));
    }
    if ignored.len() > SHOW_IGNORED {
        out.push_str(&format!("  … and {} more\n", ignored.len() - SHOW_IGNORED));
    }
    out
}

/// Ignored reports printed at most, so a flood of minted keys cannot bury the verdict.
const SHOW_IGNORED: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: &str) -> NodeState {
        NodeState {
            node: name.into(),
            peer: String::new(),
            state: state.into(),
            reason: (state == "failed").then(|| "disk full".into()),
            have_bytes: 50,
            rate: 0,
            peers: 1,
            age_ms: 0,
        }
    }

    fn view(states: &[&str]) -> ReleaseView {
        ReleaseView {
            id: "sha256:x".into(),
            image: "img".into(),
            reference: "img".into(),
            state: "published".into(),
            error: None,
            total_bytes: 100,
            published_age_ms: ALL_NODES_SETTLE_MS,
            nodes: states
                .iter()
                .enumerate()
                .map(|(i, s)| node(&format!("n{i}"), s))
                .collect(),
            ignored: vec![],
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            verdict(&view(&["done", "done"]), Expect::AllNodes),
            Verdict::Done
        );
        assert_eq!(verdict(&view(&[]), Expect::AllNodes), Verdict::Pending);
        let mut young = view(&["done"]);
        young.published_age_ms = 1;
        assert_eq!(
            verdict(&young, Expect::AllNodes),
            Verdict::Pending,
            "nodes may not have reported yet"
        );
        assert_eq!(
            verdict(&view(&["done", "downloading"]), Expect::AllNodes),
            Verdict::Pending
        );
        assert_eq!(
            verdict(&view(&["done", "failed"]), Expect::AllNodes),
            Verdict::Failed
        );
        assert_eq!(
            verdict(&view(&["done", "done"]), Expect::Count(3)),
            Verdict::Pending
        );
        assert_eq!(
            verdict(&view(&["done", "failed", "done"]), Expect::Count(3)),
            Verdict::Failed
        );
        assert_eq!(
            verdict(&view(&["done", "failed", "done"]), Expect::Count(2)),
            Verdict::Done
        );
        // A lost node is never done: the gate waits (and names it at the timeout).
        let mut lost = view(&["done", "lost"]);
        lost.nodes[1].reason = Some(lost_reason(42_500));
        assert_eq!(verdict(&lost, Expect::AllNodes), Verdict::Pending);
        assert_eq!(verdict(&lost, Expect::Count(2)), Verdict::Pending);
        let mut lost_and_failed = view(&["failed", "lost"]);
        lost_and_failed.nodes[1].reason = Some(lost_reason(42_500));
        assert_eq!(
            verdict(&lost_and_failed, Expect::AllNodes),
            Verdict::Pending,
            "a lost node may come back"
        );
        let text = missing_report(&lost, Expect::AllNodes);
        assert!(text.contains("n1: lost (no report for 42s)"), "{text}");
        let text = missing_report(&view(&["done", "failed", "downloading"]), Expect::Count(4));
        assert!(text.contains("n1: failed (disk full)"), "{text}");
        assert!(text.contains("n2: downloading (50.0 %)"), "{text}");
        assert!(
            text.contains("1 expected nodes have never reported"),
            "{text}"
        );
    }

    #[test]
    fn the_gate_names_the_reports_it_ignored_on_one_line_each() {
        let mut v = view(&["done"]);
        v.ignored = (0..25)
            .map(|i| crate::IgnoredReport {
                peer: format!("peer-{i}"),
                node: format!("fake-{i}"),
                reason: "no enrolment certificate\n\u{1b}[2J".into(),
                at_ms: 0,
            })
            .collect();
        // Ignored reports never count: 1 enrolled node done is not 3.
        assert_eq!(verdict(&v, Expect::Count(3)), Verdict::Pending);
        let text = missing_report(&v, Expect::Count(3));
        assert!(text.contains("ignored reports from 25 keys"), "{text}");
        assert!(
            text.contains("  fake-0 (peer-0): no enrolment certificate\\n\\u{1b}[2J\n"),
            "{text}"
        );
        assert!(text.contains("… and 5 more"), "{text}");
        assert!(!text.contains('\u{1b}'), "escapes are escaped: {text}");
    }
}
