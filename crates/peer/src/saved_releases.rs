//! Accepted releases kept on disk, so a restarted agent remembers what it was doing and
//! which release of each image is the newest.
//!
//! Without this, the replay guard (`blobswarm_core::replay`) lives in memory only: an
//! agent killed and restarted could be handed an older, validly signed release by a
//! hostile neighbour before it hears the newest one again, and would download and import
//! the old image. With it, the saved releases are fed back through the node at start
//! (oldest first), which re-checks signature, trust and expiry and rebuilds the guard;
//! the restarted agent also resumes its downloads without waiting for a seeder. This
//! module is the file side; the driver (`driver::restore`) feeds the releases back.
//!
//! Each release is one file `releases/<id>` under the store root, written atomically
//! (temp + fsync + rename). Files are untrusted on reading: bounded in size before
//! reading, decoded with the codec's limits, verified by the node like any gossip. A file
//! that fails any of that, or a release the node refuses (expired, untrusted, replayed),
//! is deleted with a log line.

use std::path::{Path, PathBuf};

use blobswarm_core::store::write_atomic;
use blobswarm_core::{MAX_RELEASE_BYTES, ReleaseId, SignedRelease, TrustedSeeders, codec};
use tracing::warn;

/// Releases kept at most; the oldest files go first. Far above what a node carries at
/// once (`wire::MAX_RELEASES` = 64 are exchanged per sync).
pub(crate) const MAX_SAVED: usize = 128;
/// Largest file read back: a release plus its signature and framing.
const MAX_FILE: u64 = MAX_RELEASE_BYTES as u64 + (64 << 10);

/// The directory of saved releases under the store root.
pub(crate) fn dir(store_root: &Path) -> PathBuf {
    store_root.join("releases")
}

fn path(store_root: &Path, id: &ReleaseId) -> PathBuf {
    dir(store_root).join(id.to_string().replace(':', "-"))
}

/// Saves an accepted release (no-op when already saved), then trims the directory to
/// [`MAX_SAVED`] files. Blocking file I/O: call off the event loop.
pub(crate) fn save(store_root: &Path, signed: &SignedRelease) -> std::io::Result<()> {
    let file = path(store_root, &signed.id());
    if file.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir(store_root))?;
    let bytes = codec::encode(signed).map_err(std::io::Error::other)?;
    write_atomic(&file, &bytes).map_err(std::io::Error::other)?;
    trim(&dir(store_root), MAX_SAVED)
}

/// Deletes the saved copy of a release the node refused or dropped.
pub(crate) fn forget(store_root: &Path, id: &ReleaseId) {
    let _ = std::fs::remove_file(path(store_root, id));
}

