//! The `--metrics-listen` endpoint: `/metrics` (Prometheus text), `/healthz` (the process
//! and its event loop are alive) and `/readyz` (joined the swarm, runtime answers), which
//! the Kubernetes probes in deploy/ call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::agent::AgentHandle;
use crate::metrics::Metrics;

/// An event loop that has not published a status for this long is considered stuck.
const STALL_LIMIT: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct OpsState {
    agent: AgentHandle,
    metrics: Arc<Metrics>,
    need_peer: bool,
}

/// The ops endpoint could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct OpsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The socket error.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` and serves the endpoints until the process exits. `need_peer`: readiness
/// waits for a neighbour (agents) or only for listening (seeders, which others dial).
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve_ops(
    addr: SocketAddr,
    agent: AgentHandle,
    metrics: Arc<Metrics>,
    need_peer: bool,
) -> Result<SocketAddr, OpsError> {
    let bind = |source| OpsError { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(OpsState {
            agent,
            metrics,
            need_peer,
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics_text(State(s): State<OpsState>) -> impl IntoResponse {
    let status = s.agent.status().borrow().clone();
    s.metrics.observe(&status);
    if let Some(Ok(agg)) = s.agent.report_sink().map(|sink| sink.lock()) {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // Lost nodes (no report for 10 s) are not reporting.
        s.metrics.set_nodes_reporting(agg.reporting(now_ms));
        s.metrics.set_reports_ignored(agg.ignored_total());
        s.metrics
            .set_report_nodes_dropped(agg.nodes_dropped_total());
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn healthz(State(s): State<OpsState>) -> (StatusCode, String) {
    let updated = s.agent.status().borrow().updated;
    match updated {
        Some(t) if t.elapsed() <= STALL_LIMIT => (StatusCode::OK, "ok\n".into()),
        Some(t) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "event loop stalled for {:.0} s\n",
                t.elapsed().as_secs_f64()
            ),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "event loop not started\n".into(),
        ),
    }
}

async fn readyz(State(s): State<OpsState>) -> (StatusCode, String) {
    match s.agent.ready(s.need_peer).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}
