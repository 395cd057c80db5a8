//! Flags shared by `agent` and `seed` for the operator surface: the metrics/health
//! listener and the node name in progress reports.

use std::net::SocketAddr;
use std::sync::Arc;

use blobswarm_peer::{AgentHandle, Metrics};

/// `--metrics-listen`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MetricsArgs {
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` on this address, e.g.
    /// 0.0.0.0:9464.
    #[arg(long)]
    pub(crate) metrics_listen: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Starts the endpoint when asked for; the metrics are returned either way so callers
    /// can count what the status snapshots do not carry (the seeder's registry reads).
    pub(crate) async fn start(
        &self,
        agent: &AgentHandle,
        need_peer: bool,
    ) -> anyhow::Result<Arc<Metrics>> {
        let metrics = Arc::new(Metrics::new());
        if let Some(addr) = self.metrics_listen {
            let bound =
                blobswarm_peer::serve_ops(addr, agent.clone(), metrics.clone(), need_peer).await?;
            tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
            println!("metrics http://{bound}");
        }
        Ok(metrics)
    }
}

/// The name a node reports under: `--node-name`, else the hostname.
pub(crate) fn node_name(flag: Option<String>) -> String {
    flag.filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}
