//! The media types blobswarm understands: one table for the seeder, the containerd
//! importer and the OCI layout target.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (schema 2).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 manifest: refused (unsigned content, no content-addressed config).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// OCI layer, uncompressed tar.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI layer, gzip-compressed tar.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI layer, zstd-compressed tar.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker layer, uncompressed tar.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker layer, gzip-compressed tar.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker layer, zstd-compressed tar.
pub const DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
/// Docker foreign layer (fetched from elsewhere, e.g. Windows base layers).
pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// OCI non-distributable layer, uncompressed tar.
pub const OCI_NONDISTRIBUTABLE_TAR: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
/// OCI non-distributable layer, gzip.
pub const OCI_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI non-distributable layer, zstd.
pub const OCI_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

/// What a document is, judged by its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// An index or manifest list: lists manifests.
    Index,
    /// An image manifest: lists a config and layers.
    Manifest,
}

/// The kind of document `media_type` names, or `None` for anything else (schema 1,
/// artifacts, configs, layers).
pub fn document_kind(media_type: &str) -> Option<DocumentKind> {
    match media_type {
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(DocumentKind::Index),
        OCI_MANIFEST | DOCKER_MANIFEST => Some(DocumentKind::Manifest),
        _ => None,
    }
}

/// Whether `media_type` is an image manifest (OCI or Docker).
pub fn is_manifest(media_type: &str) -> bool {
    document_kind(media_type) == Some(DocumentKind::Manifest)
}

/// Whether `media_type` is an image index or manifest list (OCI or Docker).
pub fn is_index(media_type: &str) -> bool {
    document_kind(media_type) == Some(DocumentKind::Index)
}

/// Whether `media_type` is an image config (OCI or Docker).
pub fn is_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

/// What a layer media type is, so importers can decide what they can unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// A tar, uncompressed or gzip/zstd-compressed, OCI or Docker spelling.
    Tar,
    /// Foreign or non-distributable: its bytes are not meant to be copied around.
    NonDistributable,
    /// Encrypted (`…+encrypted`).
    Encrypted,
    /// Anything else.
    Unknown,
}

/// Classifies a layer media type.
pub fn layer_kind(media_type: &str) -> LayerKind {
    match media_type {
        OCI_LAYER_TAR | OCI_LAYER_GZIP | OCI_LAYER_ZSTD | DOCKER_LAYER_TAR | DOCKER_LAYER_GZIP
        | DOCKER_LAYER_ZSTD => LayerKind::Tar,
        DOCKER_FOREIGN_LAYER_GZIP
        | OCI_NONDISTRIBUTABLE_TAR
        | OCI_NONDISTRIBUTABLE_GZIP
        | OCI_NONDISTRIBUTABLE_ZSTD => LayerKind::NonDistributable,
        m if m.ends_with("+encrypted") => LayerKind::Encrypted,
        _ => LayerKind::Unknown,
    }
}

/// The media type without parameters: `application/x; charset=utf-8` → `application/x`
/// (registries announce Content-Type with parameters).
pub fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

/// The `Accept` header value a registry is asked for manifests with.
pub fn accept_header() -> String {
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST,
    ]
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_kinds() {
        for (mt, kind) in [
            (OCI_INDEX, Some(DocumentKind::Index)),
            (DOCKER_MANIFEST_LIST, Some(DocumentKind::Index)),
            (OCI_MANIFEST, Some(DocumentKind::Manifest)),
            (DOCKER_MANIFEST, Some(DocumentKind::Manifest)),
            (DOCKER_SCHEMA1, None),
            (OCI_CONFIG, None),
            (OCI_LAYER_GZIP, None),
            (
                "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
                None,
            ),
            ("", None),
        ] {
            assert_eq!(document_kind(mt), kind, "{mt}");
            assert_eq!(
                is_manifest(mt),
                kind == Some(DocumentKind::Manifest),
                "{mt}"
            );
            assert_eq!(is_index(mt), kind == Some(DocumentKind::Index), "{mt}");
        }
        assert!(is_config(OCI_CONFIG) && is_config(DOCKER_CONFIG));
        assert!(!is_config(OCI_MANIFEST));
        assert_eq!(essence(" application/x ; charset=utf-8"), "application/x");
        assert_eq!(
            accept_header(),
            format!("{OCI_INDEX}, {OCI_MANIFEST}, {DOCKER_MANIFEST_LIST}, {DOCKER_MANIFEST}")
        );
    }

    #[test]
    fn layer_kinds() {
        for ok in [
            OCI_LAYER_TAR,
            OCI_LAYER_GZIP,
            OCI_LAYER_ZSTD,
            DOCKER_LAYER_TAR,
            DOCKER_LAYER_GZIP,
            DOCKER_LAYER_ZSTD,
        ] {
            assert_eq!(layer_kind(ok), LayerKind::Tar, "{ok}");
        }
        for foreign in [
            DOCKER_FOREIGN_LAYER_GZIP,
            OCI_NONDISTRIBUTABLE_TAR,
            OCI_NONDISTRIBUTABLE_GZIP,
            OCI_NONDISTRIBUTABLE_ZSTD,
        ] {
            assert_eq!(
                layer_kind(foreign),
                LayerKind::NonDistributable,
                "{foreign}"
            );
        }
        assert_eq!(
            layer_kind("application/vnd.oci.image.layer.v1.tar+gzip+encrypted"),
            LayerKind::Encrypted
        );
        for unknown in ["application/x-whatever", OCI_CONFIG, ""] {
            assert_eq!(layer_kind(unknown), LayerKind::Unknown, "{unknown}");
        }
    }
}
