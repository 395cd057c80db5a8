//! Images in an OCI image layout directory (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`), as written by umoci, skopeo, buildkit or `ctr export`.

use std::path::{Path, PathBuf};

use blobswarm_core::Digest;
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;

use blobswarm_core::oci::{
    self, Body, CONTAINERD_NAME_ANNOTATION as CONTAINERD_NAME, Descriptor as Entry, Index,
    REF_NAME_ANNOTATION as REF_NAME,
};

use super::{
    BlobDescriptor, BlobStream, DocumentStore, MAX_DOCUMENT_BYTES, Platform, ResolvedImage,
    SourceError, complete, exact_size, fetch_described, media_type,
};

/// Buffer size of blob streams read from disk.
const READ_CHUNK: usize = 256 * 1024;

/// An image in an OCI image layout directory.
#[derive(Debug, Clone)]
pub struct LayoutSource {
    dir: PathBuf,
    tag: Option<String>,
    platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutMarker {
    image_layout_version: String,
}

impl LayoutSource {
    /// `rest` is what follows `oci-layout:`: `DIR[:TAG]`, split at the first `:`.
    pub(super) fn new(
        spec: &str,
        rest: &str,
        platform: Option<Platform>,
    ) -> Result<Self, SourceError> {
        let bad = |reason: &str| SourceError::BadReference {
            reference: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (dir, tag) = match rest.split_once(':') {
            Some((dir, tag)) => (dir, Some(tag)),
            None => (rest, None),
        };
        if dir.is_empty() {
            return Err(bad("expected oci-layout:DIR[:TAG], the directory is empty"));
        }
        if tag.is_some_and(str::is_empty) {
            return Err(bad(
                "expected oci-layout:DIR[:TAG], the tag after ':' is empty",
            ));
        }
        Ok(Self {
            dir: PathBuf::from(dir),
            tag: tag.map(str::to_owned),
            platform,
        })
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tag asked for, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    fn io_error(path: PathBuf) -> impl FnOnce(std::io::Error) -> SourceError {
        move |source| SourceError::LayoutIo { path, source }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    /// Reads a small file, refusing it (before reading) if it exceeds `limit`.
    async fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, SourceError> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(Self::io_error(path.to_owned()))?;
        let len = file
            .metadata()
            .await
            .map_err(Self::io_error(path.to_owned()))?
            .len();
        if len > limit {
            return Ok(None);
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        // `take` guards against the file growing after the size check.
        (&mut file)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(Self::io_error(path.to_owned()))?;
        if bytes.len() as u64 > limit {
            return Ok(None);
        }
        Ok(Some(bytes))
    }

    async fn check_marker(&self) -> Result<(), SourceError> {
        let path = self.dir.join("oci-layout");
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            let reason = if tokio::fs::try_exists(&self.dir).await.unwrap_or(false) {
                "not an OCI image layout: the oci-layout file is missing"
            } else {
                "directory does not exist"
            };
            return Err(SourceError::Layout {
                path: self.dir.clone(),
                reason: reason.to_owned(),
            });
        }
        let bytes = Self::read_bounded(&path, 4096)
            .await?
            .ok_or_else(|| SourceError::Layout {
                path: path.clone(),
                reason: "larger than 4 KiB".to_owned(),
            })?;
        let marker: LayoutMarker =
            serde_json::from_slice(&bytes).map_err(|e| SourceError::Layout {
                path: path.clone(),
                reason: format!("not valid JSON: {e}"),
            })?;
        if !marker.image_layout_version.starts_with("1.") {
            return Err(SourceError::Layout {
                path,
                reason: format!(
                    "unsupported imageLayoutVersion {:?}",
                    marker.image_layout_version
                ),
            });
        }
        Ok(())
    }

    /// Reads `index.json` and picks the entry the tag names.
    async fn select_entry(&self) -> Result<(String, Entry), SourceError> {
        let path = self.dir.join("index.json");
        let bytes = Self::read_bounded(&path, MAX_DOCUMENT_BYTES)
            .await?
            .ok_or_else(|| SourceError::Layout {
                path: path.clone(),
                reason: format!("larger than {MAX_DOCUMENT_BYTES} bytes"),
            })?;
        // index.json is an image index itself: the shared parser checks its
        // schemaVersion and every descriptor.
        let limits = oci::Limits {
            max_bytes: MAX_DOCUMENT_BYTES,
            ..oci::Limits::default()
        };
        let parsed = oci::parse(
            &Digest::of(&bytes),
            &bytes,
            Some(media_type::OCI_INDEX),
            limits,
        )
        .map_err(|e| SourceError::Layout {
            path: path.clone(),
            reason: format!("not a valid image index: {e}"),
        })?;
        let Body::Index(Index { manifests: entries }) = parsed.body else {
            return Err(SourceError::Layout {
                path,
                reason: format!("not an image index but a {}", parsed.media_type),
            });
        };
        let name_of = |e: &Entry| {
            e.annotations
                .get(REF_NAME)
                .cloned()
                .unwrap_or_else(|| e.digest.to_string())
        };
        let available: Vec<String> = entries.iter().map(name_of).collect();

        let Some(tag) = &self.tag else {
            return match entries.as_slice() {
                [only] => Ok((name_of(only), only.clone())),
                _ => Err(SourceError::LayoutAmbiguous {
                    path: self.dir.clone(),
                    available,
                }),
            };
        };
        let matching: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.annotations.get(REF_NAME) == Some(tag))
            .collect();
        let matching = if matching.is_empty() {
            // `ctr export` and buildkit also record the full image name.
            entries
                .iter()
                .filter(|e| e.annotations.get(CONTAINERD_NAME) == Some(tag))
                .collect()
        } else {
            matching
        };
        match matching.as_slice() {
            [] => Err(SourceError::LayoutRefNotFound {
                path: self.dir.clone(),
                tag: tag.clone(),
                available,
            }),
            [first, rest @ ..] if rest.iter().all(|e| e.digest == first.digest) => {
                Ok((tag.clone(), (*first).clone()))
            }
            _ => Err(SourceError::Layout {
                path,
                reason: format!("tag {tag:?} names more than one image"),
            }),
        }
    }

    pub(super) async fn resolve(&self) -> Result<ResolvedImage, SourceError> {
        self.check_marker().await?;
        let (name, entry) = self.select_entry().await?;
        if !media_type::is_manifest(&entry.media_type) && !media_type::is_index(&entry.media_type) {
            return Err(SourceError::UnsupportedMediaType {
                digest: entry.digest,
                media_type: entry.media_type,
            });
        }
        let (root, parsed) =
            fetch_described(self, &entry.digest, entry.size, &entry.media_type, || {
                format!("{name} ({})", entry.digest)
            })
            .await?;
        complete(self, name, root, parsed, self.platform.as_ref()).await
    }

    pub(super) async fn open_blob(&self, blob: &BlobDescriptor) -> Result<BlobStream, SourceError> {
        let path = self.blob_path(&blob.digest);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SourceError::BlobNotFound {
                    digest: blob.digest,
                    location: self.dir.display().to_string(),
                });
            }
            Err(e) => return Err(Self::io_error(path)(e)),
        };
        let len = file
            .metadata()
            .await
            .map_err(Self::io_error(path.clone()))?
            .len();
        if len != blob.size {
            return Err(SourceError::BlobSizeMismatch {
                digest: blob.digest,
                expected: blob.size,
                actual: len,
            });
        }
        let stream = tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK);
        Ok(exact_size(Box::pin(stream), blob))
    }
}

