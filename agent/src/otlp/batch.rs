//! The samples of one reporting interval, with what is needed to encode them later: each
//! sample's process, thread, CPU and time, and its stack, interned.

use std::{collections::HashMap, sync::Arc};

use crate::profile::Frame;

/// What a resource says about a process, captured while the process is alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessMeta {
    /// `comm` of the main thread.
    pub name: Arc<str>,
    /// Path of the executable (`/proc/PID/exe`); empty for kernel threads.
    pub executable_path: Arc<str>,
    /// Container ID from the process's cgroup; empty outside containers.
    pub container_id: Arc<str>,
}

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
    /// Index into [`SampleBatch::thread_names`].
    pub thread_name: u32,
    /// Index into [`SampleBatch::stacks`].
    pub stack: u32,
}

/// Samples collected since the last report. Bounded: past `max_samples` samples are counted
/// in `dropped`, never silently lost.
#[derive(Debug)]
pub struct SampleBatch {
    /// Samples in arrival order.
    pub samples: Vec<BatchSample>,
    /// Distinct stacks, innermost frame first.
    pub stacks: Vec<Box<[Frame]>>,
    stack_ids: HashMap<Box<[Frame]>, u32>,
    /// Distinct thread names.
    pub thread_names: Vec<Arc<str>>,
    thread_name_ids: HashMap<Arc<str>, u32>,
    /// Process facts, by pid.
    pub processes: HashMap<u32, ProcessMeta>,
    /// Interval start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// Samples that did not fit.
    pub dropped: u64,
    max_samples: usize,
}

impl SampleBatch {
    /// An empty batch starting at `start_unix_nano`.
    pub fn new(start_unix_nano: u64, max_samples: usize) -> Self {
        SampleBatch {
            samples: Vec::new(),
            stacks: Vec::new(),
            stack_ids: HashMap::new(),
            thread_names: Vec::new(),
            thread_name_ids: HashMap::new(),
            processes: HashMap::new(),
            start_unix_nano,
            dropped: 0,
            max_samples,
        }
    }

    /// Records one sample: `origin` with its `stack_id` and `thread_name` still unset. `process`
    /// is called the first time a pid appears in the batch.
    pub fn push(&mut self, origin: BatchSample, thread: &str, frames: &[Frame], process: impl FnOnce() -> ProcessMeta) {
        if self.samples.len() >= self.max_samples {
            self.dropped += 1;
            return;
        }
        self.processes.entry(origin.pid).or_insert_with(process);
        let stack = match self.stack_ids.get(frames) {
            Some(&id) => id,
            None => {
                let id = self.stacks.len() as u32;
                self.stacks.push(frames.into());
                self.stack_ids.insert(frames.into(), id);
                id
            }
        };
        let thread_name = match self.thread_name_ids.get(thread) {
            Some(&id) => id,
            None => {
                let id = self.thread_names.len() as u32;
                let name: Arc<str> = thread.into();
                self.thread_names.push(name.clone());
                self.thread_name_ids.insert(name, id);
                id
            }
        };
        self.samples.push(BatchSample { thread_name, stack, ..origin });
    }
}
