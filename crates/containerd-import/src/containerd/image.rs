//! What to import: the documents in memory and every blob as a file on disk.

use std::fs;
use std::path::{Path, PathBuf};

use blobswarm_core::oci::{
    self, Body, CONTAINERD_NAME_ANNOTATION, MAX_DOCUMENT_BYTES, ParseError, Platform,
    REF_NAME_ANNOTATION, media_type,
};
use blobswarm_core::{Digest, Document, Release};

use super::error::io_err;
use super::{ContainerdError, ReleaseLine};

/// A config or layer blob and the file its bytes are streamed from.
///
/// Blobs are never held in memory whole: layers can be gigabytes, so the importer
/// streams each file into containerd once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    /// The blob's digest (containerd re-hashes the bytes and refuses a mismatch).
    pub digest: Digest,
    /// Size in bytes, as the manifest says.
    pub size: u64,
    /// Media type, as the manifest says.
    pub media_type: String,
    /// Where the complete blob is on disk.
    pub path: PathBuf,
}

/// One image to write into containerd: a reference, the root document, child manifests
/// and blob files.
///
/// Built from an OCI layout ([`Self::from_oci_layout`]) or from a swarm release and the
/// peer store ([`Self::from_release`]), so both paths share one importer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageToImport {
    /// The image reference as given (`repo:tag`); recorded in the normalised form the CRI
    /// looks up (`busybox:1` → `docker.io/library/busybox:1`), together with
    /// `repo@<root digest>` and the image ID `sha256:<config digest>`.
    pub reference: String,
    /// What the reference resolves to: an image index or an image manifest.
    pub root: Document,
    /// Child manifests when `root` is an index (those not given are not imported).
    pub manifests: Vec<Document>,
    /// Configs and layers.
    pub blobs: Vec<BlobFile>,
    /// The release line (seeder and reference) and sequence this image was released as;
    /// recorded as labels so a pinned import of a newer release unpins this one. `None`
    /// for images not from a release (no labels, never unpinned).
    pub release_line: Option<ReleaseLine>,
}

impl ImageToImport {
    /// The image a swarm release describes, with each blob read from
    /// `blob_path(digest)` (the peer store's file for a complete, verified blob).
    pub fn from_release(release: &Release, blob_path: impl Fn(&Digest) -> PathBuf) -> Self {
        Self {
            reference: release.reference.clone(),
            root: release.root.clone(),
            manifests: release.manifests.clone(),
            blobs: release
                .blobs
                .iter()
                .map(|b| BlobFile {
                    digest: b.digest,
                    size: b.size,
                    media_type: b.media_type.clone(),
                    path: blob_path(&b.digest),
                })
                .collect(),
            release_line: Some(ReleaseLine::of_release(release)),
        }
    }

    /// The image tagged `ref_name` in the OCI layout `dir`.
    ///
    /// `ref_name` is matched against `org.opencontainers.image.ref.name` and
    /// `io.containerd.image.name` in `index.json`. The image is recorded under the
    /// `io.containerd.image.name` annotation if present, else under `ref_name`; use
    /// [`Self::with_reference`] when the layout only holds a bare tag. For an index,
    /// child manifests (and their blobs) missing from the layout are left out, except for
    /// the manifest of this machine's platform, whose blobs must all be there.
    ///
    /// # Errors
    /// [`ContainerdError::Layout`] when `index.json` or the tag is unusable,
    /// [`ContainerdError::BadDocument`] when a document does not parse or match its digest.
    pub fn from_oci_layout(dir: &Path, ref_name: &str) -> Result<Self, ContainerdError> {
        let index_path = dir.join("index.json");
        let bytes = read_limited(&index_path, MAX_DOCUMENT_BYTES)?;
        let index = oci::parse(
            &Digest::of(&bytes),
            &bytes,
            Some(media_type::OCI_INDEX),
            oci::Limits::default(),
        )
        .map_err(|e| layout_err(&index_path, format!("not a usable image index: {e}")))?;
        let Body::Index(index) = index.body else {
            return Err(layout_err(&index_path, "not an image index".into()));
        };
        let entry = index
            .manifests
            .iter()
            .rev()
            .find(|m| {
                [REF_NAME_ANNOTATION, CONTAINERD_NAME_ANNOTATION]
                    .iter()
                    .any(|a| m.annotations.get(*a).map(String::as_str) == Some(ref_name))
            })
            .ok_or_else(|| layout_err(&index_path, format!("no image tagged {ref_name:?}")))?;
        let reference = entry
            .annotations
            .get(CONTAINERD_NAME_ANNOTATION)
            .map_or(ref_name, String::as_str)
            .to_owned();
        let root = read_document(dir, entry.digest, entry.media_type.clone(), "root document")?;

        let mut manifests = Vec::new();
        let host = Platform::host();
        let children: Vec<(oci::Manifest, bool)> = match parse_doc(&root, "root document")?.body {
            Body::Manifest(m) => vec![(m, true)],
            Body::Index(index) => {
                let mut out = Vec::new();
                let mut host_taken = false;
                for child in &index.manifests {
                    if !media_type::is_manifest(&child.media_type) {
                        continue;
                    }
                    let is_host =
                        !host_taken && child.platform.as_ref().is_none_or(|p| host.matches(p));
                    let path = blob_file(dir, &child.digest);
                    if !path.is_file() {
                        if is_host {
                            return Err(ContainerdError::MissingBlob {
                                digest: child.digest,
                                path,
                            });
                        }
                        continue;
                    }
                    host_taken |= is_host;
                    let doc =
                        read_document(dir, child.digest, child.media_type.clone(), "manifest")?;
                    let Body::Manifest(m) = parse_doc(&doc, "manifest")?.body else {
                        continue;
                    };
                    manifests.push(doc);
                    out.push((m, is_host));
                }
                out
            }
        };
        let mut blobs: Vec<BlobFile> = Vec::new();
        for (manifest, required) in children {
            for desc in std::iter::once(manifest.config).chain(manifest.layers) {
                let path = blob_file(dir, &desc.digest);
                if (required || path.is_file()) && !blobs.iter().any(|b| b.digest == desc.digest) {
                    blobs.push(BlobFile {
                        digest: desc.digest,
                        size: desc.size,
                        media_type: desc.media_type,
                        path,
                    });
                }
            }
        }
        Ok(Self {
            reference,
            root,
            manifests,
            blobs,
            release_line: None,
        })
    }

