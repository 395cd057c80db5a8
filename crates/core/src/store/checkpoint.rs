//! Crash safety of the chunk store: what survives a `kill -9` and how a restart resumes.
//!
//! Layout under the store root, next to `partial/` and `blobs/`:
//! - `maps/<hex>`: the blob's chunk map, written once (temp + fsync + rename). On restart it
//!   is used only if it hashes to the chunk-map digest of a signed release, like a map
//!   received from a peer.
//! - `resume/<hex>`: the verified-chunk bitfield of a partial blob, a checkpoint. The
//!   partial file is fsynced *before* the bitfield is renamed into place, so a set bit
//!   always names bytes that reached the disk.
//!
//! On start, [`FsStore::scan_resumable`] re-hashes every chunk a checkpoint marks as held
//! against the chunk map (the disk is not trusted either: a torn write or a flipped bit
//! is dropped and fetched again). Chunks written after the last checkpoint are fetched
//! again; a checkpoint costs one fsync per blob, so drivers write one every second or
//! so rather than per chunk.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{FsStore, StoreError, io_err};
use crate::{Bitfield, ChunkMap, Digest, codec};

/// Largest chunk-map or bitfield file read back (the codec's own decode limit).
const MAX_STATE_FILE: u64 = codec::MAX_HEADER as u64;

/// A blob found on disk at start, with the chunks that still verify.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// Its chunk map, as saved (the node checks it against the release before use).
    pub map: ChunkMap,
    /// Chunks on disk that hash as the map says.
    pub have: Bitfield,
    /// Chunks the checkpoint marked as held that failed their hash and were dropped.
    pub dropped: u32,
}

/// What [`FsStore::scan_resumable`] found.
#[derive(Debug, Default)]
pub struct ResumeScan {
    /// Blobs to resume (complete ones with a full bitfield).
    pub blobs: Vec<Resumed>,
    /// State files that could not be used (they were removed); each names its path.
    pub problems: Vec<StoreError>,
}

/// Writes `bytes` to `path` so a crash leaves either the old or the new content: a temp
/// file in the same directory, fsynced, then renamed over the target.
///
/// # Errors
/// [`StoreError::Io`] naming the temp file or the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    // A name of its own per write: the finalize of a blob and a checkpoint pass may save
    // the same map at once, and a shared temporary file would be truncated under the
    // other writer's rename. The `.tmp` suffix is what a restart sweeps away.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", NEXT.fetch_add(1, Ordering::Relaxed)));
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing", &tmp));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("renaming", &tmp)(e)
    })
}

/// Fsyncs a directory so a rename inside it survives a power cut.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

