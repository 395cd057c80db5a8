//! Helpers the containerd tests (`containerd.rs`, `targets.rs`) share.

use blobswarm_containerd_import::containerd::ContainerdConfig;
use blobswarm_testkit::Containerd;

/// The importer's configuration for the private containerd `ctd`.
pub(crate) fn config(ctd: &Containerd) -> ContainerdConfig {
    ContainerdConfig {
        socket: ctd.socket(),
        snapshotter: ctd.snapshotter().to_owned(),
        ..ContainerdConfig::default()
    }
}

/// Runs `command` in a throw-away container `id` from `image` (`ctr run --rm`) on the
/// fixture's snapshotter; returns its output.
pub(crate) fn ctr_run(ctd: &Containerd, image: &str, id: &str, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--snapshotter", ctd.snapshotter(), image, id];
    args.extend_from_slice(command);
    ctd.ctr_ok(&args)
}
