//! Per-key send-rate limits (e.g. per tenant, per sending domain), as a token bucket.
//!
//! Implemented as GCRA (the "virtual scheduling" form of a token bucket): each key keeps the
//! theoretical arrival time `tat` of the next token. A caller reserves its slot under a short
//! lock and then sleeps (once, with `tokio::time::sleep`) until that slot, so concurrent callers
//! on one key are served in call order and nobody polls or spins. Over any window of length
//! `t`, at most `burst + per_second * t` acquisitions complete (up to Tokio's timer
//! granularity: a sleep ends at the next whole millisecond, so one wake-up may be up to 1 ms
//! late relative to the one before it; the long-run rate is exact).
//!
//! A caller whose `acquire` future is dropped while it waits has still used its slot: the rate
//! is never exceeded, at the price of a little unused capacity.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

/// Buckets are swept (full ones dropped: a fresh bucket is the same thing) once the map grows
/// past this many keys since the last sweep.
const SWEEP_EVERY: usize = 1024;

struct Inner<K> {
    /// Theoretical arrival time of the next token, per key.
    tat: HashMap<K, Instant>,
    sweep_at: usize,
}

/// A per-key token-bucket rate limiter. Cheap to clone (shared state).
pub struct RateLimiter<K = Uuid> {
    inner: Arc<Mutex<Inner<K>>>,
}

impl<K> Clone for RateLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter<Uuid> {
    /// A limiter keyed by `Uuid` (tenant id, sender id, ...).
    pub fn new() -> Self {
        Self::keyed()
    }
}

impl Default for RateLimiter<Uuid> {
    fn default() -> Self {
        Self::new()
    }
}

/// The interval between two tokens at `per_second`, rounded up so rounding never lets more
/// than `per_second` tokens through per second.
fn emission_interval(per_second: u32) -> Duration {
    Duration::from_nanos(1_000_000_000u64.div_ceil(u64::from(per_second)))
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter keyed by any hashable key.
    pub fn keyed() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                tat: HashMap::new(),
                sweep_at: SWEEP_EVERY,
            })),
        }
    }

    /// Waits until `key` may send one more message at `per_second` with bursts of up to
    /// `burst` (0 is treated as 1). `per_second == 0` means unlimited: returns at once.
    ///
    /// The limits are given per call, so a changed tenant setting applies from the next call.
    pub async fn acquire(&self, key: K, per_second: u32, burst: u32) {
        if let Some(wait_until) = self.reserve(key, per_second, burst, Instant::now()) {
            tokio::time::sleep_until(wait_until).await;
        }
    }

    /// Takes a token for `key` if one is available right now, without waiting.
    pub fn try_acquire(&self, key: K, per_second: u32, burst: u32) -> bool {
        if per_second == 0 {
            return true;
        }
        let now = Instant::now();
        let (interval, tolerance) = params(per_second, burst);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let tat = inner.tat.get(&key).copied().unwrap_or(now).max(now);
        if tat.saturating_duration_since(now) > tolerance {
            return false;
        }
        inner.tat.insert(key, tat + interval);
        true
    }

    /// Reserves the next slot for `key`; `Some(t)` if the caller has to wait until `t`.
    fn reserve(&self, key: K, per_second: u32, burst: u32, now: Instant) -> Option<Instant> {
        if per_second == 0 {
            return None;
        }
        let (interval, tolerance) = params(per_second, burst);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.tat.len() >= inner.sweep_at {
            inner.tat.retain(|_, tat| *tat > now);
            inner.sweep_at = inner.tat.len() + SWEEP_EVERY;
        }
        let tat = inner.tat.get(&key).copied().unwrap_or(now).max(now);
        inner.tat.insert(key, tat + interval);
        // The token is available once the bucket, drained up to `tat`, has room again.
        let allowed_at = tat.checked_sub(tolerance).unwrap_or(now);
        (allowed_at > now).then_some(allowed_at)
    }
}