impl FsStore {
    pub(super) fn map_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("maps").join(blob.hex())
    }

    pub(super) fn resume_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("resume").join(blob.hex())
    }

    /// Saves a blob's chunk map so a restart need not fetch it again; once per blob.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the file cannot be written.
    pub fn save_map(&self, map: &ChunkMap) -> Result<(), StoreError> {
        let path = self.map_path(&map.blob());
        if path.is_file() {
            return Ok(());
        }
        let bytes = codec::encode(map).map_err(|e| StoreError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomic(&path, &bytes)
    }

    /// Records that the chunks in `have` are verified and written: makes the partial
    /// file durable, then replaces the checkpoint atomically. `have` must only name
    /// chunks whose [`FsStore::write_chunk`] returned before this call.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the partial file cannot be synced or the checkpoint written.
    pub fn checkpoint(&self, blob: &Digest, have: &Bitfield) -> Result<(), StoreError> {
        let partial = self.partial_path(blob);
        // Finalized meanwhile (or nothing written yet): nothing to record.
        let Ok(file) = File::open(&partial) else {
            return Ok(());
        };
        file.sync_data().map_err(io_err("syncing", &partial))?;
        let bytes = codec::encode(have).map_err(|e| StoreError::State {
            path: self.resume_path(blob),
            reason: e.to_string(),
        })?;
        write_atomic(&self.resume_path(blob), &bytes)
    }

    /// Finds every blob with a saved chunk map and works out which of its chunks are on
    /// disk and still verify: complete blobs in full, partial ones as far as their
    /// checkpoint goes, each marked chunk re-hashed. Unusable state files are removed and
    /// reported. Reads and hashes; call it from a blocking thread.
    pub fn scan_resumable(&self) -> ResumeScan {
        let mut scan = ResumeScan::default();
        let dir = self.root.join("maps");
        let Ok(entries) = fs::read_dir(&dir) else {
            return scan;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
                continue;
            }
            match self.resume_one(&path, &name) {
                Ok(r) => scan.blobs.push(r),
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    scan.problems.push(e);
                }
            }
        }
        scan
    }

    fn resume_one(&self, map_path: &Path, name: &str) -> Result<Resumed, StoreError> {
        let bad = |reason: String| StoreError::State {
            path: map_path.to_owned(),
            reason,
        };
        let blob: Digest = format!("sha256:{name}")
            .parse()
            .map_err(|e| bad(format!("not a blob digest: {e}")))?;
        let map: ChunkMap = read_state(map_path)?;
        map.validate().map_err(|e| bad(e.to_string()))?;
        if map.blob() != blob {
            return Err(bad(format!("holds the chunk map of {}", map.blob())));
        }
        let complete = fs::metadata(self.blob_path(&blob)).is_ok_and(|m| m.len() == map.size());
        if complete {
            // A checkpoint pass may have raced the finalize; the blob file wins.
            let _ = fs::remove_file(self.resume_path(&blob));
            let have = Bitfield::full(map.count());
            return Ok(Resumed {
                map,
                have,
                dropped: 0,
            });
        }
        let mut have = self.read_checkpoint(&blob, map.count());
        let dropped = self.reverify(&map, &mut have);
        Ok(Resumed { map, have, dropped })
    }

    /// The saved bitfield, or an empty one when there is none or it does not fit the map.
    fn read_checkpoint(&self, blob: &Digest, count: u32) -> Bitfield {
        let path = self.resume_path(blob);
        match read_state::<Bitfield>(&path) {
            Ok(b) if b.len() == count && b.validate().is_ok() => b,
            _ => Bitfield::new(count),
        }
    }

    /// Clears every bit whose chunk is not in the partial file as the map says; returns
    /// how many were cleared.
    fn reverify(&self, map: &ChunkMap, have: &mut Bitfield) -> u32 {
        let partial = self.partial_path(&map.blob());
        let file = File::open(&partial).ok();
        let mut dropped = 0;
        let held: Vec<u32> = have.ones().collect();
        let mut buf = Vec::new();
        for i in held {
            let ok = match (&file, map.range(i)) {
                (Some(f), Ok(r)) => {
                    buf.resize((r.end - r.start) as usize, 0);
                    f.read_exact_at(&mut buf, r.start).is_ok() && map.verify(i, &buf).is_ok()
                }
                _ => false,
            };
            if !ok {
                have.clear(i);
                dropped += 1;
            }
        }
        dropped
    }
}

