//! What the seeder API returns about a release (JSON shared by the server, `blobswarm
//! status` and the wait gate) and the wait gate's verdict, a pure function of it so the
//! local and the over-the-API wait decide alike. One definition for both ends: the
//! server serialises these types, the CLI client deserialises the same ones.

use std::collections::BTreeMap;

use blobswarm_core::escape::{escape_controls, printable};
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
    /// One page of the nodes the seeder holds, by name (`nodes_offset` onwards, at most
    /// the page size asked for), with their state for this release ("missing" when a
    /// node has not accepted it). [`ReleaseView::counts`] covers every node.
    pub nodes: Vec<NodeState>,
    /// Nodes per state for this release over every node the seeder holds, whatever the
    /// page: what the gate and the headline counts read. Empty in a view from a seeder
    /// that predates paging; [`ReleaseView::tally`] then counts `nodes`.
    #[serde(default)]
    pub counts: BTreeMap<String, usize>,
    /// Index of the first node of the page in `nodes`.
    #[serde(default)]
    pub nodes_offset: usize,
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
    /// Nodes forgotten since the seeder started because it held
    /// [`crate::MAX_TRACKED_NODES`] others heard from more recently.
    #[serde(default)]
    pub nodes_dropped: u64,
    /// Peers banned now: the seeder's agent's bans, newest first, then the bans enrolled
    /// nodes reported, one per banned peer (at most [`blobswarm_peer::MAX_SHOWN_BANS`]
    /// each).
    #[serde(default)]
    pub banned: Vec<BanView>,
}

/// One ban in force, as the API, `blobswarm status` and the dashboard show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanView {
    /// Who banned: `seeder` (the seeder's own agent), or the enrolled node that reported
    /// the ban (`node-3 (+4 more)` when several did).
    pub by: String,
    /// The banned peer's id.
    pub peer: String,
    /// bad_chunk, bad_frame or request_rate.
    pub kind: String,
    /// What it did.
    pub reason: String,
    /// Seconds until the ban ends.
    pub remaining_secs: u64,
}

impl From<&blobswarm_peer::Ban> for BanView {
    fn from(b: &blobswarm_peer::Ban) -> Self {
        Self {
            by: "seeder".into(),
            peer: b.peer.clone(),
            kind: b.kind.label().into(),
            reason: b.reason.clone(),
            remaining_secs: b.remaining.as_secs(),
        }
    }
}

/// Bans listed for `status`: one escaped line each.
pub fn banned_report(banned: &[BanView]) -> String {
    if banned.is_empty() {
        return String::new();
    }
    let mut out = format!("banned peers ({}):\n", banned.len());
    for b in banned {
        out.push_str(&format!(
            "  {} banned {} ({}): {}, {} s left\n",
            printable(&b.by),
            printable(&b.peer),
            printable(&b.kind),
            printable(&b.reason),
            b.remaining_secs
        ));
    }
    out
}

/// The headline numbers of a release: every node the seeder holds, not just a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Nodes held (reporting or lost).
    pub total: usize,
    /// Nodes that imported the release.
    pub done: usize,
    /// Nodes whose import failed.
    pub failed: usize,
}

impl Tally {
    /// Every node is done or failed: nothing more will change by itself.
    pub fn settled(&self) -> bool {
        self.done + self.failed == self.total
    }
}

impl ReleaseView {
    /// Nodes per state over every node: [`ReleaseView::counts`], or counted from `nodes`
    /// when the view has no counts (an older seeder, which sent every node).
    pub fn state_counts(&self) -> BTreeMap<String, usize> {
        if !self.counts.is_empty() {
            return self.counts.clone();
        }
        let mut counts = BTreeMap::new();
        for n in &self.nodes {
            *counts.entry(n.state.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// The headline numbers over every node.
    pub fn tally(&self) -> Tally {
        let counts = self.state_counts();
        let get = |s: &str| counts.get(s).copied().unwrap_or(0);
        Tally {
            total: counts.values().sum(),
            done: get("done"),
            failed: get("failed"),
        }
    }

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
        let node = printable(&n.node);
        let detail = printable(&detail);
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
    let t = view.tally();
    let (done, settled, failed) = (t.done, t.settled(), t.failed > 0);
    match expect {
        Expect::Count(n) if done >= n => Verdict::Done,
        Expect::Count(n) if settled && failed && t.total >= n => Verdict::Failed,
        Expect::AllNodes
            if t.total > 0 && done == t.total && view.published_age_ms >= ALL_NODES_SETTLE_MS =>
        {
            Verdict::Done
        }
        Expect::AllNodes if t.total > 0 && settled && failed => Verdict::Failed,
        _ => Verdict::Pending,
    }
}

/// The per-node list of what is missing and why, for a failed or timed-out wait.
pub fn missing_report(view: &ReleaseView, expect: Expect) -> String {
    let mut out = String::new();
    let reference = escape_controls(&view.reference);
    if let Some(e) = &view.error {
        out.push_str(&format!(
            "seeding {} failed: {}\n",
            escape_controls(&view.image),
            escape_controls(e)
        ));
    }
    let t = view.tally();
    let done = t.done;
    match expect {
        Expect::Count(n) => out.push_str(&format!(
            "{done} of {n} expected nodes imported {reference} ({} nodes reporting)\n",
            t.total
        )),
        Expect::AllNodes => out.push_str(&format!(
            "{done} of {} nodes imported {reference}\n",
            t.total
        )),
    }
    let mut listed = 0;
    for n in view.nodes.iter().filter(|n| n.state != "done") {
        out.push_str(&format!("  {}\n", view.why(n)));
        listed += 1;
    }
    let unlisted = (t.total - done).saturating_sub(listed);
    if unlisted > 0 {
        out.push_str(&format!(
            "  … and {unlisted} more nodes not done (not in this page of {} nodes)\n",
            view.nodes.len()
        ));
    }
    if let Expect::Count(n) = expect
        && t.total < n
    {
        out.push_str(&format!(
            "  {} expected nodes have never reported\n",
            n - t.total
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

/// Ignored reports printed at most, so a flood of minted keys cannot bury the verdict;
/// also what each release of the swarm list repeats.
pub const SHOW_IGNORED: usize = 20;

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
            counts: BTreeMap::new(),
            nodes_offset: 0,
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
    fn bans_print_one_escaped_line_each() {
        let bans = [BanView {
            by: "seeder".into(),
            peer: "12D3KooWx".into(),
            kind: "bad_frame".into(),
            reason: "frame refused:\n\u{1b}[2J oversized".into(),
            remaining_secs: 599,
        }];
        let text = banned_report(&bans);
        assert_eq!(
            text,
            "banned peers (1):\n  seeder banned 12D3KooWx (bad_frame): \
             frame refused:\\n\\u{1b}[2J oversized, 599 s left\n"
        );
        assert!(banned_report(&[]).is_empty());
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
