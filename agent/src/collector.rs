//! Turns ring-buffer records into profile entries: resolves every address to a file and
//! offset while the process is still alive, and counts the sample.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::{
    files::FileHintRecord,
    sampler::SampleRecord,
    records::OffCpuEnd,
    unwind::{StackEnd, FLAG_OFF_CPU, FLAG_PYTHON, FLAG_UNKNOWN_MAPPING},
};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;

use crate::debug_sources::DebugSources;
use crate::source_frames::DwarfFigures;
use crate::jit::{JitFigures, PerfMaps};
use crate::{
    clock::{unix_now_ns, Clock},
    events::{self, comm_str, comm_str_bytes, Record},
    objects::ObjectRegistry,
    links::{RequestKey, SpanLinks},
    off_cpu::{OffCpuCounts, OffCpuPairs, SwitchOut},
    otlp::{build_request, resource::HostInfo, BatchSample, BuildContext, SampleBatch},
    output::{self, RunInfo},
    process::{
        identity::{Identities, ProcessIdentity},
        ProcessTable, UserAddress,
    },
    profile::{Frame, Profile},
    python::{
        frames::{PythonFrame, PythonFrameReader},
        merge::{merge, EVAL_FUNCTION},
        functions::FunctionTable,
        registry::PythonProcesses,
    },
    symbolize::FrameNamer,
    symbols::Catalog,
    top::TopFunctions,
    unwind::Unwinder,
};

/// Most `/proc/PID/maps` reads per second triggered by exec events; past this (an exec storm
/// on a build server) maps are read when the process is first sampled instead.
const MAX_EXEC_READS_PER_SECOND: u32 = 200;
/// How long after its exec a process's new image is read: one that exits sooner (a build's
/// compilers' helpers, a shell script's commands) is never read. Its own first samples are
/// walked with frame pointers meanwhile.
const EXEC_SETTLE: Duration = Duration::from_millis(10);
/// Most file-hint records waiting for their samples: one per CPU is the most in flight, so
/// more are leftovers of samples that were lost.
const MAX_PENDING_HINTS: usize = 64;
/// Where every context switch's kernel stack passes.
const SCHEDULER_FUNCTION: &str = "__schedule";

/// Least time between two requests to re-describe one process to the unwinder.
const UNWIND_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

/// How the collector is set up.
pub struct CollectorConfig {
    /// Most distinct stacks kept.
    pub max_stacks: usize,
    /// The unwinder's table loader, told about new and changed processes.
    pub unwinder: Option<Unwinder>,
    /// The `--pid` target, if any.
    pub target_pid: Option<u32>,
    /// Keep each interval's samples for export, at most this many.
    pub export_batch: Option<usize>,
    /// The spans samples taken in HTTP requests link to (when spans are exported too).
    pub links: Option<Arc<SpanLinks>>,
    /// Turns sample timestamps into wall time.
    pub clock: Clock,
    /// Who each process is (shared with the network pipeline).
    pub identities: Arc<Identities>,
    /// The CPython processes the Python walker is attached to.
    pub python: Arc<PythonProcesses>,
    /// Ask HotSpot JVMs for perf maps (`--java-perf-map`).
    pub java_perf_map: bool,
    /// Where separate debug files come from (`--debug-file-directory`, `DEBUGINFOD_URLS`).
    pub debug: DebugSources,
}

/// Everything user space knows about the samples so far.
#[derive(Debug)]
pub struct Collector {
    /// Processes and their mappings.
    processes: ProcessTable,
    /// Files seen in mappings, with their symbols.
    objects: ObjectRegistry,
    /// The aggregated samples.
    profile: Profile,
    /// Frame names.
    namer: FrameNamer,
    /// Leaf functions for the live view.
    top: TopFunctions,
    /// Samples received from the kernel.
    samples_received: u64,
    /// Records that could not be decoded.
    malformed_records: u64,
    /// Samples of the current reporting interval, when exporting.
    batch: Option<SampleBatch>,
    max_batch_samples: usize,
    /// Spans to link samples to.
    links: Option<Arc<SpanLinks>>,
    /// Off-CPU switch-outs waiting for their ends.
    off_cpu: OffCpuPairs,
    clock: Clock,
    unwinder: Option<Unwinder>,
    target_pid: Option<u32>,
    target_exited: bool,
    frames: Vec<Frame>,
    /// The native user frames of the sample being handled, before Python frames go in.
    native: Vec<Frame>,
    python_frames: Vec<PythonFrame>,
    python: PythonFrameReader,
    /// JIT code's names, from perf maps.
    jit: PerfMaps,
    exec_reads: (Instant, u32),
    /// Processes that exec'd less than [`EXEC_SETTLE`] ago: (pid, name, when).
    pending_execs: Vec<(u32, String, Instant)>,
    execs_skipped: u64,
    unwind_refreshes: HashMap<u32, Instant>,
    /// The mappings the kernel recorded for young processes' next samples (each right before
    /// its sample, though another CPU's records may come in between).
    hints: Vec<FileHintRecord>,
    /// What the kernel's file reports gave.
    kernel_files: KernelFileCounts,
}

