//! Exponential back-off with jitter, so many agents do not retry in lock-step.

use std::time::Duration;

/// First wait after a failure.
const INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX: Duration = Duration::from_secs(30);

/// Doubles the wait after each failure, up to [`MAX`]; each wait is jittered to 50–150%.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// A back-off starting at its initial wait.
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Backoff { next: INITIAL, rng: seed | 1 }
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(MAX);
        // xorshift64: plenty for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let factor = 0.5 + (self.rng % 1000) as f64 / 1000.0;
        base.mul_f64(factor)
    }

    /// After a success: start again from the initial wait.
    pub fn reset(&mut self) {
        self.next = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new();
        let first = backoff.next_wait();
        assert!(first >= INITIAL / 2 && first <= INITIAL * 3 / 2, "{first:?}");
        let mut last = first;
        for _ in 0..20 {
            last = backoff.next_wait();
            assert!(last <= MAX * 3 / 2, "{last:?}");
        }
        assert!(last >= MAX / 2, "reaches the cap: {last:?}");
        backoff.reset();
        assert!(backoff.next_wait() <= INITIAL * 3 / 2);
    }
}
