//! The import plan: what to write in which order, with which labels, what to unpack and
//! which names to record. Built and checked before anything is sent to containerd, so a
//! refused layer or a missing file never leaves half an image behind.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use blobswarm_core::oci::{self, Body, Descriptor, Platform, media_type};
use blobswarm_core::{Digest, Document};
use serde_json::Value;

use super::ContainerdError;
use super::image::{ImageToImport, parse_doc, read_limited};
use super::media::layer_refusal;
use super::reference::normalize;

/// Largest image config read into memory.
const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// GC label a manifest carries for its config.
pub(crate) const LABEL_GC_CONFIG: &str = "containerd.io/gc.ref.content.config";
/// Label prefix a manifest carries for each layer (`…l.<i>`).
pub(crate) const LABEL_GC_LAYER: &str = "containerd.io/gc.ref.content.l.";
/// Label prefix an index carries for each manifest (`…m.<i>`).
pub(crate) const LABEL_GC_MANIFEST: &str = "containerd.io/gc.ref.content.m.";
/// Label a layer carries with its uncompressed digest (the config's diff_id).
pub(crate) const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Label prefix a config carries for its top snapshot (`…<snapshotter>`).
pub(crate) const LABEL_GC_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// Where a content item's bytes come from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// Streamed from a file (layers, and configs not parsed here).
    File(PathBuf),
    /// Already in memory (documents, and configs parsed for unpacking).
    Bytes(Vec<u8>),
}

/// One blob or document to put into containerd's content store.
#[derive(Debug, Clone)]
pub(crate) struct ContentItem {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) source: Source,
    /// Labels it must carry (GC references, uncompressed digest).
    pub(crate) labels: BTreeMap<String, String>,
}

/// A layer to unpack into a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct UnpackLayer {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) media_type: String,
    /// `sha256:…` of the uncompressed tar (from the config).
    pub(crate) diff_id: String,
    /// The snapshot name: the chain ID of this layer and all below it.
    pub(crate) chain_id: String,
}

/// The manifest for this platform, unpacked into snapshots.
#[derive(Debug, Clone)]
pub(crate) struct Unpack {
    pub(crate) config: Digest,
    pub(crate) layers: Vec<UnpackLayer>,
}

/// The descriptor image records point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
    pub(crate) size: u64,
}

/// Everything an import does, decided up front.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Image record names (reference, repo@digest, image ID).
    pub(crate) names: Vec<String>,
    /// What each record points at: the root document.
    pub(crate) target: Target,
    /// Content in write order: blobs, then manifests, then the root.
    pub(crate) content: Vec<ContentItem>,
    /// At most one: the manifest for this platform.
    pub(crate) unpack: Option<Unpack>,
}

/// The chain IDs of a stack of diff_ids: the names of the snapshots containerd (and the
/// CRI) expect. `chain[0] = diff[0]`, `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()).to_string(),
        };
        out.push(next);
    }
    out
}

fn check_digest(doc: &Document, what: &'static str) -> Result<(), ContainerdError> {
    if Digest::of(&doc.bytes) == doc.digest {
        Ok(())
    } else {
        Err(ContainerdError::BadDocument {
            what,
            digest: doc.digest,
            reason: "its bytes do not hash to its digest".into(),
        })
    }
}

/// The media type image records point at: as recorded, else as the document says.
fn effective_media_type(doc: &Document, parsed: &oci::Parsed) -> String {
    if doc.media_type.is_empty() {
        parsed.media_type.clone()
    } else {
        doc.media_type.clone()
    }
}

impl ImageToImport {
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

/// A manifest reached from the root: its document, its content, and whether it is the
/// one unpacked on this machine.
type Walked<'a> = (&'a Document, oci::Manifest, bool);

/// Labels per content digest.
type Labels = BTreeMap<Digest, BTreeMap<String, String>>;

