//! The samples of one reporting interval, with what is needed to encode them later: each
//! sample's process, thread, CPU and time. Stacks and thread names are not stored again: a
//! sample refers to the ones the [`crate::profile::Profile`] interned.

use std::{collections::HashMap, sync::Arc};

use crate::{
    process::identity::ProcessIdentity,
    profile::{NameId, StackId},
};

/// One sample of the interval.
#[derive(Debug, Clone, Copy)]
pub struct BatchSample {
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CPU it ran on.
    pub cpu: u32,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// The thread's name, in the profile.
    pub thread_name: NameId,
    /// The stack, in the profile.
    pub stack: StackId,
}

/// Samples collected since the last report. Bounded: past `max_samples` samples are counted
/// in `dropped`, never silently lost.
#[derive(Debug)]
pub struct SampleBatch {
    /// Samples in arrival order.
    pub samples: Vec<BatchSample>,
    /// Who each process is, by pid, captured while it was alive.
    pub processes: HashMap<u32, Arc<ProcessIdentity>>,
    /// Interval start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// Samples that did not fit (or that the profile had no room for).
    pub dropped: u64,
    max_samples: usize,
}

impl SampleBatch {
    /// An empty batch starting at `start_unix_nano`.
    pub fn new(start_unix_nano: u64, max_samples: usize) -> Self {
        SampleBatch { samples: Vec::new(), processes: HashMap::new(), start_unix_nano, dropped: 0, max_samples }
    }

    /// Records one sample. `process` is called the first time a pid appears in the batch.
    pub fn push(&mut self, sample: BatchSample, process: impl FnOnce() -> Arc<ProcessIdentity>) {
        if self.samples.len() >= self.max_samples {
            self.dropped += 1;
            return;
        }
        self.processes.entry(sample.pid).or_insert_with(process);
        self.samples.push(sample);
    }
}
