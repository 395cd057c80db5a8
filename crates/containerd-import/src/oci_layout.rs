//! The OCI image layout target: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use blobswarm_core::oci::REF_NAME_ANNOTATION;
use blobswarm_core::oci::{CONTAINERD_NAME_ANNOTATION, MAX_DOCUMENT_BYTES, media_type};
use blobswarm_core::{Digest, Document, Release};
use serde_json::{Value, json};

use crate::Progress;
use crate::containerd::{ImageToImport, ImportReport};

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
///
/// Cheap to clone: clones share the lock that serialises `index.json` updates.
#[derive(Debug, Clone)]
pub struct OciLayoutTarget {
    dir: PathBuf,
    index_lock: Arc<Mutex<()>>,
    progress: Option<Progress>,
}

/// What tagging an image in `index.json` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagOutcome {
    Created,
    Updated,
    Unchanged,
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
            index_lock: Arc::new(Mutex::new(())),
            progress: None,
        })
    }

    /// Reports content bytes as they are put in place, for progress bars.
    #[must_use]
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
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
        self.import_image(&ImageToImport::from_release(release, blob_source))
            .map(drop)
    }

    /// Writes every blob and document of `image` and tags it in `index.json` under
    /// `image.reference`; what the layout already holds is left alone, so a second import
    /// changes nothing ([`ImportReport::changed_nothing`]). Blobs are hard-linked from
    /// their files when on the same filesystem, else copied. Blocking file I/O.
    ///
    /// # Errors
    /// [`ImportError`] naming the blob or file that failed.
    pub fn import_image(&self, image: &ImageToImport) -> Result<ImportReport, ImportError> {
        let start = Instant::now();
        let mut report = ImportReport {
            names: vec![image.reference.clone()],
            ..ImportReport::default()
        };
        for b in &image.blobs {
            let dest = self.blob_path(&b.digest);
            if dest.is_file() {
                self.present(&mut report, b.size);
                continue;
            }
            if !b.path.is_file() {
                return Err(ImportError::MissingBlob(b.digest));
            }
            if fs::hard_link(&b.path, &dest).is_err() {
                let tmp = dest.with_extension("tmp");
                fs::copy(&b.path, &tmp).map_err(io_err("copying into", &tmp))?;
                fs::rename(&tmp, &dest).map_err(io_err("renaming", &tmp))?;
            }
            self.written(&mut report, b.size);
        }
        for doc in image.manifests.iter().chain(std::iter::once(&image.root)) {
            let dest = self.blob_path(&doc.digest);
            let size = doc.bytes.len() as u64;
            if dest.is_file() {
                self.present(&mut report, size);
            } else {
                write_atomic(&dest, &doc.bytes)?;
                self.written(&mut report, size);
            }
        }
        match self.tag(&image.reference, &image.root)? {
            TagOutcome::Created => report.records_created += 1,
            TagOutcome::Updated => report.records_updated += 1,
            TagOutcome::Unchanged => report.records_unchanged += 1,
        }
        report.elapsed = start.elapsed();
        Ok(report)
    }

    fn present(&self, report: &mut ImportReport, size: u64) {
        report.content_present += 1;
        if let Some(p) = &self.progress {
            p.add(size);
        }
    }

    fn written(&self, report: &mut ImportReport, size: u64) {
        report.content_written += 1;
        report.bytes_written += size;
        if let Some(p) = &self.progress {
            p.add(size);
        }
    }

    /// Points the `reference` tag at `root`, replacing what it named before; leaves
    /// `index.json` untouched when it already says exactly that.
    fn tag(&self, reference: &str, root: &Document) -> Result<TagOutcome, ImportError> {
        let _guard = self.index_lock.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.dir.join("index.json");
        let mut index = if path.exists() {
            read_index(&path)?
        } else {
            json!({"schemaVersion": 2, "mediaType": media_type::OCI_INDEX, "manifests": []})
        };
        let Some(manifests) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
            return Err(ImportError::BadIndex {
                path,
                reason: "no manifests array".into(),
            });
        };
        let entry = json!({
            "mediaType": root.media_type,
            "digest": root.digest.to_string(),
            "size": root.bytes.len(),
            "annotations": {
                REF_NAME_ANNOTATION: reference,
                CONTAINERD_NAME_ANNOTATION: reference,
            }
        });
        let tagged = |m: &Value| {
            m.pointer(&format!(
                "/annotations/{}",
                REF_NAME_ANNOTATION.replace('/', "~1")
            ))
            .and_then(Value::as_str)
                == Some(reference)
        };
        let old: Vec<&Value> = manifests.iter().filter(|m| tagged(m)).collect();
        let outcome = match old.as_slice() {
            [] => TagOutcome::Created,
            [only] if **only == entry => return Ok(TagOutcome::Unchanged),
            _ => TagOutcome::Updated,
        };
        manifests.retain(|m| !tagged(m));
        manifests.push(entry);
        let bytes = serde_json::to_vec_pretty(&index).expect("serializing a JSON value");
        write_atomic(&path, &bytes)?;
        Ok(outcome)
    }
}

