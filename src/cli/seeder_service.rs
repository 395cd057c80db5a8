//! The seeder as a long-running service: seeds images on request (CLI, API, registry
//! notification), remembers a bounded list of its seeding jobs, and joins them with the
//! agents' progress reports into [`ReleaseView`]s.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use blobswarm_peer::{AgentHandle, Metrics};
use blobswarm_seeder::source::{Source, SourceOptions};
use libp2p::identity::Keypair;

use super::rollout::{self, NodeState, ReleaseView, SwarmView};

/// Seeding jobs remembered (oldest dropped first).
const MAX_JOBS: usize = 64;

/// Everything the seeder needs to seed one more image.
pub(crate) struct SeederService {
    pub(crate) agent: AgentHandle,
    pub(crate) metrics: Arc<Metrics>,
    key: Keypair,
    options: SourceOptions,
    chunk_size: u32,
    ttl: Option<Duration>,
    jobs: Mutex<Vec<Job>>,
    next_seq: std::sync::atomic::AtomicU64,
    /// Ingest one image at a time: the registry sees each blob once, the disk one writer.
    ingest_lock: tokio::sync::Mutex<()>,
    /// Draw an ingest progress bar (one-shot `seed IMAGE` on a terminal); else log lines.
    progress_bar: bool,
}

