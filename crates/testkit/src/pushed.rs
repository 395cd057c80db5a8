//! The starting point of most end-to-end tests: a real registry on 127.0.0.1 holding one
//! freshly built test image, and the two checks those tests end with (every blob an agent
//! wrote hashes to its digest; the registry served each blob exactly once).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::{
    BlobInfo, ImageInfo, LogMark, PushFormat, Registry, TEST_PASSWORD, TEST_USER, TokenServer,
    build_test_image, push_image, push_image_with, require_tools, sha256_digest,
};

/// Tools every pushed-image test needs (checked with [`crate::require_tools`]).
pub const PUSH_TOOLS: [&str; 4] = ["docker-registry", "umoci", "skopeo", "busybox"];

/// A registry holding one test image, pushed before the test's clock starts.
#[derive(Debug)]
pub struct PushedImage {
    /// The running registry.
    pub registry: Registry,
    /// What was built: digests and sizes of the manifest, config and layers.
    pub image: ImageInfo,
    /// The pushed reference (`127.0.0.1:PORT/REPO:v1`).
    pub reference: String,
    /// The registry log position after the push: requests counted from here are the
    /// swarm's.
    pub mark: LogMark,
    /// The OCI layout the image was built in (tag `v1`; more tags may be built there).
    pub src: PathBuf,
}

impl PushedImage {
    /// Starts a registry under `root/registry`, builds an image with a pseudo-random
    /// layer of `random_layer` bytes from `seed` in `root/src-layout`, pushes it as
    /// `repo:v1`, and marks the registry log.
    pub fn start(root: &Path, random_layer: u64, seed: u64, repo: &str) -> Self {
        let registry = Registry::start(&root.join("registry"));
        let src = root.join("src-layout");
        let image = build_test_image(&src, "v1", random_layer, seed);
        let reference = push_image(&src, "v1", &registry.addr(), repo);
        let mark = registry.mark_log();
        Self {
            registry,
            image,
            reference,
            mark,
            src,
        }
    }

    /// The image's blobs (config and layers).
    pub fn blobs(&self) -> Vec<BlobInfo> {
        self.image.blobs()
    }

    /// Bytes of all blobs.
    pub fn total_bytes(&self) -> u64 {
        self.blobs().iter().map(|b| b.size).sum()
    }

    /// Panics unless the registry served every blob exactly once since the push.
    pub fn assert_one_get_per_blob(&self) {
        let gets: HashMap<String, usize> = self.registry.blob_gets_since(self.mark);
        for b in &self.blobs() {
            assert_eq!(
                gets.get(&b.digest).copied().unwrap_or(0),
                1,
                "registry GETs of {}",
                b.digest
            );
        }
    }
}

/// How a [`PrivateImage`]'s registry checks who pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryAuth {
    /// HTTP basic auth (htpasswd).
    Basic,
    /// Bearer tokens from a [`TokenServer`].
    Token,
}

/// A registry that accepts only [`TEST_USER`]/[`TEST_PASSWORD`], holding one small test
/// image (a 4 KiB random layer) pushed with those credentials as an OCI manifest, under a
/// temporary root that lives as long as this.
#[derive(Debug)]
pub struct PrivateImage {
    /// The running registry.
    pub registry: Registry,
    /// The token service it trusts, in [`RegistryAuth::Token`] mode.
    pub tokens: Option<TokenServer>,
    /// What was built.
    pub image: ImageInfo,
    /// The pushed reference (`127.0.0.1:PORT/REPO:v1`).
    pub reference: String,
    /// The temporary root (registry, `tokens`, `layout`; room for the test's files).
    pub root: PathBuf,
    _tmp: TempDir,
}

impl PrivateImage {
    /// Checks [`PUSH_TOOLS`], starts the registry (and token service) under a new
    /// temporary root, builds the image from `seed` and pushes it as `repo:v1`. `None`
    /// when a tool is missing outside CI.
    pub fn start(auth: RegistryAuth, repo: &str, seed: u64) -> Option<Self> {
        if !require_tools(&PUSH_TOOLS) {
            return None;
        }
        let tmp = tempfile::tempdir().expect("temporary directory");
        let root = tmp.path().to_owned();
        let (registry, tokens) = match auth {
            RegistryAuth::Basic => (Registry::start_with_basic_auth(&root), None),
            RegistryAuth::Token => {
                let tokens = TokenServer::start(&root.join("tokens"));
                (
                    Registry::start_with_token_auth(&root, &tokens),
                    Some(tokens),
                )
            }
        };
        let layout = root.join("layout");
        let image = build_test_image(&layout, "v1", 4096, seed);
        let creds = Some((TEST_USER, TEST_PASSWORD));
        let reference = push_image_with(
            &layout,
            "v1",
            &registry.addr(),
            repo,
            PushFormat::Oci,
            creds,
        );
        Some(Self {
            registry,
            tokens,
            image,
            reference,
            root,
            _tmp: tmp,
        })
    }
}

/// Panics unless every blob in `blobs` is in the OCI layout at `layout` and hashes to
/// its digest; `who` names the agent in the message.
pub fn assert_layout_holds(layout: &Path, blobs: &[BlobInfo], who: &str) {
    let dir = layout.join("blobs/sha256");
    for b in blobs {
        let path = dir.join(b.digest.trim_start_matches("sha256:"));
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{who}: {}: {e}", path.display()));
        assert_eq!(
            sha256_digest(&bytes),
            b.digest,
            "{who} holds a wrong {}",
            b.digest
        );
    }
}
