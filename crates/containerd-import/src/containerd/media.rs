//! The media types containerd can store and unpack, and the host platform.
//!
//! Only what changes what the importer does is named here: which documents it parses
//! and which layers containerd's differ (`Diff.Apply`) can unpack.

/// OCI image index.
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list.
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image manifest.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker v2 schema 2 manifest.
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image config.
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub(crate) const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What a document is, judged by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocKind {
    /// An index or manifest list: lists manifests.
    Index,
    /// An image manifest: lists a config and layers.
    Manifest,
}

pub(crate) fn doc_kind(media_type: &str) -> Option<DocKind> {
    match media_type {
        OCI_INDEX | DOCKER_LIST => Some(DocKind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Some(DocKind::Manifest),
        _ => None,
    }
}

pub(crate) fn is_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

/// Why a layer media type cannot be unpacked, or `None` if containerd's differ handles it
/// (tar, gzip and zstd, OCI and Docker spellings).
pub(crate) fn layer_refusal(media_type: &str) -> Option<&'static str> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => None,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Some(
            "foreign/non-distributable layers are not carried by blobswarm; mirror the layer into the registry",
        ),
        m if m.ends_with("+encrypted") => Some("encrypted layers are not supported"),
        _ => Some("unknown layer media type; containerd cannot unpack it"),
    }
}

/// An OCI platform (`os/architecture[/variant]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
}

impl Platform {
    /// The platform of this machine, in OCI's spelling (Go's GOOS/GOARCH).
    pub(crate) fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "x86" => "386",
            "aarch64" => "arm64",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Self {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: (architecture == "arm64").then(|| "v8".to_owned()),
        }
    }

    /// Whether an image for `other` runs here. A missing variant matches, and arm64
    /// images are all v8.
    pub(crate) fn runs(&self, other: &Self) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && match (&self.variant, &other.variant) {
                (_, None) => true,
                (Some(mine), Some(theirs)) => mine == theirs,
                (None, Some(_)) => self.architecture == "amd64",
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn platform_matching() {
        let amd = p("linux", "amd64", None);
        assert!(amd.runs(&p("linux", "amd64", None)));
        assert!(!amd.runs(&p("linux", "arm64", None)));
        assert!(!amd.runs(&p("windows", "amd64", None)));
        assert!(!amd.runs(&p("unknown", "unknown", None)));
        let arm = p("linux", "arm64", Some("v8"));
        assert!(arm.runs(&p("linux", "arm64", None)));
        assert!(arm.runs(&p("linux", "arm64", Some("v8"))));
        assert!(!arm.runs(&p("linux", "arm", Some("v7"))));
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert_eq!(Platform::host(), amd);
        }
    }

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
