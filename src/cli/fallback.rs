//! Plugs the seeder crate's registry range reader into the agent's herd guard.

use std::ops::Range;
use std::sync::Arc;

use blobswarm_core::Digest;
use blobswarm_peer::{FallbackError, RegistryFallback};
use blobswarm_seeder::source::{CredentialHelpers, RegistryRanges, SourceOptions};
use bytes::Bytes;
use futures::future::BoxFuture;

/// Agent flags that turn the herd guard on: which registries it may read, and how.
#[derive(Debug, clap::Args)]
pub(crate) struct FallbackArgs {
    /// Registry (`host:port` as written in image references) this node may read a chunk
    /// from when no peer has it and the seeder is gone (the herd guard: one node per
    /// chunk, cluster-wide). Repeat for several; none turns the guard off.
    #[arg(long)]
    registry_fallback: Vec<String>,
    /// Registry (`host:port`) to reach over plain HTTP; repeat for several.
    #[arg(long)]
    insecure_registry: Vec<String>,
    /// Registry user name (else docker config.json: its credential helper or auths entry;
    /// else anonymous).
    #[arg(long, env = "BLOBSWARM_REGISTRY_USERNAME")]
    registry_username: Option<String>,
    /// Registry password; read from the environment so it never shows in `ps`.
    #[arg(long, env = "BLOBSWARM_REGISTRY_PASSWORD", hide_env_values = true)]
    registry_password: Option<String>,
    /// Registry credentials file, used when no username/password is given: a docker
    /// config.json, or a Kubernetes image pull secret (the mounted `.dockerconfigjson`
    /// file, or the Secret itself as JSON or YAML).
    #[arg(long, env = "BLOBSWARM_REGISTRY_AUTH_FILE")]
    registry_auth_file: Option<std::path::PathBuf>,
    /// Testing only: herd-guard timings in hundreds of milliseconds instead of seconds.
    #[arg(long, hide = true)]
    herd_fast: bool,
}

impl FallbackArgs {
    /// The reader to plug into the agent, when any registry is allowed.
    pub(crate) fn fallback(&self) -> Option<Arc<dyn RegistryFallback>> {
        if self.registry_fallback.is_empty() {
            return None;
        }
        let opts = SourceOptions {
            platform: None,
            insecure_registries: self.insecure_registry.clone(),
            username: self.registry_username.clone(),
            password: self.registry_password.clone(),
            // The agent reads only allow-listed registries (`--registry-fallback`).
            credentials_for: None,
            auth_file: self.registry_auth_file.clone(),
            read_timeout: None,
            credential_helpers: CredentialHelpers::default(),
        };
        Some(Arc::new(Fallback(Arc::new(RegistryRanges::new(
            self.registry_fallback.clone(),
            opts,
        )))))
    }

    /// Test-only herd-guard timings for `identity`; `None` leaves the defaults, which
    /// `blobswarm_peer::spawn` fills in whenever a registry fallback is plugged in.
    pub(crate) fn herd_config(
        &self,
        identity: Vec<u8>,
    ) -> Option<blobswarm_core::node::HerdConfig> {
        if self.registry_fallback.is_empty() || !self.herd_fast {
            return None;
        }
        use std::time::Duration;
        let mut c = blobswarm_core::node::HerdConfig::new(identity);
        c.after = Duration::from_millis(3000);
        c.grace = Duration::from_millis(300);
        c.spread = Duration::from_millis(1000);
        c.settle = Duration::from_millis(800);
        c.scan_interval = Duration::from_millis(200);
        // Chunks come from a local registry in milliseconds; a void claim (issue #18,
        // finding 8) should cost a test seconds, not minutes.
        c.claim_ttl = Duration::from_millis(4000);
        Some(c)
    }
}

#[derive(Debug)]
struct Fallback(Arc<RegistryRanges>);

impl RegistryFallback for Fallback {
    fn read_range(
        &self,
        reference: String,
        blob: Digest,
        range: Range<u64>,
    ) -> BoxFuture<'static, Result<Bytes, FallbackError>> {
        let ranges = Arc::clone(&self.0);
        Box::pin(async move {
            match ranges.fetch(&reference, &blob, range).await {
                Ok(bytes) => Ok(bytes),
                Err(e) => Err(FallbackError {
                    reference,
                    blob,
                    source: e.into(),
                }),
            }
        })
    }
}
