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
        let mut root_labels = BTreeMap::new();
        // (manifest document, its content, whether it is the one unpacked here)
        let mut walked: Vec<(&Document, oci::Manifest, bool)> = Vec::new();
        match &root.body {
            Body::Manifest(m) => walked.push((&image.root, m.clone(), true)),
            Body::Index(index) => {
                let mut host_taken = false;
                for (i, entry) in index.manifests.iter().enumerate() {
                    root_labels.insert(format!("{LABEL_GC_MANIFEST}{i}"), entry.digest.to_string());
                    let Some(doc) = image.manifests.iter().find(|m| m.digest == entry.digest)
                    else {
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

        let mut labels: BTreeMap<Digest, BTreeMap<String, String>> = BTreeMap::new();
        let mut config_bytes: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
        let mut unpack = None;
        for (doc, manifest, selected) in walked {
            let (config, layers) = (&manifest.config, manifest.layers);
            let doc_labels = labels.entry(doc.digest).or_default();
            doc_labels.insert(LABEL_GC_CONFIG.into(), config.digest.to_string());
            for (i, l) in layers.iter().enumerate() {
                doc_labels.insert(format!("{LABEL_GC_LAYER}{i}"), l.digest.to_string());
            }
            if !selected {
                continue;
            }
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
            config_bytes.insert(config.digest, bytes);
            unpack = Some(Unpack {
                config: config.digest,
                layers: unpack_layers,
            });
        }

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
        let target = Target {
            digest: image.root.digest,
            media_type: effective_media_type(&image.root, &root),
            size: image.root.bytes.len() as u64,
        };
        let root_item_labels = labels.remove(&image.root.digest).unwrap_or_default();
        content.retain(|c| c.digest != image.root.digest);
        content.push(ContentItem {
            digest: target.digest,
            size: target.size,
            source: Source::Bytes(image.root.bytes.clone()),
            labels: root_labels.into_iter().chain(root_item_labels).collect(),
        });

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
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::containerd::BlobFile;

    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

    fn amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    fn doc(media_type: &str, v: &Value) -> Document {
        let bytes = serde_json::to_vec(v).unwrap();
        Document {
            digest: Digest::of(&bytes),
            media_type: media_type.into(),
            bytes,
        }
    }

    fn desc(d: &Document) -> Value {
        json!({"mediaType": d.media_type, "digest": d.digest.to_string(), "size": d.bytes.len()})
    }

    /// Writes `bytes` as a blob file in `dir`.
    fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> BlobFile {
        let digest = Digest::of(bytes);
        let path = dir.join(digest.hex());
        fs::write(&path, bytes).unwrap();
        BlobFile {
            digest,
            size: bytes.len() as u64,
            media_type: media_type.into(),
            path,
        }
    }

    fn blob_desc(b: &BlobFile) -> Value {
        json!({"mediaType": b.media_type, "digest": b.digest.to_string(), "size": b.size})
    }

    /// A manifest with `layers` (media types) whose config names `arch`; returns the
    /// manifest and its blobs (config first). Layer i's diff_id is its own digest here.
    fn manifest(dir: &Path, arch: &str, layers: &[&str]) -> (Document, Vec<BlobFile>) {
        let layer_blobs: Vec<BlobFile> = layers
            .iter()
            .enumerate()
            .map(|(i, mt)| blob(dir, mt, format!("layer {i} {arch}").as_bytes()))
            .collect();
        let diff_ids: Vec<String> = layer_blobs.iter().map(|b| b.digest.to_string()).collect();
        let config = blob(
            dir,
            OCI_CONFIG_TYPE,
            &serde_json::to_vec(&json!({
                "architecture": arch, "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": diff_ids}
            }))
            .unwrap(),
        );
        let m = doc(
            "application/vnd.oci.image.manifest.v1+json",
            &json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": blob_desc(&config),
                "layers": layer_blobs.iter().map(blob_desc).collect::<Vec<_>>(),
            }),
        );
        (m, std::iter::once(config).chain(layer_blobs).collect())
    }

    const OCI_CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

    fn single(dir: &Path, layers: &[&str]) -> ImageToImport {
        let (root, blobs) = manifest(dir, "amd64", layers);
        ImageToImport {
            reference: "reg.local/app:v1".into(),
            root,
            manifests: vec![],
            blobs,
            release_line: None,
        }
    }

    #[test]
    fn chain_ids_match_containerd() {
        let [a, b, c] = ["a", "b", "c"].map(|x| format!("sha256:{}", x.repeat(64)));
        // Computed independently: sha256 over "<previous chain> <diff_id>".
        assert_eq!(
            chain_ids(&[a.clone(), b, c]),
            [
                a,
                "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c".into(),
                "sha256:c1377126441fb2f5ec2c21ae2a60255331d639e830f0ee1b40a36e52d4c40588".into(),
            ]
        );
    }

    #[test]
    fn manifest_plan_writes_children_first_with_labels_and_three_names() {
        let dir = tempfile::tempdir().unwrap();
        let image = single(dir.path(), &[LAYER, LAYER]);
        let plan = Plan::build(&image, &amd64()).unwrap();
        plan.check_files().unwrap();
        let config = image.blobs[0].digest;
        assert_eq!(
            plan.names,
            [
                "reg.local/app:v1".to_owned(),
                format!("reg.local/app@{}", image.root.digest),
                config.to_string(),
            ]
        );
        let order: Vec<Digest> = plan.content.iter().map(|c| c.digest).collect();
        let mut want: Vec<Digest> = image.blobs.iter().map(|b| b.digest).collect();
        want.push(image.root.digest);
        assert_eq!(order, want, "blobs before the manifest");
        let root = plan.content.last().unwrap();
        assert_eq!(root.labels[LABEL_GC_CONFIG], config.to_string());
        assert_eq!(
            root.labels[&format!("{LABEL_GC_LAYER}1")],
            image.blobs[2].digest.to_string()
        );
        assert_eq!(
            plan.content[1].labels[LABEL_UNCOMPRESSED],
            image.blobs[1].digest.to_string()
        );
        // The config is sent from memory (it was read once, for its diff_ids).
        assert!(matches!(plan.content[0].source, Source::Bytes(_)));
        assert!(matches!(plan.content[1].source, Source::File(_)));
        let unpack = plan.unpack.unwrap();
        assert_eq!(unpack.config, config);
        assert_eq!(unpack.layers.len(), 2);
        assert_eq!(unpack.layers[0].chain_id, unpack.layers[0].diff_id);
        assert_eq!(plan.target.digest, image.root.digest);
    }

    #[test]
    fn foreign_and_unknown_layers_are_refused_naming_digest_and_type() {
        let dir = tempfile::tempdir().unwrap();
        for mt in [
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/x-unknown",
        ] {
            let image = single(dir.path(), &[LAYER, mt]);
            let err = Plan::build(&image, &amd64()).unwrap_err();
            match &err {
                ContainerdError::UnsupportedLayer {
                    layer, media_type, ..
                } => {
                    assert_eq!(*layer, image.blobs[2].digest);
                    assert_eq!(media_type, mt);
                }
                other => panic!("{mt}: {other:?}"),
            }
            assert!(err.to_string().contains(&image.blobs[2].digest.to_string()));
        }
    }

    #[test]
    fn index_unpacks_the_host_platform_only_and_references_every_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let (arm, arm_blobs) = manifest(dir.path(), "arm64", &[LAYER]);
        let (amd, amd_blobs) = manifest(dir.path(), "amd64", &[LAYER, LAYER]);
        // An attestation-like entry whose layer type nobody could unpack.
        let (att, att_blobs) = manifest(dir.path(), "unknown", &["application/vnd.in-toto+json"]);
        let entry = |d: &Document, os: &str, arch: &str| {
            let mut e = desc(d);
            e["platform"] = json!({"os": os, "architecture": arch});
            e
        };
        let root = doc(
            "application/vnd.oci.image.index.v1+json",
            &json!({"schemaVersion": 2, "manifests": [
                entry(&arm, "linux", "arm64"),
                entry(&amd, "linux", "amd64"),
                entry(&att, "unknown", "unknown"),
            ]}),
        );
        let image = ImageToImport {
            reference: "reg.local/app:v1".into(),
            root,
            manifests: vec![arm.clone(), amd.clone(), att.clone()],
            blobs: arm_blobs
                .into_iter()
                .chain(amd_blobs.clone())
                .chain(att_blobs)
                .collect(),
            release_line: None,
        };
        let plan = Plan::build(&image, &amd64()).unwrap();
        assert_eq!(plan.unpack.as_ref().unwrap().config, amd_blobs[0].digest);
        assert_eq!(plan.names[2], amd_blobs[0].digest.to_string());
        let root_item = plan.content.last().unwrap();
        assert_eq!(root_item.digest, image.root.digest);
        for (i, m) in [&arm, &amd, &att].iter().enumerate() {
            assert_eq!(
                root_item.labels[&format!("{LABEL_GC_MANIFEST}{i}")],
                m.digest.to_string()
            );
            let pos = plan.content.iter().position(|c| c.digest == m.digest);
            assert!(pos.is_some(), "manifest {i} is written");
        }
        // Manifests after all blobs, the index last.
        let first_manifest = plan
            .content
            .iter()
            .position(|c| c.digest == arm.digest)
            .unwrap();
        assert_eq!(first_manifest, image.blobs.len());
        // No platform manifest here: nothing to unpack, no image ID.
        let riscv = Platform {
            architecture: "riscv64".into(),
            ..amd64()
        };
        let plan = Plan::build(&image, &riscv).unwrap();
        assert!(plan.unpack.is_none());
        assert_eq!(plan.names.len(), 2);
    }

    #[test]
    fn inconsistent_images_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        // Wrong file size on disk.
        let image = single(dir.path(), &[LAYER]);
        fs::write(&image.blobs[1].path, b"longer than before").unwrap();
        let err = Plan::build(&image, &amd64())
            .unwrap()
            .check_files()
            .unwrap_err();
        assert!(matches!(err, ContainerdError::BlobSize { .. }), "{err:?}");
        // Missing file.
        let mut image = single(dir.path(), &[LAYER]);
        image.blobs[1].path = dir.path().join("absent");
        let err = Plan::build(&image, &amd64())
            .unwrap()
            .check_files()
            .unwrap_err();
        assert!(
            matches!(err, ContainerdError::MissingBlob { .. }),
            "{err:?}"
        );
        // A manifest whose bytes do not match its digest.
        let mut image = single(dir.path(), &[LAYER]);
        image.root.bytes.push(b' ');
        let err = Plan::build(&image, &amd64()).unwrap_err();
        assert!(
            matches!(err, ContainerdError::BadDocument { .. }),
            "{err:?}"
        );
        // A reference pinned to another digest.
        let mut image = single(dir.path(), &[LAYER]);
        image.reference = format!("reg.local/app@{}", Digest::of(b"other"));
        let err = Plan::build(&image, &amd64()).unwrap_err();
        assert!(
            matches!(err, ContainerdError::BadReference { .. }),
            "{err:?}"
        );
        // A blob the manifest needs that the image does not list.
        let mut image = single(dir.path(), &[LAYER]);
        image.blobs.pop();
        let err = Plan::build(&image, &amd64()).unwrap_err();
        assert!(
            matches!(err, ContainerdError::BadDocument { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn diff_ids_must_fit_the_layers() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = single(dir.path(), &[LAYER, LAYER]);
        let config = blob(
            dir.path(),
            OCI_CONFIG_TYPE,
            br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#,
        );
        let mut m: Value = serde_json::from_slice(&image.root.bytes).unwrap();
        m["config"] = blob_desc(&config);
        image.root = doc("application/vnd.oci.image.manifest.v1+json", &m);
        image.blobs[0] = config;
        let err = Plan::build(&image, &amd64()).unwrap_err();
        assert!(
            matches!(err, ContainerdError::BadDocument { what: "config", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn layout_constructor_finds_the_tag_and_walks_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("oci");
        let blobs_dir = layout.join("blobs/sha256");
        fs::create_dir_all(&blobs_dir).unwrap();
        let image = single(&blobs_dir, &[LAYER, LAYER]);
        fs::write(blobs_dir.join(image.root.digest.hex()), &image.root.bytes).unwrap();
        let mut entry = desc(&image.root);
        entry["annotations"] = json!({crate::REF_NAME_ANNOTATION: "v1"});
        fs::write(
            layout.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]})).unwrap(),
        )
        .unwrap();
        let read = ImageToImport::from_oci_layout(&layout, "v1").unwrap();
        assert_eq!(read.reference, "v1");
        assert_eq!(read.root, image.root);
        assert_eq!(read.blobs, image.blobs);
        let read = read.with_reference("reg.local/app:v1");
        read.validate().unwrap();
        assert_eq!(
            read.names().unwrap(),
            Plan::build(&image, &Platform::host()).unwrap().names
        );
        let err = ImageToImport::from_oci_layout(&layout, "v2").unwrap_err();
        assert!(matches!(err, ContainerdError::Layout { .. }), "{err:?}");
        assert!(err.to_string().contains("v2"));
    }
}
