//! Progress reports received: a seeder's agent hands the reports it receives to a
//! [`ReportSink`] (the seeder crate's aggregator), so this crate sends reports (the
//! driver's `Reporter`) but owns no aggregation.

use std::sync::{Arc, Mutex};

use blobswarm_core::wire::ProgressReport;
use libp2p::PeerId;

/// Where a seeder's agent puts the progress reports it receives (set in
/// [`crate::AgentConfig::report_sink`]). The agent only checks size and topic at the edge
/// and hands each decoded report over with the gossip message's signed author; deciding
/// which reports count and keeping them is the sink's business (the seeder's aggregator).
pub trait ReportSink: Send + std::fmt::Debug {
    /// Takes `report`, whose gossip message `from` signed, received at `received_ms`
    /// (ms since the Unix epoch).
    fn insert(&mut self, from: PeerId, report: ProgressReport, received_ms: u64);

    /// Nodes heard from recently at `now_ms`: the `nodes_reporting` gauge on `/metrics`.
    fn reporting(&self, now_ms: u64) -> usize;

    /// Reports not counted since start: the `reports_ignored` gauge on `/metrics`.
    fn ignored_total(&self) -> u64;

    /// Nodes the sink forgot since start to stay within its bound:
    /// `blobswarm_report_nodes_dropped_total` on `/metrics`.
    fn nodes_dropped_total(&self) -> u64;
}

/// A report sink shared between the agent's event loop and its owner.
pub type SharedReportSink = Arc<Mutex<dyn ReportSink>>;
