//! The chunk store: where verified chunks land, and where they are served from.
//!
//! Layout under the store root:
//! - `partial/<hex>`: a blob being assembled, pre-sized; chunks are written at their offsets.
//! - `blobs/sha256/<hex>`: complete blobs, moved here by an fsync + rename, so a blob
//!   file under this name is always whole.
//! - `maps/` and `resume/`: chunk maps and verified-chunk checkpoints, so a restart
//!   resumes (see [`checkpoint`](self::FsStore::checkpoint) and
//!   [`scan_resumable`](self::FsStore::scan_resumable)).
//!
//! Only bytes already verified against a chunk map may be written: the store itself does
//! not hash (hashing is the CPU bottleneck and happens exactly once, in the driver). All
//! calls are synchronous file I/O; drivers call them from blocking threads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{ChunkMap, Digest};

mod checkpoint;

pub use checkpoint::{ResumeScan, Resumed, write_atomic};

/// A store operation that failed, naming the blob and path involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The underlying file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A read asked for bytes past the end of the blob.
    #[error("range {start}..{end} is outside blob {blob} of {size} bytes")]
    Range {
        /// The blob.
        blob: Digest,
        /// Range start.
        start: u64,
        /// Range end.
        end: u64,
        /// Blob size on disk.
        size: u64,
    },
    /// The blob is not in the store.
    #[error("blob {0} is not in the store")]
    Missing(Digest),
    /// A saved state file (chunk map, checkpoint) is unusable.
    #[error("{path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A directory of complete and partial blobs.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directories cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        for dir in [
            root.join("partial"),
            root.join("blobs").join("sha256"),
            root.join("maps"),
            root.join("resume"),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        Ok(Self { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a complete blob lives.
    pub fn blob_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(blob.hex())
    }

    fn partial_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("partial").join(blob.hex())
    }

    /// Whether a complete blob is present.
    pub fn has_blob(&self, blob: &Digest) -> bool {
        self.blob_path(blob).is_file()
    }

    /// Writes one chunk that the caller has verified against `map`.
    ///
    /// # Errors
    /// [`StoreError`] on file errors or when the chunk does not fit the map.
    pub fn write_chunk(&self, map: &ChunkMap, index: u32, bytes: &[u8]) -> Result<(), StoreError> {
        let blob = map.blob();
        if self.has_blob(&blob) {
            return Ok(());
        }
        let range = map.range(index).map_err(|_| StoreError::Range {
            blob,
            start: u64::from(index) * u64::from(map.chunk_size()),
            end: 0,
            size: map.size(),
        })?;
        if range.end - range.start != bytes.len() as u64 {
            return Err(StoreError::Range {
                blob,
                start: range.start,
                end: range.start + bytes.len() as u64,
                size: map.size(),
            });
        }
        let path = self.partial_path(&blob);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        let len = file.metadata().map_err(io_err("inspecting", &path))?.len();
        if len != map.size() {
            file.set_len(map.size()).map_err(io_err("sizing", &path))?;
        }
        file.write_all_at(bytes, range.start)
            .map_err(io_err("writing", &path))
    }

    /// Reads `range` of a blob, from the complete file or, while assembling, the partial one.
    ///
    /// The caller must only ask for chunks it knows are verified.
    ///
    /// # Errors
    /// [`StoreError`] when the blob is missing or the range is out of bounds.
    pub fn read_range(&self, blob: &Digest, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        self.read_range_with(blob, range, |len| vec![0; len])
    }

    /// [`read_range`](Self::read_range) into a buffer of the range's length from `buffer`,
    /// called only once the range is known to lie inside the blob (so a bad range
    /// allocates nothing). The buffer's old contents are overwritten, so it need not be
    /// zeroed: callers pass reused buffers.
    ///
    /// # Errors
    /// As [`read_range`](Self::read_range).
    pub fn read_range_with(
        &self,
        blob: &Digest,
        range: Range<u64>,
        buffer: impl FnOnce(usize) -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        // The partial file may be renamed between the two opens: try complete, partial, complete.
        let file = [
            self.blob_path(blob),
            self.partial_path(blob),
            self.blob_path(blob),
        ]
        .into_iter()
        .find_map(|p| File::open(&p).ok().map(|f| (f, p)));
        let Some((file, path)) = file else {
            return Err(StoreError::Missing(*blob));
        };
        let size = file.metadata().map_err(io_err("inspecting", &path))?.len();
        if range.start > range.end || range.end > size {
            return Err(StoreError::Range {
                blob: *blob,
                start: range.start,
                end: range.end,
                size,
            });
        }
        let len = (range.end - range.start) as usize;
        let mut buf = buffer(len);
        // A buffer of another length would read the wrong bytes or leave stale ones.
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, range.start)
            .map_err(io_err("reading", &path))?;
        Ok(buf)
    }

    /// Makes an assembled blob durable and visible under its digest; idempotent.
    ///
    /// # Errors
    /// [`StoreError`] when the partial file is missing or cannot be synced or renamed.
    pub fn finalize(&self, blob: &Digest, size: u64) -> Result<PathBuf, StoreError> {
        let dest = self.blob_path(blob);
        if dest.is_file() {
            return Ok(dest);
        }
        let partial = self.partial_path(blob);
        if size == 0 && !partial.exists() {
            File::create(&partial).map_err(io_err("creating", &partial))?;
        }
        let file = File::open(&partial).map_err(|e| {
            if dest.is_file() {
                // Another finalize won the race.
                return StoreError::Missing(*blob);
            }
            io_err("opening", &partial)(e)
        });
        let file = match file {
            Ok(f) => f,
            Err(StoreError::Missing(_)) => return Ok(dest),
            Err(e) => return Err(e),
        };
        file.sync_all().map_err(io_err("syncing", &partial))?;
        match fs::rename(&partial, &dest) {
            Ok(()) => {}
            Err(_) if dest.is_file() => {}
            Err(e) => return Err(io_err("renaming", &partial)(e)),
        }
        // The blob file now says "whole"; its checkpoint is stale. A crash before this
        // removal is harmless: a complete blob wins over a checkpoint on restart.
        let _ = fs::remove_file(self.resume_path(blob));
        if let Some(dir) = dest.parent() {
            checkpoint::sync_dir(dir)?;
        }
        Ok(dest)
    }

    /// Removes a partial blob (and its checkpoint) after a failed download or ingest.
    pub fn discard_partial(&self, blob: &Digest) {
        let _ = fs::remove_file(self.resume_path(blob));
        let _ = fs::remove_file(self.partial_path(blob));
    }

    /// Deletes everything stored for a blob (complete or partial file, chunk map,
    /// checkpoint), for store-cap eviction; returns the bytes of blob data freed.
    /// Missing files are not an error: eviction may race a crash.
    pub fn remove_blob(&self, blob: &Digest) -> u64 {
        let mut freed = 0;
        for path in [self.blob_path(blob), self.partial_path(blob)] {
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            if fs::remove_file(&path).is_ok() {
                freed += len;
            }
        }
        let _ = fs::remove_file(self.map_path(blob));
        let _ = fs::remove_file(self.resume_path(blob));
        freed
    }

    /// Starts writing a whole blob sequentially (seeder ingest); see [`BlobWriter`].
    ///
    /// # Errors
    /// [`StoreError::Io`] when the partial file cannot be created.
    pub fn blob_writer(&self, blob: &Digest) -> Result<BlobWriter, StoreError> {
        let path = self.partial_path(blob);
        let file = File::create(&path).map_err(io_err("creating", &path))?;
        Ok(BlobWriter {
            file: io::BufWriter::with_capacity(1 << 20, file),
            path,
        })
    }

    /// Opens a complete blob for sequential reading (export, import).
    ///
    /// # Errors
    /// [`StoreError::Missing`] when the blob is not complete.
    pub fn open_blob(&self, blob: &Digest) -> Result<impl Read, StoreError> {
        File::open(self.blob_path(blob)).map_err(|_| StoreError::Missing(*blob))
    }
}