/// Keeps the `keep` newest files (by modification time) of `dir`.
fn trim(dir: &Path, keep: usize) -> std::io::Result<()> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= keep {
        return Ok(());
    }
    files.sort();
    for (_, p) in &files[..files.len() - keep] {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

/// Reads every saved release that decodes; deletes files that do not, with a log line.
pub(crate) fn load(store_root: &Path) -> Vec<SignedRelease> {
    let Ok(entries) = std::fs::read_dir(dir(store_root)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.filter_map(Result::ok).take(MAX_SAVED * 2) {
        let p = entry.path();
        if p.extension()
            .is_some_and(|e| e.to_string_lossy().starts_with("tmp"))
        {
            // A temp file of a write that a crash interrupted.
            let _ = std::fs::remove_file(&p);
            continue;
        }
        let read = match entry.metadata() {
            Ok(m) if m.len() > MAX_FILE => Err(format!("{} bytes, over {MAX_FILE}", m.len())),
            Ok(_) => std::fs::read(&p).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match read.and_then(|b| codec::decode::<SignedRelease>(&b).map_err(|e| e.to_string())) {
            Ok(signed) => out.push(signed),
            Err(e) => {
                warn!(file = %p.display(), error = %e, "dropping unreadable saved release");
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    out
}

/// What to do with one saved release at start.
pub(crate) enum Keep {
    /// The newest saved release of its image (or one the node will judge itself).
    Newest(SignedRelease),
    /// An older release of an image with a newer one saved: a restart must not
    /// download or import it again.
    Superseded(ReleaseId),
}

/// Splits saved releases into the newest per (seeder, reference) and the rest. The
/// signature is checked here only to read the body; expiry and trust at `now` are the
/// node's call, so a release that does not verify is passed on for the node to refuse.
/// With one release per image left, the order they are fed back in does not matter.
pub(crate) fn newest_per_image(saved: Vec<SignedRelease>, trusted: &TrustedSeeders) -> Vec<Keep> {
    use std::collections::HashMap;
    let mut newest: HashMap<(Vec<u8>, String), (u64, SignedRelease)> = HashMap::new();
    let mut out = Vec::new();
    for signed in saved {
        let Ok(body) = signed.verify(trusted, 0) else {
            out.push(Keep::Newest(signed));
            continue;
        };
        let key = (body.seeder.clone(), body.reference.clone());
        match newest.get(&key) {
            Some((seq, _)) if *seq >= body.sequence => out.push(Keep::Superseded(signed.id())),
            _ => {
                if let Some((_, old)) = newest.insert(key, (body.sequence, signed)) {
                    out.push(Keep::Superseded(old.id()));
                }
            }
        }
    }
    out.extend(newest.into_values().map(|(_, s)| Keep::Newest(s)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trim_keeps_the_newest_files() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..5 {
            let p = tmp.path().join(format!("f{i}"));
            std::fs::write(&p, b"x").unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        trim(tmp.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["f3", "f4"]);
    }

    fn signed(key: &libp2p::identity::Keypair, reference: &str, sequence: u64) -> SignedRelease {
        let mut r = blobswarm_core::Release::minimal(reference, vec![], &key.public().to_peer_id());
        r.sequence = sequence;
        r.created_unix_ms = sequence;
        SignedRelease::sign(&r, key).unwrap()
    }

    #[test]
    fn only_the_newest_release_of_each_image_is_kept() {
        let (k, other) = (
            libp2p::identity::Keypair::generate_ed25519(),
            libp2p::identity::Keypair::generate_ed25519(),
        );
        let trusted = TrustedSeeders::new([k.public().to_peer_id(), other.public().to_peer_id()]);
        let a1 = signed(&k, "r/a:1", 1);
        let a3 = signed(&k, "r/a:1", 3);
        let a2 = signed(&k, "r/a:1", 2);
        let b1 = signed(&k, "r/b:1", 1);
        let a1_other_seeder = signed(&other, "r/a:1", 1);
        let untrusted = signed(&libp2p::identity::Keypair::generate_ed25519(), "r/a:1", 9);
        let all = vec![
            a1.clone(),
            a3.clone(),
            a2.clone(),
            b1.clone(),
            a1_other_seeder.clone(),
            untrusted.clone(),
        ];
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for k in newest_per_image(all, &trusted) {
            match k {
                Keep::Newest(s) => kept.push(s.id()),
                Keep::Superseded(id) => dropped.push(id),
            }
        }
        kept.sort();
        dropped.sort();
        let mut want_kept = vec![a3.id(), b1.id(), a1_other_seeder.id(), untrusted.id()];
        want_kept.sort();
        let mut want_dropped = vec![a1.id(), a2.id()];
        want_dropped.sort();
        assert_eq!(
            kept, want_kept,
            "newest per (seeder, reference); the node judges the rest"
        );
        assert_eq!(dropped, want_dropped);
    }

    #[test]
    fn unreadable_and_oversized_files_are_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let d = dir(tmp.path());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("garbage"), b"not a release").unwrap();
        let big = std::fs::File::create(d.join("big")).unwrap();
        big.set_len(MAX_FILE + 1).unwrap();
        assert!(load(tmp.path()).is_empty());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
    }
}
