//! The OCI image layout target: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use blobswarm_core::{Digest, Release};
use serde_json::{Value, json};

/// The annotation OCI tools look an image up by (`skopeo oci:DIR:REF`, `umoci --image DIR:REF`).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd's importer names images by.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// An existing index.json larger than this is refused rather than parsed.
const MAX_INDEX_BYTES: u64 = 4 << 20;

/// Why an import into the layout failed; names the step and the file or digest.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A blob the release lists is not available from the store.
    #[error("blob {0} is not complete in the store")]
    MissingBlob(Digest),
    /// The existing index.json cannot be used.
    #[error("{path} is not a usable OCI index: {reason}")]
    BadIndex {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ImportError + 'a {
    move |source| ImportError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// An OCI image layout directory that completed releases are written into.
#[derive(Debug)]
pub struct OciLayoutTarget {
    dir: PathBuf,
    index_lock: Mutex<()>,
}

impl OciLayoutTarget {
    /// Opens or creates the layout at `dir`.
    ///
    /// # Errors
    /// [`ImportError::Io`] when the directory or `oci-layout` file cannot be written.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ImportError> {
        let dir = dir.into();
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_err("creating", &blobs))?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(Self {
            dir,
            index_lock: Mutex::new(()),
        })
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(d.hex())
    }

    /// Writes every blob and document of `release` and tags it in `index.json`.
    ///
    /// `blob_source` gives the path of each complete, verified blob (the peer store); blobs
    /// are hard-linked when on the same filesystem, else copied. The index entry is added
    /// last, so a reader never sees a tag whose blobs are missing.
    ///
    /// # Errors
    /// [`ImportError`] naming the blob or file that failed.
    pub fn import(
        &self,
        release: &Release,
        blob_source: impl Fn(&Digest) -> PathBuf,
    ) -> Result<(), ImportError> {
        for b in &release.blobs {
            let dest = self.blob_path(&b.digest);
            if dest.is_file() {
                continue;
            }
            let src = blob_source(&b.digest);
            if !src.is_file() {
                return Err(ImportError::MissingBlob(b.digest));
            }
            if fs::hard_link(&src, &dest).is_err() {
                let tmp = dest.with_extension("tmp");
                fs::copy(&src, &tmp).map_err(io_err("copying into", &tmp))?;
                fs::rename(&tmp, &dest).map_err(io_err("renaming", &tmp))?;
            }
        }
        for doc in release
            .manifests
            .iter()
            .chain(std::iter::once(&release.root))
        {
            let dest = self.blob_path(&doc.digest);
            if !dest.is_file() {
                write_atomic(&dest, &doc.bytes)?;
            }
        }
        self.tag(release)
    }

    fn tag(&self, release: &Release) -> Result<(), ImportError> {
        let _guard = self.index_lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.dir.join("index.json");
        let mut index = if path.exists() {
            let meta = fs::metadata(&path).map_err(io_err("inspecting", &path))?;
            if meta.len() > MAX_INDEX_BYTES {
                return Err(ImportError::BadIndex {
                    path,
                    reason: format!("{} bytes exceeds {MAX_INDEX_BYTES}", meta.len()),
                });
            }
            let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
            serde_json::from_slice::<Value>(&bytes).map_err(|e| ImportError::BadIndex {
                path: path.clone(),
                reason: e.to_string(),
            })?
        } else {
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})
        };
        let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
            return Err(ImportError::BadIndex {
                path,
                reason: "no manifests array".into(),
            });
        };
        manifests.retain(|m| {
            m.pointer(&format!(
                "/annotations/{}",
                REF_NAME_ANNOTATION.replace('/', "~1")
            ))
            .and_then(Value::as_str)
                != Some(release.reference.as_str())
        });
        manifests.push(json!({
            "mediaType": release.root.media_type,
            "digest": release.root.digest.to_string(),
            "size": release.root.bytes.len(),
            "annotations": {
                REF_NAME_ANNOTATION: release.reference,
                CONTAINERD_NAME_ANNOTATION: release.reference,
            }
        }));
        let bytes = serde_json::to_vec_pretty(&index).expect("serializing a JSON value");
        write_atomic(&path, &bytes)
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ImportError> {
    use std::io::Write;
    // Unique per call, not only per process: two imports in one agent (two releases that
    // share a manifest or config) must not rename each other's temporary file away.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io_err("creating", &tmp))?;
    f.write_all(bytes).map_err(io_err("writing", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("renaming", &tmp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use blobswarm_core::{Document, ReleaseBlob};

    fn release(reference: &str, layer: &[u8]) -> Release {
        let manifest =
            format!(r#"{{"schemaVersion":2,"layer":"{}"}}"#, Digest::of(layer)).into_bytes();
        Release {
            reference: reference.into(),
            root: Document {
                digest: Digest::of(&manifest),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                bytes: manifest,
            },
            manifests: vec![],
            blobs: vec![ReleaseBlob {
                digest: Digest::of(layer),
                size: layer.len() as u64,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                chunk_size: blobswarm_core::DEFAULT_CHUNK_SIZE,
                chunk_map: Digest::of(b""),
            }],
            seeder: vec![],
            sequence: 1,
            created_unix_ms: 0,
            expires_unix_ms: 0,
        }
    }

    #[test]
    fn import_writes_blobs_and_retags() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let target = OciLayoutTarget::open(dir.path().join("oci")).unwrap();
        for (i, layer) in [b"one".as_slice(), b"two"].iter().enumerate() {
            fs::write(src.join(Digest::of(layer).hex()), layer).unwrap();
            let r = release("reg.local/app:v1", layer);
            target.import(&r, |d| src.join(d.hex())).unwrap();
            let index: Value =
                serde_json::from_slice(&fs::read(dir.path().join("oci/index.json")).unwrap())
                    .unwrap();
            let m = index["manifests"].as_array().unwrap();
            assert_eq!(m.len(), 1, "round {i}: one entry per reference");
            assert_eq!(m[0]["digest"], r.root.digest.to_string());
            assert_eq!(
                fs::read(target.blob_path(&Digest::of(layer))).unwrap(),
                *layer
            );
        }
    }

    #[test]
    fn missing_blob_is_an_error_and_leaves_no_tag() {
        let dir = tempfile::tempdir().unwrap();
        let target = OciLayoutTarget::open(dir.path()).unwrap();
        let r = release("reg.local/app:v1", b"absent");
        let err = target.import(&r, |d| dir.path().join(d.hex())).unwrap_err();
        assert!(matches!(err, ImportError::MissingBlob(_)));
        assert!(!dir.path().join("index.json").exists());
    }
}
