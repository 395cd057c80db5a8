//! The seeder as a long-running service: seeds images on request (CLI, API, registry
//! notification), remembers a bounded list of its seeding jobs, and joins them with the
//! agents' progress reports into [`ReleaseView`]s.
//!
//! The bookkeeping here does not know how an image is seeded: a [`Backend`] resolves a
//! reference and publishes it. Production uses [`SwarmBackend`] (registry or OCI layout
//! → chunk store → signed release → the seeder's agent); tests hand in an in-memory one,
//! so the job rules and the HTTP API are tested without a swarm or a socket.

mod error;
mod swarm;
mod views;

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use blobswarm_core::escape::Printable;
use blobswarm_core::{Digest, ReleaseId};

use crate::SharedAggregator;
use crate::rollout::{self, ReleaseView, SwarmView};

pub use error::SeedError;
pub use swarm::{IngestProgress, Plan, ProgressFactory, SwarmBackend, local_blobs};
pub use views::{LIST_NODES, MAX_LIST_NODES, MAX_PAGE_NODES, Page};

/// Seeding jobs remembered (oldest dropped first).
pub const MAX_JOBS: usize = 64;

/// What a reference resolved to: what the job bookkeeping needs to know before the
/// (long) ingest, plus the backend's own state to carry into [`Backend::publish`].
#[derive(Debug)]
pub struct Resolution<P> {
    /// The resolved reference agents import under.
    pub reference: String,
    /// Digest of the root document; a second request for the same content reuses the
    /// release already published for it.
    pub root: Digest,
    /// Bytes of all blobs the image needs.
    pub total_bytes: u64,
    /// Number of blobs the image needs (for the log).
    pub blobs: usize,
    /// Whatever the backend needs to publish it.
    pub plan: P,
}

/// How an image gets seeded, in the two steps the bookkeeping sits between: resolve
/// (cheap, tells whether the content is already published) and publish (ingest, sign,
/// hand to the swarm). [`SwarmBackend`] is the production one.
pub trait Backend: Send + Sync + 'static {
    /// State carried from `resolve` to `publish`.
    type Plan: Send;

    /// Resolves `image` to immutable digests.
    ///
    /// # Errors
    /// [`SeedError`] naming the image.
    fn resolve(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Resolution<Self::Plan>, SeedError>> + Send;

    /// Ingests, signs and publishes a resolved image; returns the release id.
    ///
    /// # Errors
    /// [`SeedError`] naming the reference.
    fn publish(
        &self,
        plan: Self::Plan,
    ) -> impl Future<Output = Result<ReleaseId, SeedError>> + Send;

    /// The bans the seeder's own agent holds now (newest first, bounded), for the
    /// views; none by default (a backend without a swarm bans nobody).
    fn banned(&self) -> Vec<blobswarm_peer::Ban> {
        Vec::new()
    }
}

/// One `seed` call's entry in the job list.
#[derive(Debug, Clone)]
struct Job {
    /// Which `seed` call owns this entry: bookkeeping follows the call, not the image,
    /// so two concurrent requests for one image never update each other's entry.
    seq: u64,
    image: String,
    reference: String,
    id: Option<String>,
    total_bytes: u64,
    error: Option<String>,
    /// What the reference resolved to: a second request for the same content reuses the
    /// published release instead of signing another one.
    root: Option<Digest>,
    /// When the release went out (for `--all-nodes`' settle time).
    published_at: Option<Instant>,
}

/// The job list and the next job's sequence number.
#[derive(Debug, Default)]
struct Jobs {
    list: Vec<Job>,
    next_seq: u64,
}

