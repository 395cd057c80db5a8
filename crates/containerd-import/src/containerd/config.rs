//! Where containerd is and how images are recorded in it.

use std::path::PathBuf;
use std::time::Duration;

use super::ContainerdError;

/// The socket a stock containerd listens on.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The namespace the CRI plugin (and so the kubelet) looks images up in.
pub const DEFAULT_NAMESPACE: &str = "k8s.io";
/// The snapshotter the CRI plugin uses on most nodes.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// Marks an image as managed by the CRI plugin, which then lists it to the kubelet.
pub const LABEL_CRI_MANAGED: (&str, &str) = ("io.cri-containerd.image", "managed");
/// Keeps the kubelet's image garbage collector from removing the image.
pub const LABEL_CRI_PINNED: (&str, &str) = ("io.cri-containerd.pinned", "pinned");

/// How to reach containerd and what to create there.
///
/// Defaults match a stock Kubernetes node (`/run/containerd/containerd.sock`, namespace
/// `k8s.io`, snapshotter `overlayfs`), so an agent on a node needs no flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// containerd's gRPC unix socket.
    pub socket: PathBuf,
    /// The containerd namespace images are written into; the CRI reads `k8s.io`.
    pub namespace: String,
    /// The snapshotter layers are unpacked with; must be the one the CRI plugin uses
    /// (`overlayfs` on most nodes, `native` works everywhere), or pods unpack again.
    pub snapshotter: String,
    /// Label image records `io.cri-containerd.pinned=pinned`, so the kubelet's image
    /// garbage collector never removes them.
    pub pin: bool,
    /// Bound on connecting and on each metadata request; a containerd that does not answer
    /// within it is reported as not answering instead of hanging the agent. Unpacking one
    /// layer may take [`UNPACK_TIMEOUT_FACTOR`] times as long.
    pub timeout: Duration,
    /// How long the import's lease keeps half-written content from containerd's garbage
    /// collector if this process dies before deleting it.
    pub lease_expiry: Duration,
}

/// Unpacking a layer (decompress + write files) may take this many times
/// [`ContainerdConfig::timeout`].
pub const UNPACK_TIMEOUT_FACTOR: u32 = 20;

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            snapshotter: DEFAULT_SNAPSHOTTER.to_owned(),
            pin: false,
            timeout: Duration::from_secs(30),
            lease_expiry: Duration::from_secs(3600),
        }
    }
}

impl ContainerdConfig {
    /// Checks the values before anything is sent, so a typo is reported as a config
    /// error instead of as a puzzling gRPC failure.
    ///
    /// # Errors
    /// [`ContainerdError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), ContainerdError> {
        let invalid = |m: String| Err(ContainerdError::InvalidConfig(m));
        if self.socket.as_os_str().is_empty() {
            return invalid("socket path is empty".into());
        }
        // containerd's rule for identifiers (`[A-Za-z0-9]+([._-][A-Za-z0-9]+)*`, at most 76
        // bytes): anything else connects but fails every import.
        let ns_ok = self.namespace.len() <= 76
            && self
                .namespace
                .split(['.', '_', '-'])
                .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !ns_ok {
            return invalid(format!(
                "namespace {:?} must be letters and digits separated by single '.', '-' or '_'",
                self.namespace
            ));
        }
        if self.snapshotter.is_empty()
            || !self
                .snapshotter
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return invalid(format!(
                "snapshotter {:?} is not a plugin name (e.g. overlayfs, native)",
                self.snapshotter
            ));
        }
        if self.timeout.is_zero() {
            return invalid("timeout must be greater than zero".into());
        }
        if self.lease_expiry < Duration::from_secs(60) {
            return invalid(format!(
                "lease expiry {:?} is shorter than a minute; half-written content could be collected mid-import",
                self.lease_expiry
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_matches_a_node() {
        let c = ContainerdConfig::default();
        c.validate().unwrap();
        for ns in ["agent-3", "a.b_c-d", "X1"] {
            ContainerdConfig {
                namespace: ns.into(),
                ..c.clone()
            }
            .validate()
            .unwrap();
        }
        assert_eq!(c.socket, PathBuf::from("/run/containerd/containerd.sock"));
        assert_eq!(c.namespace, "k8s.io");
        assert_eq!(c.snapshotter, "overlayfs");
        assert!(!c.pin);
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        let refusal = |c: ContainerdConfig| c.validate().unwrap_err().to_string();
        for ns in ["k8s io", "agent--3", "agent-3-", ""] {
            let e = refusal(ContainerdConfig {
                namespace: ns.into(),
                ..Default::default()
            });
            assert!(e.contains("namespace"), "{e}");
        }
        // Each breaks one field of a valid config.
        type Edit = fn(&mut ContainerdConfig);
        let edits: [(Edit, &str); 3] = [
            (|c| c.snapshotter = String::new(), "snapshotter"),
            (|c| c.socket = PathBuf::new(), "socket"),
            (|c| c.timeout = Duration::ZERO, "timeout"),
        ];
        for (edit, word) in edits {
            let mut c = ContainerdConfig::default();
            edit(&mut c);
            let e = refusal(c);
            assert!(e.contains(word), "{e}");
        }
    }
}
