//! Progress of one seeder ingest (bytes of blobs pulled and hashed): an indicatif bar when
//! a person watches a one-shot `seed IMAGE` on a terminal, otherwise a log line at every
//! 10 % so a long ingest in a pod's log or a CI job still shows that it moves.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use indicatif::{ProgressBar, ProgressStyle};

/// Counts ingested bytes and shows them.
pub(crate) struct IngestProgress {
    reference: String,
    total: u64,
    done: AtomicU64,
    /// Tenths of `total` already logged (log-line mode).
    logged: AtomicU64,
    bar: Option<ProgressBar>,
}

impl blobswarm_seeder::service::IngestProgress for IngestProgress {
    fn add(&self, bytes: u64) {
        Self::add(self, bytes);
    }

    fn finish(&self) {
        Self::finish(self);
    }
}

impl IngestProgress {
    /// `bar`: draw a bar (the caller checked that stderr is a terminal).
    pub(crate) fn new(reference: &str, total: u64, bar: bool) -> Self {
        let bar = bar.then(|| {
            ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "ingest {bar:40} {bytes:>10}/{total_bytes:<10} {bytes_per_sec} eta {eta}",
                )
                .expect("static template"),
            )
        });
        Self {
            reference: reference.to_owned(),
            total,
            done: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            bar,
        }
    }

    /// Bytes of one more buffer read and hashed.
    pub(crate) fn add(&self, n: u64) {
        let done = self.done.fetch_add(n, Relaxed) + n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
            return;
        }
        let tenth = tenths(done, self.total);
        if tenth > self.logged.fetch_max(tenth, Relaxed) && tenth < 10 {
            tracing::info!(reference = %self.reference, bytes = done, total = self.total, percent = tenth * 10, "ingesting");
        }
    }

    /// Ends the bar (log-line mode: the caller logs the outcome).
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Whole tenths of `total` that `done` covers (10 when complete or `total` is 0).
fn tenths(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 10;
    }
    (u128::from(done.min(total)) * 10 / u128::from(total)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenths_and_counting() {
        assert_eq!(tenths(0, 100), 0);
        assert_eq!(tenths(9, 100), 0);
        assert_eq!(tenths(10, 100), 1);
        assert_eq!(tenths(99, 100), 9);
        assert_eq!(tenths(200, 100), 10);
        assert_eq!(tenths(0, 0), 10);
        assert_eq!(tenths(u64::MAX, u64::MAX), 10);
        let p = IngestProgress::new("img", 1000, false);
        p.add(150);
        p.add(300);
        assert_eq!(p.done.load(Relaxed), 450);
        assert_eq!(p.logged.load(Relaxed), 4);
        p.finish();
    }
}
