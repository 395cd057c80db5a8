//! containerd connection flags shared by `agent` and `import`.

use std::path::PathBuf;
use std::time::Duration;

use blobswarm_containerd_import::containerd::{
    ContainerdConfig, DEFAULT_NAMESPACE, DEFAULT_SNAPSHOTTER, DEFAULT_SOCKET,
};

/// How to reach containerd and how to record images there.
#[derive(Debug, clap::Args)]
pub(crate) struct ContainerdArgs {
    /// containerd's gRPC socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    containerd_socket: PathBuf,
    /// containerd namespace (the CRI reads `k8s.io`).
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    containerd_namespace: String,
    /// Snapshotter to unpack layers with (the CRI plugin's: `overlayfs`, or `native`).
    #[arg(long, default_value = DEFAULT_SNAPSHOTTER)]
    snapshotter: String,
    /// Label images pinned so the kubelet's image garbage collector keeps them.
    #[arg(long)]
    pin: bool,
    /// Seconds to wait for containerd before reporting it as not answering.
    #[arg(long, default_value_t = 30)]
    containerd_timeout_secs: u64,
}

impl ContainerdArgs {
    /// The importer config these flags describe.
    pub(crate) fn config(&self) -> ContainerdConfig {
        ContainerdConfig {
            socket: self.containerd_socket.clone(),
            namespace: self.containerd_namespace.clone(),
            snapshotter: self.snapshotter.clone(),
            pin: self.pin,
            timeout: Duration::from_secs(self.containerd_timeout_secs),
            ..ContainerdConfig::default()
        }
    }
}