/// (emission interval, burst tolerance): a bucket of `burst` tokens refilled at `per_second`.
fn params(per_second: u32, burst: u32) -> (Duration, Duration) {
    let interval = emission_interval(per_second);
    let tolerance = interval.saturating_mul(burst.max(1) - 1);
    (interval, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `n` concurrent acquirers on one key and returns their completion times (offsets from
    /// the start), in the order they completed.
    async fn completion_offsets(
        limiter: &RateLimiter,
        key: Uuid,
        n: usize,
        rate: u32,
        burst: u32,
    ) -> Vec<Duration> {
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..n {
            let limiter = limiter.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                limiter.acquire(key, rate, burst).await;
                let _ = tx.send(Instant::now() - start);
            });
        }
        drop(tx);
        let mut out = Vec::new();
        while let Some(t) = rx.recv().await {
            out.push(t);
        }
        out.sort();
        out
    }

    /// tokens completed within any window [a, b] must be <= burst + rate * (b - a), give or take
    /// Tokio's 1 ms timer granularity.
    fn assert_rate_bound(times: &[Duration], rate: u32, burst: u32) {
        const TIMER_GRANULARITY: Duration = Duration::from_millis(1);
        for (i, a) in times.iter().enumerate() {
            for (j, b) in times.iter().enumerate().skip(i) {
                let in_window = (j - i + 1) as f64;
                let window = *b - *a + TIMER_GRANULARITY;
                let allowed = f64::from(burst) + f64::from(rate) * window.as_secs_f64();
                assert!(
                    in_window <= allowed + 1e-9,
                    "{in_window} tokens within {:?} (rate {rate}, burst {burst})",
                    *b - *a
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn burst_is_immediate_then_rate_applies() {
        let limiter = RateLimiter::new();
        let key = Uuid::new_v4();
        let times = completion_offsets(&limiter, key, 25, 10, 5).await;
        assert_eq!(times.len(), 25);
        // The first `burst` go at once.
        assert!(times[..5].iter().all(|t| t.is_zero()), "{times:?}");
        assert!(!times[5].is_zero());
        // Then one every 100 ms: the 25th token at 2.0 s.
        assert_eq!(times[24], Duration::from_secs(2));
        assert_rate_bound(&times, 10, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn odd_rates_never_exceed_the_bound() {
        for (rate, burst) in [(3, 1), (7, 2), (1, 3), (1000, 10)] {
            let limiter = RateLimiter::new();
            let times = completion_offsets(&limiter, Uuid::new_v4(), 40, rate, burst).await;
            assert_eq!(times.len(), 40);
            assert_rate_bound(&times, rate, burst);
            // And the long-run rate is not lower than asked: the 40th token is due at
            // (40 - burst) / rate seconds.
            let due = Duration::from_secs_f64(f64::from(40 - burst) / f64::from(rate));
            let last = *times.last().unwrap();
            assert!(
                last >= due && last <= due + Duration::from_millis(2),
                "{last:?} vs {due:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_independent_and_zero_means_unlimited() {
        let limiter = RateLimiter::new();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let start = Instant::now();
        limiter.acquire(a, 1, 1).await;
        limiter.acquire(b, 1, 1).await;
        assert_eq!(Instant::now(), start, "first token of each key is free");
        for _ in 0..1000 {
            limiter.acquire(a, 0, 0).await;
        }
        assert_eq!(Instant::now(), start, "rate 0 is unlimited");
        limiter.acquire(a, 1, 1).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_bucket_refills_up_to_burst_only() {
        let limiter = RateLimiter::new();
        let key = Uuid::new_v4();
        for _ in 0..3 {
            limiter.acquire(key, 2, 3).await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        // A long idle period refills the bucket to `burst`, not to 120 tokens.
        let times = completion_offsets(&limiter, key, 6, 2, 3).await;
        assert_eq!(
            times,
            vec![
                Duration::ZERO,
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_millis(1000),
                Duration::from_millis(1500),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn try_acquire_does_not_wait() {
        let limiter = RateLimiter::new();
        let key = Uuid::new_v4();
        assert!(limiter.try_acquire(key, 1, 2));
        assert!(limiter.try_acquire(key, 1, 2));
        assert!(!limiter.try_acquire(key, 1, 2));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(limiter.try_acquire(key, 1, 2));
        assert!(!limiter.try_acquire(key, 1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn generic_keys_and_sweeping() {
        let limiter: RateLimiter<String> = RateLimiter::keyed();
        for i in 0..3000 {
            limiter.acquire(format!("k{i}"), 1000, 1).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let len = limiter.inner.lock().unwrap().tat.len();
        assert!(len <= SWEEP_EVERY + 1, "idle buckets are swept: {len}");
    }
}
