//! Identity key files: libp2p protobuf-encoded ed25519 keypairs, mode 0600.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use libp2p::identity::Keypair;

/// Largest key file read; a real one is about 70 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// Loads the keypair at `path`, or creates one there if the file does not exist.
pub(crate) fn load_or_create(path: &Path) -> anyhow::Result<Keypair> {
    if path.exists() {
        return load(path);
    }
    let key = Keypair::generate_ed25519();
    write_new(path, &key)?;
    Ok(key)
}

/// Loads an existing keypair.
pub(crate) fn load(path: &Path) -> anyhow::Result<Keypair> {
    let bytes = read_bounded(path, MAX_KEY_FILE, "key file", "key", |p| fs::read(p))?;
    Keypair::from_protobuf_encoding(&bytes)
        .with_context(|| format!("key file {} does not hold a libp2p keypair", path.display()))
}

/// Reads a small secret or certificate file with `read`, refusing one over `max` bytes
/// before reading it, so a wrong path cannot make the command read a huge file. `what`
/// names the file in errors ("swarm key file"), `holds` what it should hold ("swarm key").
pub(crate) fn read_bounded<T>(
    path: &Path,
    max: u64,
    what: &str,
    holds: &str,
    read: fn(&Path) -> std::io::Result<T>,
) -> anyhow::Result<T> {
    let len = fs::metadata(path)
        .with_context(|| format!("reading {what} {}", path.display()))?
        .len();
    anyhow::ensure!(
        len <= max,
        "{what} {} is {len} bytes, not a {holds}",
        path.display()
    );
    read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Writes a new key file, refusing to overwrite one.
pub(crate) fn write_new(path: &Path, key: &Keypair) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let bytes = key.to_protobuf_encoding().context("encoding keypair")?;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    f.write_all(&bytes)
        .with_context(|| format!("writing key file {}", path.display()))
}