/// Reads an existing `index.json`, refusing it before reading when it exceeds
/// [`MAX_DOCUMENT_BYTES`].
fn read_index(path: &Path) -> Result<Value, ImportError> {
    let meta = fs::metadata(path).map_err(io_err("inspecting", path))?;
    if meta.len() > MAX_DOCUMENT_BYTES {
        return Err(ImportError::BadIndex {
            path: path.to_owned(),
            reason: format!("{} bytes exceeds {MAX_DOCUMENT_BYTES}", meta.len()),
        });
    }
    // `take`: the file may have grown since it was measured.
    let mut bytes = Vec::new();
    io::Read::read_to_end(
        &mut io::Read::take(
            fs::File::open(path).map_err(io_err("opening", path))?,
            MAX_DOCUMENT_BYTES + 1,
        ),
        &mut bytes,
    )
    .map_err(io_err("reading", path))?;
    if bytes.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(ImportError::BadIndex {
            path: path.to_owned(),
            reason: format!("grew past {MAX_DOCUMENT_BYTES} bytes while being read"),
        });
    }
    serde_json::from_slice::<Value>(&bytes).map_err(|e| ImportError::BadIndex {
        path: path.to_owned(),
        reason: e.to_string(),
    })
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
            root: Document::of(blobswarm_core::oci::media_type::OCI_MANIFEST, manifest),
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

    /// A layout target at `<dir>/oci` and the layers `one` and `two` as blob files in
    /// `<dir>/src`, named by their hex digests.
    fn target_and_layers() -> (tempfile::TempDir, PathBuf, OciLayoutTarget) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(&src).unwrap();
        let target = OciLayoutTarget::open(dir.path().join("oci")).unwrap();
        for layer in [b"one".as_slice(), b"two"] {
            fs::write(src.join(Digest::of(layer).hex()), layer).unwrap();
        }
        (dir, src, target)
    }

    #[test]
    fn import_writes_blobs_and_retags() {
        let (dir, src, target) = target_and_layers();
        for (i, layer) in [b"one".as_slice(), b"two"].iter().enumerate() {
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
    fn second_import_changes_nothing_and_a_new_root_updates_the_tag() {
        let (dir, src, target) = target_and_layers();
        let index = dir.path().join("oci/index.json");
        let image = |layer: &[u8]| {
            ImageToImport::from_release(&release("reg.local/app:v1", layer), |d| src.join(d.hex()))
        };
        let first = target.import_image(&image(b"one")).unwrap();
        assert_eq!((first.content_written, first.records_created), (2, 1));
        assert_eq!(
            first.bytes_written,
            3 + image(b"one").root.bytes.len() as u64
        );
        let before = fs::read(&index).unwrap();

        let second = target.import_image(&image(b"one")).unwrap();
        assert!(second.changed_nothing(), "{second:?}");
        assert_eq!((second.content_present, second.records_unchanged), (2, 1));
        assert_eq!(fs::read(&index).unwrap(), before, "index.json rewritten");

        let third = target.import_image(&image(b"two")).unwrap();
        assert_eq!((third.content_written, third.records_updated), (2, 1));
        assert!(!third.changed_nothing());
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