impl Plan {
    /// Checks `image` and decides what to write, unpack and record, for a machine of
    /// platform `host`.
    pub(crate) fn build(image: &ImageToImport, host: &Platform) -> Result<Self, ContainerdError> {
        check_digest(&image.root, "root document")?;
        for m in &image.manifests {
            check_digest(m, "manifest")?;
        }
        let reference = normalize(&image.reference)?;
        if let Some((_, d)) = reference.full.split_once('@')
            && d != image.root.digest.to_string()
        {
            return Err(ContainerdError::BadReference {
                reference: image.reference.clone(),
                reason: "its digest is not the digest of the image's root document",
            });
        }
        let root = parse_doc(&image.root, "root document")?;
        let (walked, root_labels) = walk(image, &root.body, host)?;
        let mut labels = Labels::new();
        let mut config_bytes: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
        let mut unpack = None;
        for (doc, manifest, selected) in walked {
            let doc_labels = labels.entry(doc.digest).or_default();
            doc_labels.insert(LABEL_GC_CONFIG.into(), manifest.config.digest.to_string());
            for (i, l) in manifest.layers.iter().enumerate() {
                doc_labels.insert(format!("{LABEL_GC_LAYER}{i}"), l.digest.to_string());
            }
            if selected {
                let (bytes, u) = plan_unpack(image, doc, manifest, &mut labels)?;
                config_bytes.insert(u.config, bytes);
                unpack = Some(u);
            }
        }
        let target = Target {
            digest: image.root.digest,
            media_type: effective_media_type(&image.root, &root),
            size: image.root.bytes.len() as u64,
        };
        let content = content_items(image, labels, config_bytes, root_labels);
        let mut names = vec![reference.full.clone()];
        names.push(format!("{}@{}", reference.repo, image.root.digest));
        if let Some(u) = &unpack {
            names.push(u.config.to_string());
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        Ok(Self {
            names,
            target,
            content,
            unpack,
        })
    }

    /// Every file-backed blob exists and has its descriptor's size.
    pub(crate) fn check_files(&self) -> Result<(), ContainerdError> {
        for item in &self.content {
            let Source::File(path) = &item.source else {
                continue;
            };
            let meta = match fs::metadata(path) {
                Ok(m) if m.is_file() => m,
                Ok(_) => {
                    return Err(ContainerdError::MissingBlob {
                        digest: item.digest,
                        path: path.clone(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ContainerdError::MissingBlob {
                        digest: item.digest,
                        path: path.clone(),
                    });
                }
                Err(source) => {
                    return Err(ContainerdError::Io {
                        op: "inspecting",
                        path: path.clone(),
                        source,
                    });
                }
            };
            if meta.len() != item.size {
                return Err(ContainerdError::BlobSize {
                    digest: item.digest,
                    path: path.clone(),
                    expected: item.size,
                    actual: meta.len(),
                });
            }
        }
        Ok(())
    }
}

/// The manifests reachable from the root (`body`), the first one matching `host` marked
/// for unpacking; and the labels the root carries for an index's manifests.
fn walk<'a>(
    image: &'a ImageToImport,
    body: &Body,
    host: &Platform,
) -> Result<(Vec<Walked<'a>>, BTreeMap<String, String>), ContainerdError> {
    let mut root_labels = BTreeMap::new();
    let mut walked: Vec<Walked<'a>> = Vec::new();
    match body {
        Body::Manifest(m) => walked.push((&image.root, m.clone(), true)),
        Body::Index(index) => {
            let mut host_taken = false;
            for (i, entry) in index.manifests.iter().enumerate() {
                root_labels.insert(format!("{LABEL_GC_MANIFEST}{i}"), entry.digest.to_string());
                let Some(doc) = image.manifests.iter().find(|m| m.digest == entry.digest) else {
                    continue;
                };
                let Body::Manifest(m) = parse_doc(doc, "manifest")?.body else {
                    continue;
                };
                if media_type::document_kind(&entry.media_type).is_none() {
                    continue;
                }
                let selected =
                    !host_taken && entry.platform.as_ref().is_none_or(|p| host.matches(p));
                host_taken |= selected;
                walked.push((doc, m, selected));
            }
        }
    }
    Ok((walked, root_labels))
}

/// The unpack of manifest `doc` (its config read and checked against the layers, each
/// layer refused if containerd cannot unpack it, each labelled with its diff_id in
/// `labels`); returns the config's bytes with it.
fn plan_unpack(
    image: &ImageToImport,
    doc: &Document,
    manifest: oci::Manifest,
    labels: &mut Labels,
) -> Result<(Vec<u8>, Unpack), ContainerdError> {
    let (config, layers) = (&manifest.config, manifest.layers);
    let (bytes, diff_ids) = read_config(image, doc.digest, config)?;
    if diff_ids.len() != layers.len() {
        return Err(ContainerdError::BadDocument {
            what: "config",
            digest: config.digest,
            reason: format!(
                "{} diff_ids for the {} layers of manifest {}",
                diff_ids.len(),
                layers.len(),
                doc.digest
            ),
        });
    }
    let chains = chain_ids(&diff_ids);
    let mut unpack_layers = Vec::new();
    for ((layer, diff_id), chain_id) in layers.into_iter().zip(diff_ids).zip(chains) {
        let Descriptor {
            digest,
            size,
            media_type,
            ..
        } = layer;
        if let Some(reason) = layer_refusal(&media_type) {
            return Err(ContainerdError::UnsupportedLayer {
                layer: digest,
                manifest: doc.digest,
                media_type,
                reason,
            });
        }
        require_blob(image, doc.digest, digest, size)?;
        labels
            .entry(digest)
            .or_default()
            .insert(LABEL_UNCOMPRESSED.into(), diff_id.clone());
        unpack_layers.push(UnpackLayer {
            digest,
            size,
            media_type,
            diff_id,
            chain_id,
        });
    }
    let unpack = Unpack {
        config: config.digest,
        layers: unpack_layers,
    };
    Ok((bytes, unpack))
}

/// Content in write order, each digest once with its labels: blobs (the parsed config
/// from memory), then manifests, then the root, which also carries `root_labels`.
fn content_items(
    image: &ImageToImport,
    mut labels: Labels,
    mut config_bytes: BTreeMap<Digest, Vec<u8>>,
    root_labels: BTreeMap<String, String>,
) -> Vec<ContentItem> {
    let mut content: Vec<ContentItem> = Vec::new();
    let mut push = |digest: Digest, size: u64, source: Source| {
        if content.iter().any(|c| c.digest == digest) {
            return;
        }
        content.push(ContentItem {
            digest,
            size,
            source,
            labels: labels.remove(&digest).unwrap_or_default(),
        });
    };
    for b in &image.blobs {
        let source = config_bytes
            .remove(&b.digest)
            .map_or_else(|| Source::File(b.path.clone()), Source::Bytes);
        push(b.digest, b.size, source);
    }
    for m in &image.manifests {
        push(
            m.digest,
            m.bytes.len() as u64,
            Source::Bytes(m.bytes.clone()),
        );
    }
    let root_item_labels = labels.remove(&image.root.digest).unwrap_or_default();
    content.retain(|c| c.digest != image.root.digest);
    content.push(ContentItem {
        digest: image.root.digest,
        size: image.root.bytes.len() as u64,
        source: Source::Bytes(image.root.bytes.clone()),
        labels: root_labels.into_iter().chain(root_item_labels).collect(),
    });
    content
}

/// The blob of `digest` listed in the image, with the descriptor's size.
fn require_blob(
    image: &ImageToImport,
    manifest: Digest,
    digest: Digest,
    size: u64,
) -> Result<&super::BlobFile, ContainerdError> {
    let blob = image
        .blobs
        .iter()
        .find(|b| b.digest == digest)
        .ok_or_else(|| ContainerdError::BadDocument {
            what: "manifest",
            digest: manifest,
            reason: format!("references {digest}, which the image does not list"),
        })?;
    if blob.size != size {
        return Err(ContainerdError::BadDocument {
            what: "manifest",
            digest: manifest,
            reason: format!(
                "says {digest} has {size} bytes, the image lists {}",
                blob.size
            ),
        });
    }
    Ok(blob)
}

/// Reads and verifies the config of the manifest to unpack; returns its bytes and diff_ids.
fn read_config(
    image: &ImageToImport,
    manifest: Digest,
    config: &Descriptor,
) -> Result<(Vec<u8>, Vec<String>), ContainerdError> {
    let Descriptor {
        digest,
        media_type,
        size,
        ..
    } = config;
    if !media_type::is_config(media_type) {
        return Err(ContainerdError::UnsupportedMediaType {
            what: "config",
            digest: *digest,
            media_type: media_type.clone(),
        });
    }
    let blob = require_blob(image, manifest, *digest, *size)?;
    match fs::metadata(&blob.path) {
        Ok(m) if m.is_file() && m.len() == *size => {}
        Ok(m) if m.is_file() => {
            return Err(ContainerdError::BlobSize {
                digest: *digest,
                path: blob.path.clone(),
                expected: *size,
                actual: m.len(),
            });
        }
        _ => {
            return Err(ContainerdError::MissingBlob {
                digest: *digest,
                path: blob.path.clone(),
            });
        }
    }
    let bytes = read_limited(&blob.path, MAX_CONFIG_BYTES)?;
    let bad = |reason: String| ContainerdError::BadDocument {
        what: "config",
        digest: *digest,
        reason,
    };
    if Digest::of(&bytes) != *digest {
        return Err(bad(format!(
            "{} does not hash to its digest",
            blob.path.display()
        )));
    }
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let diff_ids = json
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no rootfs.diff_ids".into()))?
        .iter()
        .map(|d| {
            d.as_str()
                .filter(|s| s.parse::<Digest>().is_ok())
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("diff_id {d} is not a sha256 digest")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((bytes, diff_ids))
}

#[cfg(test)]
mod tests;