/// What the kernel's reports of files (for processes too brief to read) gave.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelFileCounts {
    /// Samples that came with the mappings of their frames.
    pub samples_with_hints: u64,
    /// Mappings added from them.
    pub mappings_added: u64,
    /// Executables registered from exec events.
    pub exec_files: u64,
    /// Exec events whose file could not be opened as that same file.
    pub exec_files_unreachable: u64,
}

/// What the collector counted, for summaries.
#[derive(Debug, Clone, Copy)]
pub struct CollectorCounts {
    /// Samples received from the kernel.
    pub received: u64,
    /// Samples counted into the profile.
    pub counted: u64,
    /// Samples dropped because the profile was full.
    pub dropped_full: u64,
    /// Records that could not be decoded.
    pub malformed: u64,
    /// Processes cached.
    pub processes: usize,
    /// Distinct stacks.
    pub stacks: usize,
}

impl Collector {
    /// An empty collector.
    pub fn new(namer: FrameNamer, config: CollectorConfig) -> Self {
        Collector {
            processes: ProcessTable::new(config.identities),
            objects: ObjectRegistry::with_debug_sources(config.debug),
            profile: Profile::new(config.max_stacks),
            namer,
            top: TopFunctions::default(),
            samples_received: 0,
            malformed_records: 0,
            batch: config.export_batch.map(|max| SampleBatch::new(unix_now_ns(), max)),
            max_batch_samples: config.export_batch.unwrap_or(0),
            links: config.links,
            off_cpu: OffCpuPairs::default(),
            clock: config.clock,
            unwinder: config.unwinder,
            target_pid: config.target_pid,
            target_exited: false,
            frames: Vec::with_capacity(256),
            native: Vec::with_capacity(128),
            python_frames: Vec::with_capacity(128),
            python: PythonFrameReader::new(config.python),
            jit: PerfMaps::new(config.java_perf_map),
            exec_reads: (Instant::now(), 0),
            pending_execs: Vec::new(),
            execs_skipped: 0,
            unwind_refreshes: HashMap::new(),
            hints: Vec::new(),
            kernel_files: KernelFileCounts::default(),
        }
    }

    /// Publishes every file seen to the symbol endpoint's catalog.
    pub fn publish_to(&mut self, catalog: Arc<Catalog>) {
        self.objects.publish_to(catalog);
    }

    /// Whether the `--pid` target has exited.
    pub fn target_exited(&self) -> bool {
        self.target_exited
    }