/// The seeder service: seeds through its [`Backend`] one image at a time and answers
/// what the API, `blobswarm status` and the wait gate ask about releases.
pub struct Service<B> {
    backend: B,
    reports: SharedAggregator,
    jobs: Mutex<Jobs>,
    /// Ingest one image at a time: the registry sees each blob once, the disk one writer.
    ingest_lock: tokio::sync::Mutex<()>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<B: Backend> Service<B> {
    /// A service seeding through `backend`; `reports` is the aggregator the seeder's
    /// agent fills with the nodes' progress reports.
    pub fn new(backend: B, reports: SharedAggregator) -> Self {
        Self {
            backend,
            reports,
            jobs: Mutex::new(Jobs::default()),
            ingest_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update(&self, seq: u64, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.jobs().list.iter_mut().find(|j| j.seq == seq) {
            f(j);
        }
    }

    /// True when `image` is being seeded right now (a notification retry is then a no-op).
    pub fn in_flight(&self, image: &str) -> bool {
        self.jobs()
            .list
            .iter()
            .any(|j| j.image == image && j.id.is_none() && j.error.is_none())
    }

    /// Resolves, ingests (each blob read once), signs and publishes `image`; returns the
    /// release id. The job is visible as "seeding" meanwhile and "failed" with the error.
    ///
    /// # Errors
    /// [`SeedError`] from the backend, naming the image or reference.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call leaves its job "seeding" in the list.
    pub async fn seed(&self, image: &str) -> Result<String, SeedError> {
        let seq = self.start_job(image);
        let result = self.run_job(seq, image).await;
        match &result {
            Ok(id) => self.update(seq, |j| {
                j.id = Some(id.clone());
                j.published_at = Some(Instant::now());
            }),
            Err(e) => {
                let msg = e.chain();
                tracing::warn!(image = %Printable(image), error = %Printable(&msg), "seeding failed");
                self.update(seq, |j| j.error = Some(msg));
            }
        }
        result
    }

    /// Adds the "seeding" entry for a new `seed` call, dropping the oldest beyond
    /// [`MAX_JOBS`]; returns its sequence number.
    fn start_job(&self, image: &str) -> u64 {
        let mut jobs = self.jobs();
        let seq = jobs.next_seq;
        jobs.next_seq += 1;
        if jobs.list.len() >= MAX_JOBS {
            jobs.list.remove(0);
        }
        jobs.list.push(Job {
            seq,
            image: image.to_owned(),
            reference: image.to_owned(),
            id: None,
            total_bytes: 0,
            error: None,
            root: None,
            published_at: None,
        });
        seq
    }

    async fn run_job(&self, seq: u64, image: &str) -> Result<String, SeedError> {
        let _one_at_a_time = self.ingest_lock.lock().await;
        let resolved = self.backend.resolve(image).await?;
        if let Some(id) = self.published(&resolved) {
            tracing::info!(release = %id, reference = %Printable(&resolved.reference), "already published; reusing the release");
            self.jobs().list.retain(|j| j.seq != seq);
            return Ok(id);
        }
        self.update(seq, |j| {
            j.reference = resolved.reference.clone();
            j.total_bytes = resolved.total_bytes;
            j.root = Some(resolved.root);
        });
        tracing::info!(reference = %Printable(&resolved.reference), blobs = resolved.blobs, bytes = resolved.total_bytes, "resolved");
        let reference = resolved.reference;
        let id = self.backend.publish(resolved.plan).await?;
        tracing::info!(release = %id, reference = %Printable(&reference), "published");
        Ok(id.to_string())
    }

    /// The release already published for the same content under the same reference.
    fn published(&self, r: &Resolution<B::Plan>) -> Option<String> {
        self.jobs()
            .list
            .iter()
            .rev()
            .find(|j| j.root == Some(r.root) && j.id.is_some() && j.reference == r.reference)
            .and_then(|j| j.id.clone())
    }

    /// The view of one job/release by release id, or by image when no id matches, with
    /// the first [`MAX_PAGE_NODES`] nodes.
    pub fn release(&self, key: &str) -> Option<ReleaseView> {
        self.release_page(key, Page::release(None, None))
    }

    /// [`Service::release`] listing the nodes of `page` (the counts cover every node).
    pub fn release_page(&self, key: &str, page: Page) -> Option<ReleaseView> {
        let job = {
            let jobs = self.jobs();
            jobs.list
                .iter()
                .rev()
                .find(|j| j.id.as_deref() == Some(key))
                .or_else(|| jobs.list.iter().rev().find(|j| j.image == key))
                .cloned()
        }?;
        let (nodes, ignored) = {
            let agg = self.reports_lock();
            (agg.nodes(unix_ms()), agg.ignored())
        };
        let tallies = views::Tallies::new(&nodes);
        Some(views::view(&job, &nodes, &tallies, page, ignored))
    }

    /// Every job, newest first, with the swarm's size and throughput history; each
    /// release lists its first [`LIST_NODES`] nodes.
    pub fn swarm(&self) -> SwarmView {
        self.swarm_page(Page::list(None, None))
    }

    /// [`Service::swarm`] with each release listing the nodes of `page`. The ignored
    /// reports are listed for the swarm; each release repeats only the newest
    /// [`rollout::SHOW_IGNORED`] (what the gate prints), so they cost no more than the
    /// nodes of the page.
    pub fn swarm_page(&self, page: Page) -> SwarmView {
        let jobs: Vec<Job> = self.jobs().list.iter().rev().cloned().collect();
        let agg = self.reports_lock();
        let now = unix_ms();
        let (reporting, lost, throughput, nodes, ignored, ignored_total, nodes_dropped) = (
            agg.reporting(now),
            agg.len().saturating_sub(agg.reporting(now)),
            agg.samples(),
            agg.nodes(now),
            agg.ignored(),
            agg.ignored_total(),
            agg.dropped_total(),
        );
        let reported_bans = agg.reported_bans(now);
        drop(agg);
        let tallies = views::Tallies::new(&nodes);
        // The seeder's own bans first, then those enrolled nodes reported.
        let banned = self
            .backend
            .banned()
            .iter()
            .map(rollout::BanView::from)
            .chain(reported_bans)
            .collect();
        SwarmView {
            nodes: reporting,
            lost,
            throughput,
            releases: jobs
                .iter()
                .map(|j| {
                    let newest = ignored.iter().take(rollout::SHOW_IGNORED).cloned();
                    views::view(j, &nodes, &tallies, page, newest.collect())
                })
                .collect(),
            ignored,
            ignored_total,
            nodes_dropped,
            banned,
        }
    }

    fn reports_lock(&self) -> MutexGuard<'_, crate::Aggregator> {
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
