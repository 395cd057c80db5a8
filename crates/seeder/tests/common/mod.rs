//! Shared helpers of the source tests.

#![allow(dead_code, unreachable_pub)]

use blobswarm_core::Digest;
use blobswarm_seeder::source::{BlobDescriptor, Source, SourceError, SourceOptions};
use std::path::PathBuf;

use blobswarm_testkit::{BlobInfo, ImageInfo, PUSH_TOOLS, Registry, require_tools};
use futures::TryStreamExt as _;
use sha2::{Digest as _, Sha256};

/// Size of the pseudo-random layer: big enough to span many stream chunks, small
/// enough to keep the tests fast in debug builds.
pub const RANDOM_BYTES: u64 = 1 << 20;

/// A running anonymous registry and where to build the test's layout (`root/layout`),
/// under a temporary root that lives as long as this.
pub struct RegistryAndLayout {
    pub registry: Registry,
    pub layout: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Starts a [`RegistryAndLayout`]; `None` when a tool is missing outside CI.
pub fn registry_and_layout() -> Option<RegistryAndLayout> {
    if !require_tools(&PUSH_TOOLS) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(tmp.path());
    let layout = tmp.path().join("layout");
    Some(RegistryAndLayout {
        registry,
        layout,
        _tmp: tmp,
    })
}

/// Options reaching `addr` over plain http.
pub fn insecure(addr: &str) -> SourceOptions {
    SourceOptions {
        insecure_registries: vec![addr.to_owned()],
        ..SourceOptions::default()
    }
}

/// [`insecure`] options logging in as `user` with `password`.
pub fn insecure_as(addr: &str, user: Option<&str>, password: Option<&str>) -> SourceOptions {
    SourceOptions {
        username: user.map(str::to_owned),
        password: password.map(str::to_owned),
        ..insecure(addr)
    }
}

/// Streams `blob` and returns the sha256 and length of what came out.
pub async fn stream_digest(source: &Source, blob: &BlobDescriptor) -> (Digest, u64) {
    let mut stream = source
        .open_blob(blob)
        .await
        .unwrap_or_else(|e| panic!("open_blob {}: {e}", blob.digest));
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .unwrap_or_else(|e| panic!("streaming {}: {e}", blob.digest))
    {
        hasher.update(&chunk);
        len += chunk.len() as u64;
    }
    (Digest::from_bytes(hasher.finalize().into()), len)
}

/// `(digest, size, media type)` of resolved blobs, comparable with testkit's.
pub fn blob_triples(blobs: &[BlobDescriptor]) -> Vec<(String, u64, String)> {
    blobs
        .iter()
        .map(|b| (b.digest.to_string(), b.size, b.media_type.clone()))
        .collect()
}

/// `(digest, size, media type)` of the blobs umoci wrote.
pub fn info_triples(blobs: &[BlobInfo]) -> Vec<(String, u64, String)> {
    blobs
        .iter()
        .map(|b| (b.digest.clone(), b.size, b.media_type.clone()))
        .collect()
}

/// Checks the shape of the test image: config + 3 layers, the random one at least
/// as large as its content (random bytes do not compress).
pub fn assert_test_image_shape(info: &ImageInfo) {
    assert_eq!(info.layers.len(), 3, "test image layers: {info:?}");
    assert!(
        info.layers[1].size >= RANDOM_BYTES,
        "random layer is {} bytes, expected at least {RANDOM_BYTES}",
        info.layers[1].size
    );
}

/// Streams every blob and checks it hashes to its digest and has its size.
pub async fn assert_blobs_stream_intact(source: &Source, blobs: &[BlobDescriptor]) {
    for blob in blobs {
        let (digest, len) = stream_digest(source, blob).await;
        assert_eq!(digest, blob.digest, "streamed bytes of {}", blob.digest);
        assert_eq!(len, blob.size, "streamed length of {}", blob.digest);
    }
}

/// Resolves `reference` with `opts`, which must fail as an authentication error naming
/// `registry` that shows `secret` neither in its message nor in its Debug form; returns
/// the message.
pub async fn auth_failure(
    reference: &str,
    opts: SourceOptions,
    registry: &str,
    secret: &str,
) -> String {
    let err = Source::parse(reference, opts)
        .unwrap()
        .resolve()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SourceError::AuthFailed { registry: r, .. } if r == registry),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(!text.contains(secret), "{text}");
    assert!(!format!("{err:?}").contains(secret), "{err:?}");
    text
}
