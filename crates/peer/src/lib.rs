//! The blobswarm agent: a libp2p swarm (TCP + Noise + Yamux, gossipsub, request-response,
//! identify) driven around the sans-IO core node.
//!
//! Network events become node inputs; node actions become network calls. Hashing and
//! disk I/O run on blocking threads so the event loop never stalls on them.

mod admission;
mod agent;
mod behaviour;
mod checkpoint;
mod dns_bootstrap;
mod fallback;
mod metrics;
mod ops_http;
mod overlay;
mod protocol;
mod reports;
mod runtime;
mod saved_releases;
mod status;
mod store_cap;

pub use admission::{IgnoredReport, MAX_IGNORED, printable};
pub use agent::{AgentConfig, AgentHandle, LocalBlob, ServeFault, spawn};
pub use dns_bootstrap::{Bootstrap, DnsBootstrap, Family as DnsFamily};
pub use fallback::RegistryFallback;
pub use metrics::Metrics;
pub use ops_http::serve_ops;
pub use reports::{
    Aggregator, DROP_AFTER_MS, LOST_AFTER_MS, MAX_TRACKED_NODES, NodeRelease, NodeView,
    SharedAggregator,
};
pub use status::{AgentStatus, BanCounts, BanKind, ReleaseStatus};
