//! Which layers containerd's differ (`Diff.Apply`) can unpack.
//!
//! The media-type table itself is [`blobswarm_core::oci::media_type`]; this module only
//! says why the importer refuses a layer, in an operator's words.

use blobswarm_core::oci::media_type::{LayerKind, layer_kind};

/// Why a layer media type cannot be unpacked, or `None` if containerd's differ handles it
/// (tar, gzip and zstd, OCI and Docker spellings).
pub(crate) fn layer_refusal(media_type: &str) -> Option<&'static str> {
    match layer_kind(media_type) {
        LayerKind::Tar => None,
        LayerKind::NonDistributable => Some(
            "foreign/non-distributable layers are not carried by blobswarm; mirror the layer into the registry",
        ),
        LayerKind::Encrypted => Some("encrypted layers are not supported"),
        LayerKind::Unknown => Some("unknown layer media type; containerd cannot unpack it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types() {
        for ok in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            assert_eq!(layer_refusal(ok), None, "{ok}");
        }
        for bad in [
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/x-whatever",
        ] {
            assert!(layer_refusal(bad).is_some(), "{bad}");
        }
    }
}
