//! Errors of the agent's public surface, each naming what failed.

use std::path::PathBuf;

use blobswarm_containerd_import::TargetError;
use blobswarm_core::ReleaseError;
use blobswarm_core::store::StoreError;
use libp2p::{Multiaddr, TransportError};

/// Why an agent could not start, or a request to a running one failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The chunk store directory cannot be opened or created.
    #[error("chunk store {path}: {source}")]
    Store {
        /// The store directory.
        path: PathBuf,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// The OCI layout directory completed releases go to cannot be opened.
    #[error("OCI layout {path}: {source}")]
    Layout {
        /// The layout directory.
        path: PathBuf,
        /// What the layout target said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The container runtime import target is misconfigured or unreachable.
    #[error("{0}")]
    Runtime(String),
    /// The swarm (transport, behaviours) cannot be built.
    #[error(transparent)]
    Swarm(#[from] crate::behaviour::SwarmError),
    /// A listen address is refused.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The transport's error.
        #[source]
        source: TransportError<std::io::Error>,
    },
    /// The start-up scan of the store for resumable downloads did not finish.
    #[error("scanning {path} for resumable downloads: {source}")]
    Scan {
        /// The store directory.
        path: PathBuf,
        /// The scan task's failure.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The scheduler configuration is invalid.
    #[error(transparent)]
    Driver(#[from] crate::driver::DriverError),
    /// The agent's event loop has stopped.
    #[error("agent stopped")]
    Stopped,
    /// The agent stopped before it listened on any address.
    #[error("agent stopped before listening")]
    StoppedBeforeListening,
    /// The agent refused to publish a release (e.g. it does not trust its own key).
    #[error("release {release} refused: {source}")]
    Refused {
        /// The release id.
        release: String,
        /// Why.
        #[source]
        source: ReleaseError,
    },
}

/// Why `/readyz` fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// No listen address yet.
    #[error("not listening yet")]
    NotListening,
    /// A neighbour is required and none is connected.
    #[error("no peer connected yet")]
    NoPeer,
    /// The import target does not answer: its kind and what it said.
    #[error("{0}")]
    Runtime(String),
}

/// Why a completed release could not be imported; the driver keeps its text as the
/// release's import error (status, progress reports, the gate).
#[derive(Debug, thiserror::Error)]
pub enum ImportFailed {
    /// A blob could not be made durable in the chunk store (the error names the blob).
    #[error(transparent)]
    Finalize(#[from] StoreError),
    /// The blocking task that finalizes the blobs panicked or was cancelled.
    #[error("import task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The import target refused the image (the error names the step and digest).
    #[error(transparent)]
    Target(#[from] TargetError),
}