    /// Sweeps exited processes; notices a `--pid` target whose exit event was lost.
    pub fn expire(&mut self) {
        self.refresh_debug_files();
        self.processes.expire();
        if self.target_pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            self.target_exited = true;
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> CollectorCounts {
        CollectorCounts {
            received: self.samples_received,
            counted: self.profile.samples,
            dropped_full: self.profile.dropped_full,
            malformed: self.malformed_records,
            processes: self.processes.len(),
            stacks: self.profile.stack_count(),
        }
    }

    /// What the Python side did.
    pub fn python_figures(&mut self) -> crate::python::PythonFigures {
        let functions = self.namer.python_functions();
        crate::python::PythonFigures {
            processes: self.python.attached(),
            functions: functions.len().saturating_sub(FunctionTable::PLACEHOLDERS),
            function_bytes: functions.bytes(),
            cached_code_objects: self.python.cached(),
            code_reads: self.python.stats.code_reads,
            unnamed_frames: self.python.stats.unnamed,
        }
    }

    /// What the perf maps gave.
    pub fn jit_figures(&mut self) -> JitFigures {
        self.jit.figures(self.namer.jit_functions())
    }

    /// The hottest leaf functions.
    pub fn top(&self) -> &TopFunctions {
        &self.top
    }

    /// Ages the hottest-functions counts (after each live view or summary).
    pub fn decay_top(&mut self) {
        self.top.decay();
    }

    /// Ends the export interval: its samples as an OTLP request (`None` if not exporting), with
    /// the number of samples in it and the number dropped.
    /// `last`: no interval follows, for samples waiting for their spans.
    pub fn take_request(&mut self, host: &HostInfo, period_ns: u64, last: bool) -> Option<(ExportProfilesServiceRequest, u64, u64)> {
        self.refresh_debug_files();
        let now = unix_now_ns();
        let mut batch = self.batch.replace(SampleBatch::new(now, self.max_batch_samples))?;
        if let Some(links) = &self.links {
            let waiting = batch.resolve_links(links, &mut self.profile, last);
            if let Some(next) = &mut self.batch {
                for (sample, identity) in waiting {
                    next.push(sample, || identity);
                }
            }
        }
        let context =
            BuildContext { host, period_ns, end_unix_nano: now, profile: &self.profile, namer: &mut self.namer, objects: &mut self.objects };
        let (request, samples) = if batch.samples.is_empty() { (ExportProfilesServiceRequest::default(), 0) } else { build_request(&batch, context) };
        Some((request, samples, batch.dropped))
    }

    /// Writes the profile of the whole run to `dir`; returns the files written.
    pub fn write_outputs(&mut self, dir: &Path, run: RunInfo) -> anyhow::Result<Vec<PathBuf>> {
        self.refresh_debug_files();
        output::write_all(dir, &self.profile, &mut self.namer, &mut self.objects, run)
    }

    /// Takes the symbols of files whose debug file was fetched meanwhile.
    pub fn refresh_debug_files(&mut self) {
        let refreshed = self.objects.refresh_debug_files();
        if !refreshed.is_empty() {
            self.namer.forget_objects(&refreshed);
        }
    }

    /// Where debug files came from, and what the DWARF indexes hold.
    pub fn debug_figures(&self) -> (&DebugSources, DwarfFigures) {
        (self.objects.debug_sources(), self.namer.dwarf_figures())
    }

    /// Hands back the unwinder (to stop it and read its figures).
    pub fn take_unwinder(&mut self) -> Option<Unwinder> {
        self.unwinder.take()
    }

    /// Handles one ring-buffer record.
    pub fn handle(&mut self, bytes: &[u8]) {
        match events::decode(bytes) {
            Some(Record::Sample(sample)) => self.on_sample(&sample),
            Some(Record::Exec(event)) => {
                let comm = comm_str(&event.comm);
                self.jit.forget(event.pid);
                // The old image is gone at once; the new one is read when the batch is done,
                // unless the process has exited by then (most of an exec storm's do).
                self.processes.forget_image(event.pid, &comm);
                self.pending_execs.push((event.pid, comm.into_owned(), Instant::now()));
            }
            Some(Record::Exit(event)) => {
                if let Some(index) = self.pending_execs.iter().position(|(pid, _, _)| *pid == event.pid) {
                    self.pending_execs.swap_remove(index);
                    self.execs_skipped += 1;
                }
                self.target_exited |= self.target_pid == Some(event.pid);
                self.processes.on_exit(event.pid);
                self.unwind_refreshes.remove(&event.pid);
                self.jit.exited(event.pid);
                if let Some(unwinder) = &self.unwinder {
                    unwinder.forget(event.pid);
                }
            }
            Some(Record::FileHints(hints)) => {
                if self.hints.len() >= MAX_PENDING_HINTS {
                    self.hints.remove(0);
                }
                self.hints.push(*hints);
            }
            Some(Record::ExecFile(event)) => {
                let path = comm_str_bytes(&event.path);
                match self.objects.register_exec(event.pid, event.file, &path) {
                    Some(_) => self.kernel_files.exec_files += 1,
                    None => self.kernel_files.exec_files_unreachable += 1,
                }
            }
            Some(Record::OffCpuEnd(end)) => self.on_off_cpu_end(&end),
            None => self.malformed_records += 1,
        }
    }

    /// What the kernel's reports of files gave.
    pub fn kernel_file_counts(&self) -> KernelFileCounts {
        self.kernel_files
    }

    /// After a batch of records: reads the new images of the processes that exec'd at least
    /// [`EXEC_SETTLE`] ago and are still running.
    pub fn end_of_batch(&mut self) {
        if self.pending_execs.is_empty() {
            return;
        }
        let now = Instant::now();
        let (settled, young): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_execs).into_iter().partition(|(_, _, at)| now.duration_since(*at) >= EXEC_SETTLE);
        self.pending_execs = young;
        for (pid, comm, _) in settled {
            if let Some(unwinder) = &self.unwinder {
                unwinder.exec(pid);
            }
            if self.exec_read_allowed() {
                self.processes.on_exec(pid, &comm, &mut self.objects);
            }
        }
    }