    /// The same image under another reference, e.g. when the layout tag is a bare `v1`.
    #[must_use]
    pub fn with_reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = reference.into();
        self
    }
}

fn layout_err(path: &Path, reason: String) -> ContainerdError {
    ContainerdError::Layout {
        path: path.to_owned(),
        reason,
    }
}

fn blob_file(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(d.hex())
}

pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, ContainerdError> {
    use std::io::Read;
    let f = fs::File::open(path).map_err(io_err("opening", path))?;
    let mut bytes = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("reading", path))?;
    if bytes.len() as u64 > limit {
        return Err(layout_err(path, format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

fn read_document(
    dir: &Path,
    digest: Digest,
    media_type: String,
    what: &'static str,
) -> Result<Document, ContainerdError> {
    let path = blob_file(dir, &digest);
    if !path.is_file() {
        return Err(ContainerdError::MissingBlob { digest, path });
    }
    let bytes = read_limited(&path, MAX_DOCUMENT_BYTES)?;
    if Digest::of(&bytes) != digest {
        return Err(ContainerdError::BadDocument {
            what,
            digest,
            reason: format!("{} does not hash to its name", path.display()),
        });
    }
    Ok(Document {
        digest,
        media_type,
        bytes,
    })
}

/// Parses one of the image's documents with the shared parser.
///
/// The media type the document was recorded with (in the release, or the layout's
/// descriptor) must be a manifest or index type, and name the same kind the document is.
pub(crate) fn parse_doc(
    doc: &Document,
    what: &'static str,
) -> Result<oci::Parsed, ContainerdError> {
    let recorded = (!doc.media_type.is_empty()).then_some(doc.media_type.as_str());
    let unsupported = |media_type: String| ContainerdError::UnsupportedMediaType {
        what,
        digest: doc.digest,
        media_type,
    };
    let recorded_kind = match recorded {
        Some(m) => Some(media_type::document_kind(m).ok_or_else(|| unsupported(m.to_owned()))?),
        None => None,
    };
    let parsed = oci::parse(&doc.digest, &doc.bytes, recorded, oci::Limits::default()).map_err(
        |e| match e {
            ParseError::UnsupportedMediaType { media_type, .. } => unsupported(media_type),
            ParseError::Schema1 { .. } => unsupported(media_type::DOCKER_SCHEMA1.to_owned()),
            other => ContainerdError::BadDocument {
                what,
                digest: doc.digest,
                reason: other.to_string(),
            },
        },
    )?;
    if recorded_kind.is_some_and(|k| Some(k) != media_type::document_kind(&parsed.media_type)) {
        return Err(ContainerdError::BadDocument {
            what,
            digest: doc.digest,
            reason: format!(
                "recorded as {} but the document says {}",
                doc.media_type, parsed.media_type
            ),
        });
    }
    Ok(parsed)
}