#[derive(Clone)]
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
    root: Option<blobswarm_core::Digest>,
    /// When the release went out (for `--all-nodes`' settle time).
    published_at: Option<std::time::Instant>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl SeederService {
    pub(crate) fn new(
        agent: AgentHandle,
        metrics: Arc<Metrics>,
        key: Keypair,
        options: SourceOptions,
        chunk_size: u32,
        ttl: Option<Duration>,
    ) -> Self {
        Self {
            agent,
            metrics,
            key,
            options,
            chunk_size,
            ttl,
            jobs: Mutex::new(Vec::new()),
            next_seq: std::sync::atomic::AtomicU64::new(0),
            ingest_lock: tokio::sync::Mutex::new(()),
            progress_bar: false,
        }
    }

    /// Shows ingest progress as an indicatif bar on stderr instead of log lines.
    pub(crate) fn with_progress_bar(mut self, on: bool) -> Self {
        self.progress_bar = on;
        self
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, seq: u64, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.jobs().iter_mut().find(|j| j.seq == seq) {
            f(j);
        }
    }

    /// True when `image` is being seeded right now (a notification retry is then a no-op).
    pub(crate) fn in_flight(&self, image: &str) -> bool {
        self.jobs()
            .iter()
            .any(|j| j.image == image && j.id.is_none() && j.error.is_none())
    }

    /// Resolves, ingests (each blob read once), signs and publishes `image`; returns the
    /// release id. The job is visible as "seeding" meanwhile and "failed" with the error.
    pub(crate) async fn seed(&self, image: &str) -> anyhow::Result<String> {
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut jobs = self.jobs();
            if jobs.len() >= MAX_JOBS {
                jobs.remove(0);
            }
            jobs.push(Job {
                seq,
                image: image.to_owned(),
                reference: image.to_owned(),
                id: None,
                total_bytes: 0,
                error: None,
                root: None,
                published_at: None,
            });
        }
        let result = self.seed_inner(seq, image).await;
        match &result {
            Ok(id) => self.update(seq, |j| {
                j.id = Some(id.clone());
                j.published_at = Some(std::time::Instant::now());
            }),
            Err(e) => {
                let msg = format!("{e:#}");
                tracing::warn!(%image, error = %msg, "seeding failed");
                self.update(seq, |j| j.error = Some(msg));
            }
        }
        result
    }

    async fn seed_inner(&self, seq: u64, image: &str) -> anyhow::Result<String> {
        let _one_at_a_time = self.ingest_lock.lock().await;
        let source = Source::parse(image, self.options.clone())
            .with_context(|| format!("parsing image reference {image}"))?;
        let resolved = source
            .resolve()
            .await
            .with_context(|| format!("resolving {image}"))?;
        let total: u64 = resolved.blobs.iter().map(|b| b.size).sum();
        let root = resolved.root.digest;
        let published = self
            .jobs()
            .iter()
            .rev()
            .find(|j| j.root == Some(root) && j.id.is_some() && j.reference == resolved.reference)
            .and_then(|j| j.id.clone());
        if let Some(id) = published {
            tracing::info!(release = %id, reference = %resolved.reference, "already published; reusing the release");
            self.jobs().retain(|j| j.seq != seq);
            return Ok(id);
        }
        self.update(seq, |j| {
            j.reference = resolved.reference.clone();
            j.total_bytes = total;
            j.root = Some(root);
        });
        tracing::info!(reference = %resolved.reference, blobs = resolved.blobs.len(), bytes = total, "resolved");
        let store = Arc::clone(self.agent.store());
        let progress = super::ingest_progress::IngestProgress::new(
            &resolved.reference,
            total,
            self.progress_bar,
        );
        let blobs = blobswarm_seeder::ingest(&source, &resolved, &store, self.chunk_size, &|n| {
            progress.add(n);
        })
        .await
        .with_context(|| format!("ingesting {}", resolved.reference))?;
        progress.finish();
        for b in &blobs {
            if b.bytes_read > 0 {
                self.metrics.registry_blob_read(b.bytes_read);
            }
        }
        let signed =
            blobswarm_seeder::sign_release(&resolved, &blobs, &self.key, unix_ms(), self.ttl)?;
        let id = self
            .agent
            .publish(super::local_blobs(blobs), signed)
            .await?;
        tracing::info!(release = %id, reference = %resolved.reference, "published");
        Ok(id.to_string())
    }

    /// The view of one job/release by release id, or by image when no id matches.
    pub(crate) fn release(&self, key: &str) -> Option<ReleaseView> {
        let job = {
            let jobs = self.jobs();
            jobs.iter()
                .rev()
                .find(|j| j.id.as_deref() == Some(key))
                .or_else(|| jobs.iter().rev().find(|j| j.image == key))
                .cloned()
        }?;
        Some(self.view(&job))
    }

    /// Every job, newest first, with the swarm's size and throughput history.
    pub(crate) fn swarm(&self) -> SwarmView {
        let jobs: Vec<Job> = self.jobs().iter().rev().cloned().collect();
        let agg = self
            .agent
            .reports()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = unix_ms();
        let (nodes, lost, throughput, ignored, ignored_total) = (
            agg.reporting(now),
            agg.len().saturating_sub(agg.reporting(now)),
            agg.samples(),
            agg.ignored(),
            agg.ignored_total(),
        );
        drop(agg);
        SwarmView {
            nodes,
            lost,
            throughput,
            releases: jobs.iter().map(|j| self.view(j)).collect(),
            ignored,
            ignored_total,
        }
    }

    fn view(&self, job: &Job) -> ReleaseView {
        let (nodes, ignored) = {
            let agg = self
                .agent
                .reports()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (agg.nodes(unix_ms()), agg.ignored())
        };
        let state = match (&job.id, &job.error) {
            (_, Some(_)) => "failed",
            (Some(_), None) => "published",
            (None, None) => "seeding",
        };
        ReleaseView {
            id: job.id.clone().unwrap_or_default(),
            image: job.image.clone(),
            reference: job.reference.clone(),
            state: state.into(),
            error: job.error.clone(),
            total_bytes: job.total_bytes,
            published_age_ms: job
                .published_at
                .map_or(0, |t| t.elapsed().as_millis() as u64),
            nodes: nodes
                .into_iter()
                .map(|n| {
                    let r = job
                        .id
                        .as_ref()
                        .and_then(|id| n.releases.iter().find(|r| &r.release == id));
                    // A silent node counts as not done whatever it said last: the gate
                    // must not pass over a node that may have died mid-import.
                    let (state, reason) = if n.lost {
                        ("lost".to_owned(), Some(rollout::lost_reason(n.age_ms)))
                    } else {
                        (
                            r.map_or_else(|| "missing".into(), |r| r.state.clone()),
                            r.and_then(|r| r.reason.clone()),
                        )
                    };
                    NodeState {
                        node: n.node,
                        peer: n.peer,
                        state,
                        reason,
                        have_bytes: r.map_or(0, |r| r.have_bytes),
                        rate: r.map_or(0, |r| r.rate),
                        peers: n.peers,
                        age_ms: n.age_ms,
                    }
                })
                .collect(),
            ignored,
        }
    }
}