/// Sequential writer for a blob whose digest is checked by the caller before [`FsStore::finalize`].
#[derive(Debug)]
pub struct BlobWriter {
    file: io::BufWriter<File>,
    path: PathBuf,
}

impl BlobWriter {
    /// Appends bytes.
    ///
    /// # Errors
    /// [`StoreError::Io`] on write failure.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(bytes)
            .map_err(io_err("writing", &self.path))
    }

    /// Flushes buffered bytes; call before [`FsStore::finalize`].
    ///
    /// # Errors
    /// [`StoreError::Io`] on flush failure.
    pub fn finish(mut self) -> Result<(), StoreError> {
        self.file.flush().map_err(io_err("flushing", &self.path))
    }

    /// Removes the partial file after a failed ingest.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MIN_CHUNK_SIZE, chunk_map_of};

    #[test]
    fn chunks_in_any_order_assemble_the_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(3 * MIN_CHUNK_SIZE as usize + 5))
            .map(|i| i as u8)
            .collect();
        let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
        for i in [3, 0, 2, 1] {
            let r = map.range(i).unwrap();
            store
                .write_chunk(&map, i, &data[r.start as usize..r.end as usize])
                .unwrap();
            assert_eq!(
                store.read_range(&map.blob(), r.clone()).unwrap(),
                &data[r.start as usize..r.end as usize]
            );
        }
        let path = store.finalize(&map.blob(), map.size()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), data);
        // Idempotent, and reads keep working after the rename.
        store.finalize(&map.blob(), map.size()).unwrap();
        assert_eq!(store.read_range(&map.blob(), 0..4).unwrap(), &data[..4]);
        assert!(matches!(
            store.read_range(&map.blob(), 0..(data.len() as u64 + 1)),
            Err(StoreError::Range { .. })
        ));
        // A reused buffer of any length comes back holding exactly the range; a range
        // outside the blob asks for no buffer at all.
        let stale = store.read_range_with(&map.blob(), 2..6, |n| vec![0xee; n + 9]);
        assert_eq!(stale.unwrap(), &data[2..6]);
        let out = store.read_range_with(&map.blob(), 0..u64::MAX, |_| unreachable!());
        assert!(matches!(out, Err(StoreError::Range { .. })));
    }

    #[test]
    fn empty_blob_finalizes_to_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let d = Digest::of(b"");
        let p = store.finalize(&d, 0).unwrap();
        assert_eq!(fs::metadata(p).unwrap().len(), 0);
    }

    #[test]
    fn wrong_length_chunk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let data = vec![1u8; 100];
        let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
        assert!(store.write_chunk(&map, 0, &data[..50]).is_err());
        assert!(store.write_chunk(&map, 1, &data).is_err());
        assert!(matches!(
            store.read_range(&Digest::of(b"nope"), 0..1),
            Err(StoreError::Missing(_))
        ));
    }
}