impl DocumentStore for LayoutSource {
    async fn fetch_document(
        &self,
        digest: &Digest,
    ) -> Result<(Vec<u8>, Option<String>), SourceError> {
        let path = self.blob_path(digest);
        match tokio::fs::try_exists(&path).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(SourceError::NotFound {
                    reference: format!("{digest} (in {})", self.dir.display()),
                });
            }
            Err(e) => return Err(Self::io_error(path)(e)),
        }
        let bytes = Self::read_bounded(&path, MAX_DOCUMENT_BYTES)
            .await?
            .ok_or_else(|| SourceError::ManifestTooLarge {
                reference: format!("{digest} (in {})", self.dir.display()),
                limit: MAX_DOCUMENT_BYTES,
                size: None,
            })?;
        Ok((bytes, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rest: &str) -> Result<LayoutSource, SourceError> {
        LayoutSource::new(&format!("oci-layout:{rest}"), rest, None)
    }

    #[test]
    fn splits_dir_and_tag_at_the_first_colon() {
        let s = parse("/tmp/lay:v1").unwrap();
        assert_eq!((s.dir(), s.tag()), (Path::new("/tmp/lay"), Some("v1")));
        let s = parse("./lay").unwrap();
        assert_eq!((s.dir(), s.tag()), (Path::new("./lay"), None));
        let s = parse("lay:docker.io/library/busybox:latest").unwrap();
        assert_eq!(s.tag(), Some("docker.io/library/busybox:latest"));
        for bad in ["", ":v1", "lay:"] {
            assert!(
                matches!(parse(bad), Err(SourceError::BadReference { .. })),
                "{bad:?}"
            );
        }
    }
}