    /// When the oldest exec waiting to settle is due to be read.
    pub fn exec_settle_deadline(&self) -> Option<Instant> {
        self.pending_execs.iter().map(|(_, _, at)| *at + EXEC_SETTLE).min()
    }

    /// Processes that exec'd and exited within [`EXEC_SETTLE`]: never read.
    pub fn execs_skipped(&self) -> u64 {
        self.execs_skipped
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

    /// Appends the sample's user frames (`rest`: the frames after the kernel ones): native
    /// frames resolved to files, with Python frames in place of the interpreter's; returns
    /// how the stack ended.
    fn push_user_frames(&mut self, sample: &SampleRecord, rest: &[u64]) -> StackEnd {
        let header = &sample.header;
        let pid = header.pid;
        let (user, python) = rest.split_at(header.user_frame_count as usize);
        self.native.clear();
        for (i, &address) in user.iter().enumerate() {
            let address = caller(i, address);
            let frame = match self.processes.resolve(pid, address, &mut self.objects) {
                UserAddress::File { object, file_offset } => {
                    // Read the file's symbols now, while the process (and its files) are there.
                    self.objects.ensure_loaded(object);
                    match self.namer.source_depth(object, file_offset, &mut self.objects) {
                        Some(depth) => {
                            // Inlined calls first (leaf first), then the function itself.
                            self.native.extend((0..depth - 1).map(|index| Frame::Source { object, file_offset, index }));
                            Frame::Source { object, file_offset, index: depth - 1 }
                        }
                        None => Frame::User { object, file_offset },
                    }
                }
                UserAddress::Unknown => match self.jit.lookup(pid, address, self.namer.jit_functions()) {
                    Some(function) => Frame::Jit { function },
                    None => Frame::Unknown { address },
                },
            };
            self.native.push(frame);
        }
        let native_end = StackEnd::from_u32(header.user_stack_end);
        let python_count = header.python_frame_count as usize;
        if header.flags & FLAG_PYTHON == 0 || python_count == 0 {
            self.frames.extend_from_slice(&self.native);
            return native_end;
        }
        let slots = &python[..python_count * agent_common::sampler::SLOTS_PER_PYTHON_FRAME];
        // Named now: a code object may be freed once its function returns.
        self.python.read(pid, slots, self.namer.python_functions(), &mut self.python_frames);
        let python_end = StackEnd::from_u32(header.python_stack_end);
        let (namer, objects) = (&mut self.namer, &mut self.objects);
        // With DWARF, the loop's address is several frames: the outermost keeps the symbol's name.
        let is_eval = |frame: Frame| matches!(frame, Frame::User { .. } | Frame::Source { .. }) && &*namer.name(frame, objects) == EVAL_FUNCTION;
        merge(&self.native, &self.python_frames, native_end, python_end, is_eval, &mut self.frames)
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
        self.frames.clear();
        // Innermost first. Every frame but the first is a return address: step back into the
        // call instruction so the frame is attributed to the calling line, not the next one.
        if let Some(hints) = self.hints.iter().position(|hints| hints.pid == pid).map(|index| self.hints.swap_remove(index)) {
            let added = self.processes.add_kernel_mappings(pid, &hints.hints[..hints.count as usize], &mut self.objects);
            self.kernel_files.samples_with_hints += 1;
            self.kernel_files.mappings_added += added as u64;
        }
        let (kernel, rest) = sample.frames.split_at(header.kernel_frame_count as usize);
        self.frames.extend(kernel.iter().enumerate().map(|(i, &address)| Frame::Kernel { address: caller(i, address) }));
        if header.flags & FLAG_OFF_CPU != 0 {
            self.trim_to_scheduler();
        }
        match self.push_user_frames(sample, rest) {
            StackEnd::Complete | StackEnd::NoUserRegisters => {}
            reason => self.frames.push(Frame::UnwindError { reason }),
        }
        if header.flags & FLAG_UNKNOWN_MAPPING != 0 {
            self.refresh_unwind(pid);
        }
        let thread = comm_str(&header.comm);
        // The main thread's name is the process's name: no lookup (or allocation) needed.
        let identity = (pid != tid && pid != 0).then(|| self.processes.identity(pid, &thread));
        let process: &str = identity.as_ref().map_or(&thread, |identity| &identity.name);
        let request = (header.request_sock != 0).then_some(RequestKey { pid, sock: header.request_sock, started_ns: header.request_started_ns });
        if header.flags & FLAG_OFF_CPU != 0 {
            // Counted when the thread runs again, with the time it was off CPU.
            if let Some(key) = self.profile.key(pid, tid, process, &thread, &self.frames) {
                self.off_cpu.switched_out(tid, SwitchOut { key, cpu: header.cpu, switched_out_ns: header.timestamp_ns, request });
            }
            return;
        }
        if let Some(&leaf) = self.frames.first() {
            let name = self.namer.name(leaf, &mut self.objects);
            self.top.add(name);
        }
        match self.profile.add(pid, tid, process, &thread, &self.frames) {
            Some(key) => self.push_to_batch(BatchSample {
                key,
                cpu: header.cpu,
                time_unix_nano: self.clock.to_unix_ns(header.timestamp_ns),
                sampled_ns: header.timestamp_ns,
                request,
                link: None,
                carried: false,
                off_cpu_ns: None,
            }),
            None => self.batch.iter_mut().for_each(|batch| batch.dropped += 1),
        }
    }

    /// An off-CPU stack, taken inside the raw tracepoint, starts with the BPF program and the
    /// tracepoint's own frames: it starts at `__schedule` instead, as a thread that waits does.
    fn trim_to_scheduler(&mut self) {
        let (namer, objects) = (&mut self.namer, &mut self.objects);
        if let Some(at) = self.frames.iter().position(|&frame| &*namer.name(frame, objects) == SCHEDULER_FUNCTION) {
            self.frames.drain(..at);
        }
    }

    /// A recorded thread runs again: its time off CPU, under the stack it left in.
    fn on_off_cpu_end(&mut self, end: &OffCpuEnd) {
        let Some(out) = self.off_cpu.switched_in(end.tid, end.switched_out_ns, end.off_cpu_ns) else { return };
        if !self.profile.add_off_cpu(out.key, end.off_cpu_ns) {
            return;
        }
        self.push_to_batch(BatchSample {
            key: out.key,
            cpu: out.cpu,
            time_unix_nano: self.clock.to_unix_ns(out.switched_out_ns),
            sampled_ns: out.switched_out_ns,
            request: out.request,
            link: None,
            carried: false,
            off_cpu_ns: Some(end.off_cpu_ns),
        });
    }

    /// Keeps a sample for the next export, when exporting.
    fn push_to_batch(&mut self, sample: BatchSample) {
        let Some(batch) = &mut self.batch else { return };
        let (pid, process) = (sample.key.pid, self.profile.name(sample.key.process));
        let processes = &mut self.processes;
        batch.push(sample, || if pid == 0 { Arc::new(ProcessIdentity::named(process)) } else { processes.identity(pid, process) });
    }

    /// What pairing switch-outs with their ends has seen.
    pub fn off_cpu_counts(&self) -> OffCpuCounts {
        self.off_cpu.counts
    }
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
                python_frame_count: 0,
                python_stack_end: 0,
                request_sock: 0,
                request_started_ns: 0,
            },
            frames: [0; agent_common::sampler::MAX_FRAMES],
        };
        record.frames[0] = marker_leaf as *const () as u64 + 1;
        let config = CollectorConfig { max_stacks: 16, unwinder: None, target_pid: None, export_batch: None, links: None, clock: Clock::new(), identities: Arc::default(), python: Arc::default(), java_perf_map: false, debug: DebugSources::default() };
        let mut collector = Collector::new(FrameNamer::new(None), config);
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
