//! Pairing the off-CPU sampler's records: a sample taken as a thread was switched out, and,
//! when it runs again, how long it was off CPU (`agent-ebpf/src/off_cpu.rs`). The sample
//! waits here, by (thread, switch-out time), for its end.

use std::collections::{HashMap, VecDeque};

use crate::{links::RequestKey, profile::SampleKey};

/// Switch-outs waiting for their ends, at most: as many threads as the kernel side tracks
/// off CPU at once. Past it, the oldest is given up (counted).
const MAX_PENDING: usize = 16_384;

/// A recorded switch-out.
#[derive(Debug, Clone, Copy)]
pub struct SwitchOut {
    /// Process, thread, names and stack.
    pub key: SampleKey,
    /// CPU it was switched out on.
    pub cpu: u32,
    /// When (`CLOCK_MONOTONIC`, ns).
    pub switched_out_ns: u64,
    /// The HTTP request the thread was serving, if any.
    pub request: Option<RequestKey>,
}

/// What pairing has seen, for the closing line.
#[derive(Debug, Default, Clone, Copy)]
pub struct OffCpuCounts {
    /// Switch-outs paired with their ends.
    pub events: u64,
    /// Nanoseconds off CPU of those.
    pub nanoseconds: u64,
    /// Ends whose switch-out was not seen (its sample lost, or taken before oxeye read).
    pub unmatched_ends: u64,
    /// Switch-outs given up waiting, past [`MAX_PENDING`].
    pub given_up: u64,
}

/// Switch-outs waiting for their ends.
#[derive(Debug, Default)]
pub struct OffCpuPairs {
    pending: HashMap<(u32, u64), SwitchOut>,
    /// Arrival order, for giving up the oldest; may hold keys already paired.
    order: VecDeque<(u32, u64)>,
    /// Counters.
    pub counts: OffCpuCounts,
}

impl OffCpuPairs {
    /// Thread `tid` was switched out.
    pub fn switched_out(&mut self, tid: u32, out: SwitchOut) {
        if self.pending.len() >= MAX_PENDING {
            while let Some(oldest) = self.order.pop_front() {
                if self.pending.remove(&oldest).is_some() {
                    self.counts.given_up += 1;
                    break;
                }
            }
        }
        if self.order.len() >= 2 * MAX_PENDING {
            let pending = &self.pending;
            self.order.retain(|key| pending.contains_key(key));
        }
        let key = (tid, out.switched_out_ns);
        self.order.push_back(key);
        self.pending.insert(key, out);
    }

    /// Thread `tid`, switched out at `switched_out_ns`, ran again `off_cpu_ns` later: its
    /// switch-out, if it was seen.
    pub fn switched_in(&mut self, tid: u32, switched_out_ns: u64, off_cpu_ns: u64) -> Option<SwitchOut> {
        let Some(out) = self.pending.remove(&(tid, switched_out_ns)) else {
            self.counts.unmatched_ends += 1;
            return None;
        };
        self.counts.events += 1;
        self.counts.nanoseconds += off_cpu_ns;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    fn out(profile: &mut Profile, at: u64) -> SwitchOut {
        let key = profile.key(7, 8, "p", "t", &[]).expect("room");
        SwitchOut { key, cpu: 0, switched_out_ns: at, request: None }
    }

    #[test]
    fn ends_pair_with_their_switch_outs() {
        let mut profile = Profile::new(16);
        let mut pairs = OffCpuPairs::default();
        pairs.switched_out(8, out(&mut profile, 100));
        assert!(pairs.switched_in(8, 99, 5).is_none(), "another switch-out");
        assert_eq!(pairs.switched_in(8, 100, 50).map(|o| o.switched_out_ns), Some(100));
        assert!(pairs.switched_in(8, 100, 50).is_none(), "paired once");
        let counts = pairs.counts;
        assert_eq!((counts.events, counts.nanoseconds, counts.unmatched_ends), (1, 50, 2));
    }

    #[test]
    fn the_oldest_is_given_up_past_the_limit() {
        let mut profile = Profile::new(16);
        let mut pairs = OffCpuPairs::default();
        for at in 0..MAX_PENDING as u64 + 1 {
            pairs.switched_out(8, out(&mut profile, at));
        }
        assert_eq!(pairs.counts.given_up, 1);
        assert!(pairs.switched_in(8, 0, 1).is_none());
        assert!(pairs.switched_in(8, MAX_PENDING as u64, 1).is_some());
    }
}
