//! Retry delays: exponential backoff with "full jitter" (a uniformly random delay between zero
//! and the exponential ceiling), which spreads retries of many failed deliveries over time
//! instead of having them hit a recovering provider in synchronized waves.

use std::time::Duration;

use rand::Rng;

/// The ceiling of the delay before retry number `attempt` (1 = first retry):
/// `min(cap, base * 2^(attempt - 1))`. Never overflows, whatever `attempt` is; `attempt` 0 is
/// treated as 1.
pub fn max_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = attempt.saturating_sub(1);
    1u32.checked_shl(exp)
        .and_then(|f| base.checked_mul(f))
        .map_or(cap, |d| d.min(cap))
}

/// The delay before retry number `attempt` (1 = first retry): uniform in
/// `[0, max_delay(attempt, base, cap)]`.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration, rng: &mut impl Rng) -> Duration {
    let ceiling = max_delay(attempt, base, cap);
    // Nanoseconds fit in u64 for any delay under ~584 years; clamp beyond that.
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const BASE: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(600);

    #[test]
    fn ceiling_doubles_then_caps() {
        assert_eq!(max_delay(1, BASE, CAP), Duration::from_millis(500));
        assert_eq!(max_delay(2, BASE, CAP), Duration::from_secs(1));
        assert_eq!(max_delay(3, BASE, CAP), Duration::from_secs(2));
        assert_eq!(max_delay(11, BASE, CAP), Duration::from_secs(512));
        assert_eq!(max_delay(12, BASE, CAP), CAP);
        assert_eq!(max_delay(0, BASE, CAP), BASE);
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        for attempt in [31, 32, 33, 64, 1000, u32::MAX] {
            assert_eq!(max_delay(attempt, BASE, CAP), CAP, "attempt {attempt}");
        }
        assert_eq!(
            max_delay(u32::MAX, Duration::MAX, Duration::MAX),
            Duration::MAX
        );
        assert_eq!(max_delay(2, Duration::MAX, Duration::MAX), Duration::MAX);
        let mut rng = StdRng::seed_from_u64(1);
        assert!(retry_delay(u32::MAX, Duration::MAX, Duration::MAX, &mut rng) <= Duration::MAX);
    }

    #[test]
    fn delays_stay_within_bounds_and_are_jittered() {
        let mut rng = StdRng::seed_from_u64(42);
        for attempt in 1..=20 {
            let ceiling = max_delay(attempt, BASE, CAP);
            let samples: Vec<Duration> = (0..200)
                .map(|_| retry_delay(attempt, BASE, CAP, &mut rng))
                .collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: values spread over the whole range, not clustered at the ceiling.
            assert!(
                samples.iter().any(|d| *d < ceiling / 2),
                "attempt {attempt}"
            );
            assert!(
                samples.iter().any(|d| *d > ceiling / 2),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn zero_base_gives_zero() {
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(
            retry_delay(5, Duration::ZERO, CAP, &mut rng),
            Duration::ZERO
        );
    }
}
