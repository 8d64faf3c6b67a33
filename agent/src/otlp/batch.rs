//! The samples of one reporting interval, with what is needed to encode them later: each
//! sample's process, thread, CPU and time. Stacks and thread names are not stored again: a
//! sample refers to the ones the [`crate::profile::Profile`] interned.

use std::{collections::HashMap, sync::Arc};

use crate::{
    links::{RequestKey, SpanLinks, SpanRef},
    process::identity::ProcessIdentity,
    profile::{Profile, SampleKey},
};

/// One sample of the interval.
#[derive(Debug, Clone, Copy)]
pub struct BatchSample {
    /// Process, thread, names and stack, as the profile counted them.
    pub key: SampleKey,
    /// CPU it ran on.
    pub cpu: u32,
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// The kernel's time of the sample (`CLOCK_MONOTONIC`, ns).
    pub sampled_ns: u64,
    /// The HTTP request its thread was serving, if any.
    pub request: Option<RequestKey>,
    /// The span of that request, once resolved.
    pub link: Option<SpanRef>,
    /// Already waited one interval for its span.
    pub carried: bool,
    /// An off-CPU event: nanoseconds off CPU (`None` for a CPU sample).
    pub off_cpu_ns: Option<u64>,
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
        self.processes.entry(sample.key.pid).or_insert_with(process);
        self.samples.push(sample);
    }

    /// Links the samples taken in requests to their spans (counted in `profile` too, for the
    /// pprof file). A sample whose span is not published yet (its request still in flight,
    /// or its response not read yet) waits for the next interval once, in the batch returned,
    /// unless `last`; after that it goes unlinked.
    pub fn resolve_links(&mut self, links: &SpanLinks, profile: &mut Profile, last: bool) -> Vec<(BatchSample, Arc<ProcessIdentity>)> {
        let mut waiting = Vec::new();
        let mut kept = Vec::with_capacity(self.samples.len());
        for mut sample in self.samples.drain(..) {
            let Some(request) = sample.request else {
                kept.push(sample);
                continue;
            };
            sample.link = links.resolve(request, sample.sampled_ns);
            match sample.link {
                // The pprof file links CPU samples (off-CPU time is linked in OTLP).
                Some(span) if sample.off_cpu_ns.is_none() => profile.link(sample.key, span),
                Some(_) => {}
                None if !last && !sample.carried => {
                    if let Some(identity) = self.processes.get(&sample.key.pid) {
                        waiting.push((BatchSample { carried: true, ..sample }, identity.clone()));
                        continue;
                    }
                }
                None => {}
            }
            kept.push(sample);
        }
        self.samples = kept;
        waiting
    }
}
