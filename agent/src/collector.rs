//! Turns ring-buffer records into profile entries: resolves every address to a file and
//! offset while the process is still alive, and counts the sample.

use std::time::{Duration, Instant};

use std::collections::HashMap;

use agent_common::{
    sampler::SampleRecord,
    unwind::{StackEnd, FLAG_UNKNOWN_MAPPING},
};

use crate::{
    events::{self, comm_str, Record},
    live::TopFunctions,
    objects::ObjectRegistry,
    otlp::SampleBatch,
    process::{ProcessTable, UserAddress},
    profile::{Frame, Profile},
    symbolize::FrameNamer,
    unwind::Unwinder,
};

/// Most `/proc/PID/maps` reads per second triggered by exec events; past this (an exec storm
/// on a build server) maps are read when the process is first sampled instead.
const MAX_EXEC_READS_PER_SECOND: u32 = 200;
/// Least time between two requests to re-describe one process to the unwinder.
const UNWIND_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// Everything user space knows about the samples so far.
#[derive(Debug)]
pub struct Collector {
    /// Processes and their mappings.
    pub processes: ProcessTable,
    /// Files seen in mappings, with their symbols.
    pub objects: ObjectRegistry,
    /// The aggregated samples.
    pub profile: Profile,
    /// Frame names.
    pub namer: FrameNamer,
    /// Leaf functions for the live view.
    pub top: TopFunctions,
    /// Samples received from the kernel.
    pub samples_received: u64,
    /// Records that could not be decoded.
    pub malformed_records: u64,
    /// Samples of the current reporting interval, when exporting.
    pub batch: Option<SampleBatch>,
    /// Add to a `bpf_ktime_get_ns()` timestamp to get nanoseconds since the Unix epoch.
    pub monotonic_to_unix_ns: u64,
    /// The unwinder's table loader, told about new and changed processes.
    pub unwinder: Option<Unwinder>,
    /// The `--pid` target, if any.
    pub target_pid: Option<u32>,
    /// Set when the `--pid` target has exited.
    pub target_exited: bool,
    frames: Vec<Frame>,
    exec_reads: (Instant, u32),
    unwind_refreshes: HashMap<u32, Instant>,
}

impl Collector {
    /// An empty collector.
    pub fn new(namer: FrameNamer, max_stacks: usize) -> Self {
        Collector {
            processes: ProcessTable::default(),
            objects: ObjectRegistry::default(),
            profile: Profile::new(max_stacks),
            namer,
            top: TopFunctions::default(),
            samples_received: 0,
            malformed_records: 0,
            batch: None,
            monotonic_to_unix_ns: monotonic_to_unix_offset(),
            unwinder: None,
            target_pid: None,
            target_exited: false,
            frames: Vec::with_capacity(256),
            exec_reads: (Instant::now(), 0),
            unwind_refreshes: HashMap::new(),
        }
    }

    /// Handles one ring-buffer record.
    pub fn handle(&mut self, bytes: &[u8]) {
        match events::decode(bytes) {
            Some(Record::Sample(sample)) => self.on_sample(&sample),
            Some(Record::Exec(event)) => {
                let comm = comm_str(&event.comm);
                if let Some(unwinder) = &self.unwinder {
                    unwinder.exec(event.pid);
                }
                if self.exec_read_allowed() {
                    self.processes.on_exec(event.pid, &comm, &mut self.objects);
                } else {
                    self.processes.forget_image(event.pid, &comm);
                }
            }
            Some(Record::Exit(event)) => {
                self.target_exited |= self.target_pid == Some(event.pid);
                self.processes.on_exit(event.pid);
                self.unwind_refreshes.remove(&event.pid);
                if let Some(unwinder) = &self.unwinder {
                    unwinder.forget(event.pid);
                }
            }
            None => self.malformed_records += 1,
        }
    }

    /// Asks the unwinder to describe `pid` again, at most every [`UNWIND_REFRESH_INTERVAL`].
    fn refresh_unwind(&mut self, pid: u32) {
        let Some(unwinder) = &self.unwinder else { return };
        let now = Instant::now();
        let last = self.unwind_refreshes.entry(pid).or_insert(now - UNWIND_REFRESH_INTERVAL);
        if now.duration_since(*last) >= UNWIND_REFRESH_INTERVAL {
            *last = now;
            unwinder.describe(pid);
        }
    }

    fn exec_read_allowed(&mut self) -> bool {
        let (since, count) = &mut self.exec_reads;
        if since.elapsed() >= Duration::from_secs(1) {
            *since = Instant::now();
            *count = 0;
        }
        *count += 1;
        *count <= MAX_EXEC_READS_PER_SECOND
    }

