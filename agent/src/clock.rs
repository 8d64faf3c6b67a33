//! The one clock: wall time for exports, and the offset that turns the BPF programs'
//! `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) timestamps into wall time.
//!
//! The offset is taken once at start, so every signal (samples, spans, metrics) converts kernel
//! timestamps the same way and stays comparable.

use std::time::{SystemTime, UNIX_EPOCH};

/// Converts kernel timestamps to Unix time. Copy it freely: it is one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// Wall-clock time minus CLOCK_MONOTONIC, in nanoseconds.
    monotonic_to_unix_ns: u64,
}

impl Clock {
    /// Measures the offset now.
    pub fn new() -> Self {
        let mut monotonic = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid pointer to a timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut monotonic) };
        let monotonic_ns = monotonic.tv_sec as u64 * 1_000_000_000 + monotonic.tv_nsec as u64;
        Clock { monotonic_to_unix_ns: unix_now_ns().wrapping_sub(monotonic_ns) }
    }

    /// A clock with a given offset, for tests.
    #[cfg(test)]
    pub fn with_offset(monotonic_to_unix_ns: u64) -> Self {
        Clock { monotonic_to_unix_ns }
    }

    /// A BPF timestamp as nanoseconds since the Unix epoch.
    pub fn to_unix_ns(self, kernel_ns: u64) -> u64 {
        kernel_ns.wrapping_add(self.monotonic_to_unix_ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_now_maps_to_wall_now() {
        let clock = Clock::new();
        let mut monotonic = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut monotonic) };
        let kernel_now = monotonic.tv_sec as u64 * 1_000_000_000 + monotonic.tv_nsec as u64;
        let skew = clock.to_unix_ns(kernel_now).abs_diff(unix_now_ns());
        assert!(skew < 50_000_000, "{skew} ns");
    }
}
