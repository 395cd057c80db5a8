//! Byte-rate caps, so a node moving an image never takes all of a node's network.
//!
//! A token bucket driven by the time passed in (no clock of its own), in "debt" form: a
//! transfer may start whenever the balance is positive and then draws the balance down by
//! its full size, possibly below zero. Chunks are larger than any sensible burst, so this
//! keeps the long-run rate at the cap without splitting chunks, and the burst at most
//! `burst` bytes plus one chunk.

use std::time::{Duration, Instant};

/// A byte-rate cap.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    balance: f64,
    at: Option<Instant>,
}

impl TokenBucket {
    /// A cap of `bytes_per_sec`, with up to `burst` bytes saved up while idle.
    pub fn new(bytes_per_sec: u64, burst: u64) -> Self {
        Self {
            rate: bytes_per_sec.max(1) as f64,
            burst: burst as f64,
            balance: burst as f64,
            at: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let earned = now.saturating_duration_since(at).as_secs_f64() * self.rate;
            self.balance = (self.balance + earned).min(self.burst);
        }
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
    }

    /// Takes `bytes` if the balance is positive now; otherwise returns when it will be.
    ///
    /// # Errors
    /// The instant from which a retry succeeds.
    pub fn try_take(&mut self, bytes: u64, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        if self.balance > 0.0 {
            self.balance -= bytes as f64;
            Ok(())
        } else {
            Err(self.ready_at(now))
        }
    }

    /// Whether a transfer may start now.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.balance > 0.0
    }

    /// Draws `bytes` down unconditionally (after [`TokenBucket::ready`] said yes).
    pub fn take(&mut self, bytes: u64) {
        self.balance -= bytes as f64;
    }

    /// When the balance is next positive (now, if it is).
    pub fn ready_at(&self, now: Instant) -> Instant {
        if self.balance > 0.0 {
            return now;
        }
        // Just past the refill point, so the retry sees a positive balance.
        now + Duration::from_secs_f64(-self.balance / self.rate) + Duration::from_micros(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_run_rate_stays_at_the_cap() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10_000_000, 1_000_000);
        let chunk = 4_000_000;
        let mut now = start;
        let mut sent = 0u64;
        while now < start + Duration::from_secs(10) {
            match bucket.try_take(chunk, now) {
                Ok(()) => sent += chunk,
                Err(at) => {
                    assert!(at > now, "a refusal names a later time");
                    now = at;
                }
            }
        }
        let rate = sent as f64 / 10.0;
        // At most burst + one chunk above the cap over the whole run.
        assert!(rate <= 10_000_000.0 + 5_000_000.0 / 10.0, "{rate}");
        assert!(rate >= 9_000_000.0, "{rate}");
    }

    #[test]
    fn idle_time_saves_up_only_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1_000, 500);
        assert!(bucket.try_take(600, start).is_ok());
        assert!(bucket.try_take(1, start).is_err(), "in debt");
        let later = start + Duration::from_secs(3600);
        assert!(bucket.try_take(400, later).is_ok());
        assert!(bucket.try_take(200, later).is_ok(), "100 left: may start");
        assert!(
            bucket.try_take(1, later).is_err(),
            "an hour idle saved 500, not 3.6 MB"
        );
    }
}