/// Reads and decodes a state file, refusing one larger than the codec would accept.
fn read_state<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let len = fs::metadata(path)
        .map_err(io_err("inspecting", path))?
        .len();
    if len > MAX_STATE_FILE {
        return Err(StoreError::State {
            path: path.to_owned(),
            reason: format!("{len} bytes, more than the {MAX_STATE_FILE}-byte limit"),
        });
    }
    let bytes = fs::read(path).map_err(io_err("reading", path))?;
    codec::decode(&bytes).map_err(|e| StoreError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MIN_CHUNK_SIZE, chunk_map_of};

    /// The finalize of a blob and a checkpoint pass may save its map at the same moment:
    /// neither write may fail nor leave the file short (they once shared one temp file).
    #[test]
    fn concurrent_atomic_writes_of_one_file_all_succeed_and_leave_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("map");
        let bytes = vec![7u8; 64 << 10];
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        write_atomic(&path, &bytes).unwrap();
                    }
                });
            }
        });
        assert_eq!(fs::read(&path).unwrap(), bytes);
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "temp files left behind: {left:?}");
    }

    fn blob_of(chunks: u32) -> (Vec<u8>, ChunkMap) {
        let data: Vec<u8> = (0..(chunks as usize * MIN_CHUNK_SIZE as usize - 7))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let map = chunk_map_of(&data, MIN_CHUNK_SIZE).unwrap();
        (data, map)
    }

    fn write(store: &FsStore, map: &ChunkMap, data: &[u8], i: u32) {
        let r = map.range(i).unwrap();
        store
            .write_chunk(map, i, &data[r.start as usize..r.end as usize])
            .unwrap();
    }

    /// A store in a fresh directory with the map of a blob of `chunks` chunks and the
    /// chunks `written` on disk; `have` marks those chunks.
    struct Fixture {
        dir: tempfile::TempDir,
        store: FsStore,
        data: Vec<u8>,
        map: ChunkMap,
        have: Bitfield,
    }

    fn fixture(chunks: u32, written: impl IntoIterator<Item = u32>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let (data, map) = blob_of(chunks);
        store.save_map(&map).unwrap();
        let mut have = Bitfield::new(map.count());
        for i in written {
            write(&store, &map, &data, i);
            have.set(i);
        }
        Fixture {
            dir,
            store,
            data,
            map,
            have,
        }
    }

    #[test]
    fn a_checkpoint_resumes_only_what_it_recorded() {
        let Fixture {
            dir,
            store,
            data,
            map,
            have,
        } = fixture(5, [0, 3]);
        store.checkpoint(&map.blob(), &have).unwrap();
        // Written after the checkpoint, as if the process died before the next one.
        write(&store, &map, &data, 1);

        let scan = FsStore::open(dir.path()).unwrap().scan_resumable();
        assert!(scan.problems.is_empty(), "{:?}", scan.problems);
        assert_eq!(scan.blobs.len(), 1);
        let r = &scan.blobs[0];
        assert_eq!(r.map, map);
        assert_eq!(r.have.ones().collect::<Vec<_>>(), vec![0, 3]);
        assert_eq!(r.dropped, 0);
    }

    #[test]
    fn a_corrupted_chunk_on_disk_is_dropped_not_resumed() {
        let Fixture {
            dir: _dir,
            store,
            data,
            map,
            mut have,
        } = fixture(4, 0..3);
        // A bit marked as held for a chunk never written (a lying or stale checkpoint).
        have.set(3);
        store.checkpoint(&map.blob(), &have).unwrap();
        let partial = store.partial_path(&map.blob());
        let f = fs::OpenOptions::new().write(true).open(&partial).unwrap();
        let at = map.range(1).unwrap().start + 10;
        f.write_all_at(&[data[at as usize] ^ 0xff], at).unwrap();

        let scan = store.scan_resumable();
        let r = &scan.blobs[0];
        assert_eq!(r.have.ones().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(r.dropped, 2);
    }

    #[test]
    fn complete_blobs_resume_in_full_and_bad_state_files_are_reported() {
        let Fixture {
            dir, store, map, ..
        } = fixture(2, 0..2);
        store.checkpoint(&map.blob(), &Bitfield::full(2)).unwrap();
        store.finalize(&map.blob(), map.size()).unwrap();
        assert!(
            !store.resume_path(&map.blob()).exists(),
            "finalize drops the checkpoint"
        );
        // A map file under the wrong name, and garbage.
        let other = Digest::of(b"other");
        fs::copy(store.map_path(&map.blob()), store.map_path(&other)).unwrap();
        fs::write(dir.path().join("maps").join("junk"), b"junk").unwrap();

        let scan = store.scan_resumable();
        assert_eq!(scan.blobs.len(), 1);
        assert!(scan.blobs[0].have.is_full());
        assert_eq!(scan.problems.len(), 2, "{:?}", scan.problems);
        assert!(
            scan.problems
                .iter()
                .all(|e| e.to_string().contains("maps/"))
        );
        assert!(
            !store.map_path(&other).exists(),
            "a bad state file is removed"
        );
    }

    #[test]
    fn atomic_write_replaces_whole_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert!(!dir.path().join("f.tmp").exists());
    }
}
