//! Joins jobs with the nodes' reports into bounded views (issue #18, finding 5). A view
//! costs one pass over the nodes for the per-state counts of every job, and then only the
//! page of nodes it lists: what one response holds is bounded by the page, not by how
//! many nodes reported.

use std::collections::{BTreeMap, HashMap};

use super::Job;
use crate::rollout::{self, NodeState, ReleaseView};
use crate::{IgnoredReport, NodeView};

/// Most nodes one release view lists (`GET /v1/releases/{id}?limit=` is capped here, and
/// it is the default): the whole of a cluster of up to a thousand nodes, so the gate and
/// `blobswarm status` list every node there, in about 250 KB of JSON (some 250 bytes a
/// node). Bigger clusters page with `?offset=`; the counts always cover every node.
pub const MAX_PAGE_NODES: usize = 1_000;
/// Nodes each release lists in the swarm list (`GET /v1/releases`) by default: the list
/// holds up to [`super::MAX_JOBS`] releases, so 20 nodes each keep it near 300 KB even
/// with every job kept; the dashboard shows these and the per-state counts.
pub const LIST_NODES: usize = 20;
/// Most nodes each release lists in the swarm list when `?limit=` asks for more:
/// [`super::MAX_JOBS`] × 100 nodes stays under about 2 MB of JSON.
pub const MAX_LIST_NODES: usize = 100;

/// Which nodes a view lists: `limit` nodes in name order from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Nodes skipped (in name order).
    pub offset: usize,
    /// Nodes listed at most.
    pub limit: usize,
}

impl Page {
    /// A page of one release view: [`MAX_PAGE_NODES`] unless fewer are asked for.
    pub fn release(offset: Option<usize>, limit: Option<usize>) -> Self {
        Self {
            offset: offset.unwrap_or(0),
            limit: limit.map_or(MAX_PAGE_NODES, |l| l.min(MAX_PAGE_NODES)),
        }
    }

    /// A page of each release in the swarm list: [`LIST_NODES`] by default, at most
    /// [`MAX_LIST_NODES`].
    pub fn list(offset: Option<usize>, limit: Option<usize>) -> Self {
        Self {
            offset: offset.unwrap_or(0),
            limit: limit.map_or(LIST_NODES, |l| l.min(MAX_LIST_NODES)),
        }
    }
}

/// Per release id, how many nodes (not lost) are in each state; plus the lost and the
/// total: one pass over the nodes serves every job's counts.
#[derive(Debug, Default)]
pub(super) struct Tallies<'a> {
    by_release: HashMap<&'a str, BTreeMap<&'a str, usize>>,
    live: usize,
    lost: usize,
}

impl<'a> Tallies<'a> {
    pub(super) fn new(nodes: &'a [NodeView]) -> Self {
        let mut t = Self::default();
        for n in nodes {
            if n.lost {
                t.lost += 1;
                continue;
            }
            t.live += 1;
            // A node is counted once per release, in the state of its first entry, as
            // `node_state` shows it, even if its report names a release twice.
            for (i, r) in n.releases.iter().enumerate() {
                if n.releases[..i].iter().any(|e| e.release == r.release) {
                    continue;
                }
                *t.by_release
                    .entry(r.release.as_str())
                    .or_default()
                    .entry(r.state.as_str())
                    .or_insert(0) += 1;
            }
        }
        t
    }

    /// Nodes per state for release `id` (None: still seeding), as [`node_state`] names
    /// them: lost nodes are "lost" whatever they said, the rest "missing" when they do
    /// not hold it.
    pub(super) fn counts(&self, id: Option<&str>) -> BTreeMap<String, usize> {
        let mut out: BTreeMap<String, usize> = id
            .and_then(|id| self.by_release.get(id))
            .into_iter()
            .flatten()
            .map(|(s, n)| ((*s).to_owned(), *n))
            .collect();
        let holding: usize = out.values().sum();
        let missing = self.live.saturating_sub(holding);
        for (state, n) in [("missing", missing), ("lost", self.lost)] {
            if n > 0 {
                out.insert(state.to_owned(), n);
            }
        }
        out
    }
}

/// Joins one job with the page of nodes and the per-state counts over all of them (and
/// the reports that did not count).
pub(super) fn view(
    job: &Job,
    nodes: &[NodeView],
    tallies: &Tallies<'_>,
    page: Page,
    ignored: Vec<IgnoredReport>,
) -> ReleaseView {
    let state = match (&job.id, &job.error) {
        (_, Some(_)) => "failed",
        (Some(_), None) => "published",
        (None, None) => "seeding",
    };
    ReleaseView {
        id: job.id.clone().unwrap_or_default(),
        image: job.image.clone(),
        reference: job.reference.clone(),
        state: state.into(),
        error: job.error.clone(),
        total_bytes: job.total_bytes,
        published_age_ms: job
            .published_at
            .map_or(0, |t| t.elapsed().as_millis() as u64),
        nodes: nodes
            .iter()
            .skip(page.offset)
            .take(page.limit)
            .map(|n| node_state(job, n))
            .collect(),
        counts: tallies.counts(job.id.as_deref()),
        nodes_offset: page.offset.min(nodes.len()),
        ignored,
    }
}

/// One node's state for `job`'s release ("missing" when it has not accepted it).
fn node_state(job: &Job, n: &NodeView) -> NodeState {
    let r = job
        .id
        .as_ref()
        .and_then(|id| n.releases.iter().find(|r| &r.release == id));
    // A silent node counts as not done whatever it said last: the gate must not pass
    // over a node that may have died mid-import.
    let (state, reason) = if n.lost {
        ("lost".to_owned(), Some(rollout::lost_reason(n.age_ms)))
    } else {
        (
            r.map_or_else(|| "missing".into(), |r| r.state.clone()),
            r.and_then(|r| r.reason.clone()),
        )
    };
    NodeState {
        node: n.node.clone(),
        peer: n.peer.clone(),
        state,
        reason,
        have_bytes: r.map_or(0, |r| r.have_bytes),
        rate: r.map_or(0, |r| r.rate),
        peers: n.peers,
        age_ms: n.age_ms,
    }
}
