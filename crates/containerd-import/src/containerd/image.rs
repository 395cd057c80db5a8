//! What to import: the documents in memory and every blob as a file on disk.

use std::fs;
use std::path::{Path, PathBuf};

use blobswarm_core::{Digest, Document, Release};
use serde_json::Value;

use super::error::io_err;
use super::media::{DocKind, Platform, doc_kind};
use super::plan::Plan;
use super::{ContainerdError, REF_NAME_ANNOTATION, ReleaseLine};

/// The annotation containerd's importer (and our OCI layout target) names images by.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Largest index.json, index or manifest read from a layout.
pub(crate) const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

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
        let index = read_json_file(&index_path)?;
        let entry = index
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| layout_err(&index_path, "no manifests array".into()))?
            .iter()
            .rev()
            .find(|m| {
                [REF_NAME_ANNOTATION, CONTAINERD_NAME_ANNOTATION]
                    .iter()
                    .any(|a| {
                        m.pointer(&annotation_pointer(a)).and_then(Value::as_str) == Some(ref_name)
                    })
            })
            .ok_or_else(|| layout_err(&index_path, format!("no image tagged {ref_name:?}")))?;
        let reference = entry
            .pointer(&annotation_pointer(CONTAINERD_NAME_ANNOTATION))
            .and_then(Value::as_str)
            .unwrap_or(ref_name)
            .to_owned();
        let (digest, media_type, _) = descriptor(entry).ok_or_else(|| {
            layout_err(
                &index_path,
                format!("entry {ref_name:?} is not a descriptor"),
            )
        })?;
        let root = read_document(dir, digest, media_type, "root document")?;

        let mut manifests = Vec::new();
        let mut blobs: Vec<BlobFile> = Vec::new();
        let host = Platform::host();
        let (kind, root_json) = parse_doc(&root, "root document")?;
        let children: Vec<(Value, bool)> = match kind {
            DocKind::Manifest => vec![(root_json, true)],
            DocKind::Index => {
                let mut out = Vec::new();
                let mut host_taken = false;
                for child in root_json
                    .get("manifests")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some((d, mt, _)) = descriptor(child) else {
                        continue;
                    };
                    if doc_kind(&mt) != Some(DocKind::Manifest) {
                        continue;
                    }
                    let is_host = !host_taken
                        && super::plan::descriptor_platform(child).is_none_or(|p| host.runs(&p));
                    let path = blob_file(dir, &d);
                    if !path.is_file() {
                        if is_host {
                            return Err(ContainerdError::MissingBlob { digest: d, path });
                        }
                        continue;
                    }
                    host_taken |= is_host;
                    let doc = read_document(dir, d, mt, "manifest")?;
                    let (_, json) = parse_doc(&doc, "manifest")?;
                    manifests.push(doc);
                    out.push((json, is_host));
                }
                out
            }
        };
        for (manifest, required) in children {
            let descs = std::iter::once(manifest.get("config"))
                .chain(
                    manifest
                        .get("layers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(Some),
                )
                .flatten();
            for desc in descs {
                let Some((d, mt, size)) = descriptor(desc) else {
                    continue;
                };
                let path = blob_file(dir, &d);
                if (required || path.is_file()) && !blobs.iter().any(|b| b.digest == d) {
                    blobs.push(BlobFile {
                        digest: d,
                        size,
                        media_type: mt,
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

    /// The image record names the import creates, in order: the normalised reference,
    /// `repo@<root digest>` and (when a manifest for this platform exists) the image ID
    /// `sha256:<config digest>`.
    ///
    /// # Errors
    /// As [`Self::validate`], except that blob files are not checked.
    pub fn names(&self) -> Result<Vec<String>, ContainerdError> {
        Ok(Plan::build(self, &Platform::host())?.names)
    }

    /// Everything the importer checks before it writes anything: documents parse and
    /// match their digests, the layers of this platform's manifest have media types
    /// containerd can unpack, the config's diff_ids fit the layers, and every blob file
    /// exists with its descriptor's size.
    ///
    /// # Errors
    /// The first problem found, naming the digest, media type or file.
    pub fn validate(&self) -> Result<(), ContainerdError> {
        Plan::build(self, &Platform::host())?.check_files()
    }
}

fn annotation_pointer(name: &str) -> String {
    format!(
        "/annotations/{}",
        name.replace('~', "~0").replace('/', "~1")
    )
}

fn layout_err(path: &Path, reason: String) -> ContainerdError {
    ContainerdError::Layout {
        path: path.to_owned(),
        reason,
    }
}

/// `(digest, media type, size)` of an OCI descriptor; `None` if it lacks one of them.
pub(crate) fn descriptor(v: &Value) -> Option<(Digest, String, u64)> {
    Some((
        v.get("digest")?.as_str()?.parse().ok()?,
        v.get("mediaType")?.as_str()?.to_owned(),
        v.get("size")?.as_u64()?,
    ))
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

fn read_json_file(path: &Path) -> Result<Value, ContainerdError> {
    let bytes = read_limited(path, MAX_DOCUMENT_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| layout_err(path, format!("not JSON: {e}")))
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

/// The document's kind (by its media type) and its JSON.
pub(crate) fn parse_doc(
    doc: &Document,
    what: &'static str,
) -> Result<(DocKind, Value), ContainerdError> {
    let json: Value =
        serde_json::from_slice(&doc.bytes).map_err(|e| ContainerdError::BadDocument {
            what,
            digest: doc.digest,
            reason: format!("not JSON: {e}"),
        })?;
    let media_type = if doc.media_type.is_empty() {
        json.get("mediaType").and_then(Value::as_str).unwrap_or("")
    } else {
        doc.media_type.as_str()
    };
    let kind = doc_kind(media_type).ok_or_else(|| ContainerdError::UnsupportedMediaType {
        what,
        digest: doc.digest,
        media_type: media_type.to_owned(),
    })?;
    Ok((kind, json))
}
