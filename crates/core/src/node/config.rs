//! Tunables of one node's scheduler.

use std::time::Duration;

/// Limits and timings of the piece scheduler; one per node, validated before use.
#[derive(Debug, Clone)]
pub struct Config {
    /// Chunk requests in flight to one peer: enough to keep a link busy across a round trip.
    pub max_requests_per_peer: usize,
    /// Chunk requests in flight in total: bounds memory held by chunks being received.
    pub max_requests_total: usize,
    /// Newly verified chunks are announced to neighbours at most once per this window:
    /// one message carries several chunks, so control traffic and per-message work stay
    /// low, at the cost of up to this much delay per hop. Zero announces each at once.
    pub have_batch: Duration,
    /// A request unanswered for this long fails and its peer is backed off.
    pub request_timeout: Duration,
    /// How long a peer that failed a request is left alone.
    pub failure_backoff: Duration,
    /// How long a peer that served corrupt data is ignored.
    pub ban_duration: Duration,
    /// Seeder policy: hand each chunk out once before any chunk a second time, so peers
    /// spread it and the seeder's upload stays near one copy of the image.
    pub super_seed: bool,
    /// A super-seeder declines an over-served chunk only if it served it this recently;
    /// after that it serves it anyway, so a swarm never waits on one slow peer for long.
    pub super_seed_window: Duration,
    /// Seeder policy on top of `super_seed`: a chunk handed out is declined to everyone
    /// else for `super_seed_window` while the peer that got it stays connected, so that
    /// peer (and the ones it serves) carry every further copy and the seeder uploads the
    /// image about once. A disconnect or the window's end frees the chunk again, so a
    /// peer that died with it never holds the swarm up for long.
    pub upload_once: bool,
    /// After a `Busy` answer for a chunk, do not ask that peer for that chunk for this long.
    pub busy_backoff: Duration,
    /// Chunks served at once in total: bounds memory held by chunks being sent.
    pub max_uploads: usize,
    /// Chunks served at once to one peer, so no neighbour takes every slot.
    pub max_uploads_per_peer: usize,
    /// After an `Overloaded` answer, leave that peer alone for this long.
    pub overload_backoff: Duration,
    /// Fair rotation: a freed upload slot is held this long for the peer refused longest
    /// ago, so peers that re-ask fastest cannot keep every slot (longer than
    /// `overload_backoff`, so the refused peer's retry arrives in time).
    pub slot_reservation: Duration,
    /// Cap on chunk bytes served per second (None: no cap). A capped node answers
    /// `Overloaded`, so requesters go elsewhere rather than queue.
    pub max_upload_rate: Option<u64>,
    /// Cap on chunk bytes requested per second (None: no cap).
    pub max_download_rate: Option<u64>,
    /// Blobs downloaded at once (None: all): with a cap, a node finishes some layers
    /// early instead of all of them late, and holds fewer partial files.
    pub max_active_blobs: Option<usize>,
    /// Herd guard (see `node::herd`): set on nodes that can fetch chunks from the
    /// registry themselves when no seeder is left.
    pub herd: Option<super::HerdConfig>,
    /// Seeder side: how often a node that published a release says it is alive.
    pub heartbeat: Option<Duration>,
    /// After a chunk could not be stored locally (disk full, I/O error), no chunk is
    /// requested for this long: the download pauses instead of spinning on fetches that
    /// cannot land, and resumes by itself once the disk takes writes again.
    pub store_error_pause: Duration,
    /// Seed of the random choices (tie-breaks, peer order); fixed seeds make runs repeatable.
    pub rng_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_requests_per_peer: 2,
            max_requests_total: 8,
            have_batch: Duration::ZERO,
            request_timeout: Duration::from_secs(30),
            failure_backoff: Duration::from_secs(3),
            ban_duration: Duration::from_secs(600),
            super_seed: false,
            super_seed_window: Duration::from_secs(5),
            upload_once: true,
            busy_backoff: Duration::from_secs(1),
            // Few slots on purpose: every slot beyond what keeps the uplink busy only adds
            // queueing delay to each chunk. The simulator (200 peers x 3 GiB) gives p99 / lower
            // bound 1.10 with 6 slots against 1.63 with 16.
            max_uploads: 6,
            max_uploads_per_peer: 2,
            overload_backoff: Duration::from_millis(200),
            slot_reservation: Duration::from_millis(300),
            max_upload_rate: None,
            max_download_rate: None,
            max_active_blobs: None,
            herd: None,
            heartbeat: Some(Duration::from_secs(2)),
            store_error_pause: Duration::from_secs(3),
            rng_seed: 0,
        }
    }
}

/// A config value that breaks an invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scheduler config: {0}")]
pub struct ConfigError(pub &'static str);

impl Config {
    /// Sets the random seed.
    pub fn with_rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = seed;
        self
    }

    /// Turns the super-seeding serve policy on or off.
    pub fn with_super_seed(mut self, on: bool) -> Self {
        self.super_seed = on;
        self
    }

    /// Checks invariants.
    ///
    /// # Errors
    /// [`ConfigError`] naming the broken invariant.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_requests_per_peer == 0 {
            return Err(ConfigError("max_requests_per_peer must be at least 1"));
        }
        if self.max_requests_total < self.max_requests_per_peer {
            return Err(ConfigError(
                "max_requests_total must be at least max_requests_per_peer",
            ));
        }
        if self.max_uploads == 0 || self.max_uploads_per_peer == 0 {
            return Err(ConfigError("upload slots must be at least 1"));
        }
        if self.max_upload_rate == Some(0) || self.max_download_rate == Some(0) {
            return Err(ConfigError("rate caps must be positive"));
        }
        if self.max_active_blobs == Some(0) {
            return Err(ConfigError("max_active_blobs must be at least 1"));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError("request_timeout must be positive"));
        }
        Ok(())
    }
}