    fn on_sample(&mut self, sample: &SampleRecord) {
        self.samples_received += 1;
        let header = &sample.header;
        let (pid, tid) = (header.pid, header.tid);
        let frames = &mut self.frames;
        frames.clear();
        // Innermost first. Every frame but the first is a return address: step back into the
        // call instruction so the frame is attributed to the calling line, not the next one.
        let (kernel, rest) = sample.frames.split_at(header.kernel_frame_count as usize);
        frames.extend(kernel.iter().enumerate().map(|(i, &address)| Frame::Kernel { address: caller(i, address) }));
        let user = &rest[..header.user_frame_count as usize];
        for (i, &address) in user.iter().enumerate() {
            let address = caller(i, address);
            frames.push(match self.processes.resolve(pid, address, &mut self.objects) {
                UserAddress::File { object, file_offset } => {
                    // Read the file's symbols now, while the process (and its files) are there.
                    self.objects.ensure_loaded(object);
                    Frame::User { object, file_offset }
                }
                UserAddress::Unknown => Frame::Unknown { address },
            });
        }
        match StackEnd::from_u32(header.user_stack_end) {
            StackEnd::Complete | StackEnd::NoUserRegisters => {}
            reason => frames.push(Frame::UnwindError { reason }),
        }
        if header.flags & FLAG_UNKNOWN_MAPPING != 0 {
            self.refresh_unwind(pid);
        }
        let thread = comm_str(&header.comm);
        // The main thread's name is the process's name: no lookup (or allocation) needed.
        let process: std::borrow::Cow<'_, str> = if pid == tid || pid == 0 { thread.clone() } else { self.processes.name(pid, &thread).to_owned().into() };
        if let Some(&leaf) = self.frames.first() {
            let name = self.namer.name(leaf, &mut self.objects);
            self.top.add(name);
        }
        self.profile.add(pid, tid, &process, &thread, &self.frames);
        if let Some(batch) = &mut self.batch {
            let time = header.timestamp_ns.wrapping_add(self.monotonic_to_unix_ns);
            let processes = &mut self.processes;
            let process_meta = || if pid == 0 {
                crate::otlp::ProcessMeta { name: process.as_ref().into(), ..Default::default() }
            } else {
                processes.meta(pid, &process)
            };
            let origin = crate::otlp::BatchSample { pid, tid, cpu: header.cpu, time_unix_nano: time, thread_name: 0, stack: 0 };
            batch.push(origin, &thread, &self.frames, process_meta);
        }
    }
}

/// Wall-clock time minus CLOCK_MONOTONIC (which BPF timestamps use), in nanoseconds.
pub fn monotonic_to_unix_offset() -> u64 {
    let mut monotonic = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut monotonic) };
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    unix.wrapping_sub(monotonic.tv_sec as u64 * 1_000_000_000 + monotonic.tv_nsec as u64)
}

fn caller(index: usize, address: u64) -> u64 {
    if index == 0 { address } else { address.saturating_sub(1) }
}

#[cfg(test)]
mod tests {
    use agent_common::{records::RecordKind, sampler::SampleHeader};

    use super::*;

    #[inline(never)]
    fn marker_leaf() -> u64 {
        std::hint::black_box(7)
    }

    fn as_bytes(record: &SampleRecord) -> &[u8] {
        // SAFETY: plain data without padding, read as bytes.
        unsafe { std::slice::from_raw_parts((record as *const SampleRecord).cast::<u8>(), size_of::<SampleRecord>()) }
    }

    /// A sample of this very process: the user address resolves to this test binary's own
    /// function, the process name comes from the record, and the count lands in the profile.
    #[test]
    fn sample_of_own_process_is_resolved_and_counted() {
        let pid = std::process::id();
        let mut record = SampleRecord {
            header: SampleHeader {
                kind: RecordKind::Sample as u32,
                cpu: 0,
                pid,
                tid: pid,
                timestamp_ns: 1,
                kernel_frame_count: 0,
                user_frame_count: 1,
                user_stack_end: 0,
                flags: 0,
                comm: *b"selftest\0\0\0\0\0\0\0\0",
            },
            frames: [0; agent_common::sampler::MAX_FRAMES],
        };
        record.frames[0] = marker_leaf as *const () as u64 + 1;
        let mut collector = Collector::new(FrameNamer::new(None), 16);
        collector.handle(as_bytes(&record));
        collector.handle(as_bytes(&record));
        collector.handle(&[0xff; 8]);
        assert_eq!(marker_leaf(), 7);

        assert_eq!((collector.samples_received, collector.malformed_records), (2, 1));
        let (key, count) = collector.profile.counts().next().expect("one entry");
        assert_eq!(count, 2);
        assert_eq!(collector.profile.name(key.process), "selftest");
        let frames = collector.profile.stack(key.stack).to_vec();
        assert_eq!(frames.len(), 1);
        let name = collector.namer.name(frames[0], &mut collector.objects);
        assert!(name.ends_with("marker_leaf"), "{name}");
        assert_eq!(&*collector.top.top(1)[0].0, &*name);
    }
}
