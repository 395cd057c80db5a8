//! The blobswarm agent: a libp2p swarm (TCP + Noise + Yamux, gossipsub, request-response,
//! identify) driven around the sans-IO core node.
//!
//! Two layers: `driver` holds the agent's behaviour, transport-neutral and tested on a
//! virtual clock; `agent` is the libp2p adapter that turns swarm events into driver
//! events and driver outputs into swarm calls. Hashing and disk I/O run on blocking
//! threads so the event loop never stalls on them.

mod agent;
mod behaviour;
mod bufpool;
mod checkpoint;
mod dns_bootstrap;
mod driver;
mod error;
mod fallback;
mod ip_limit;
mod metrics;
mod ops_http;
mod protocol;
mod reports;
mod runtime;
mod saved_releases;
mod status;
mod store_cap;

pub use agent::{AgentConfig, AgentHandle, spawn, spawn_with_hooks};
pub use behaviour::SwarmError;
/// Where an agent imports completed releases ([`AgentConfig::target`]); re-exported so
/// callers configure an agent without naming the import crate.
pub use blobswarm_containerd_import::TargetConfig;
pub use dns_bootstrap::{Bootstrap, BootstrapError, DnsBootstrap, Family as DnsFamily, NameError};
pub use driver::{DriverError, Hooks, LocalBlob, NoHooks, Topic};
pub use error::{AgentError, ImportFailed, NotReady};
pub use fallback::{FallbackError, RegistryFallback};
pub use metrics::Metrics;
pub use ops_http::{OpsError, serve_ops};
pub use reports::{ReportSink, SharedReportSink};
pub use status::{AgentStatus, Ban, BanCounts, BanKind, MAX_SHOWN_BANS, ReleaseStatus};
