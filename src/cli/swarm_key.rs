//! Swarm key files: the libp2p private-network pre-shared key in the standard
//! `/key/swarm/psk/1.0.0/` + `/base16/` + 64 hex digits format (go-libp2p, IPFS).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use libp2p::pnet::PreSharedKey;
use rand::RngCore as _;

/// Largest swarm key file read; a real one is 88 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// Loads the swarm key at `path`.
pub(crate) fn load(path: &Path) -> anyhow::Result<PreSharedKey> {
    let text = super::keys::read_bounded(path, MAX_KEY_FILE, "swarm key file", "swarm key", |p| {
        std::fs::read_to_string(p)
    })?;
    let key: PreSharedKey = text.parse().map_err(|e| {
        anyhow::anyhow!(
            "swarm key file {} is not a /key/swarm/psk/1.0.0/ /base16/ key: {e}",
            path.display()
        )
    })?;
    tracing::info!(fingerprint = %key.fingerprint(), "private swarm (pnet) key loaded");
    Ok(key)
}

/// Writes a new random swarm key (mode 0600, never overwriting) and returns its
/// fingerprint, which is safe to print.
pub(crate) fn generate(path: &Path) -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let key = PreSharedKey::new(bytes);
    let fingerprint = key.fingerprint().to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating swarm key file {}", path.display()))?;
    f.write_all(key.to_key_file().as_bytes())
        .with_context(|| format!("writing swarm key file {}", path.display()))?;
    Ok(fingerprint)
}
