//! User space of the `.eh_frame` unwinder: compiles the unwind tables of every executable
//! file the profiled processes map, and keeps the BPF maps the kernel-side unwinder reads
//! (rows, per-process mappings) up to date.
//!
//! All of it runs on its own thread, fed by a bounded channel: compiling a large binary's
//! table takes a fraction of a second and must never delay draining samples. Until a process
//! is described, its stacks are walked with frame pointers.

mod encode;
mod extents;
mod mapped_array;
mod processes;
pub mod registers;
mod rules;
mod tables;

use std::{
    collections::VecDeque,
    sync::{
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use agent_common::{
    files::KernelFile,
    names::maps,
    python::PythonProcess,
    unwind::{ExecMapping, MappingRange, UnwindEntry, UnwindRule},
};
use anyhow::{Context, Result};
use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use tracing::{debug, info};

use crate::{bpf::sizing::UnwindSizes, python::{attach::PythonAttacher, registry::PythonProcesses}};

pub use mapped_array::MappedArray;
use processes::{Outcome, ProcessMappings};
use tables::TableStore;
pub use tables::TableStats;

/// Requests queued for the unwinder thread before new ones are dropped (and counted).
const QUEUE_LEN: usize = 4096;
/// How often processes whose exit was missed are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// After an exec, the dynamic loader maps the libraries within milliseconds: look again then,
/// so a process's libraries are unwindable before it is next sampled.
const AFTER_EXEC: [Duration; 2] = [Duration::from_millis(30), Duration::from_millis(300)];
/// Most follow-up descriptions waiting (an exec storm drops the excess, counted).
const MAX_FOLLOW_UPS: usize = 8192;

/// The BPF maps the unwinder thread owns.
pub struct UnwindMaps {
    /// `UNWIND_ROWS`, memory-mapped.
    pub rows: MappedArray<UnwindEntry>,
    /// `UNWIND_RULES`, memory-mapped.
    pub rules: MappedArray<UnwindRule>,
    /// `EXEC_MAPPINGS`, memory-mapped.
    pub mappings: MappedArray<ExecMapping>,
    /// `PROCESS_MAPPINGS`.
    pub ranges: BpfHashMap<MapData, u32, MappingRange>,
    /// `PROCESS_MAPPINGS`'s capacity.
    pub max_processes: usize,
    /// `PYTHON_PROCESSES`.
    pub python: BpfHashMap<MapData, u32, PythonProcess>,
    /// `PYTHON_PROCESSES`'s capacity.
    pub max_python_processes: usize,
    /// `FILE_TABLES`.
    pub file_tables: BpfHashMap<MapData, KernelFile, agent_common::files::FileTable>,
}

impl UnwindMaps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut aya::Ebpf, sizes: UnwindSizes) -> Result<Self> {
        let mut take = |name: &str| -> Result<Map> { ebpf.take_map(name).with_context(|| format!("BPF object has no {name} map")) };
        Ok(UnwindMaps {
            rows: MappedArray::new(take(maps::UNWIND_ROWS)?, sizes.rows)?,
            rules: MappedArray::new(take(maps::UNWIND_RULES)?, sizes.rules)?,
            mappings: MappedArray::new(take(maps::EXEC_MAPPINGS)?, sizes.mappings)?,
            ranges: BpfHashMap::try_from(take(maps::PROCESS_MAPPINGS)?)?,
            max_processes: sizes.processes as usize,
            python: BpfHashMap::try_from(take(maps::PYTHON_PROCESSES)?)?,
            max_python_processes: sizes.python_processes as usize,
            file_tables: BpfHashMap::try_from(take(maps::FILE_TABLES)?)?,
        })
    }
}

enum Request {
    Describe(u32),
    /// A process exec'd: describe it now and again shortly.
    Exec(u32),
    Forget(u32),
}

/// What the unwinder thread has done, for reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnwindStats {
    /// Tables and rows.
    pub tables: TableStats,
    /// Processes described.
    pub processes: u64,
    /// Mapping entries in use.
    pub mappings: u64,
    /// Descriptions written.
    pub described: u64,
    /// Descriptions that failed (the process was gone, or limits were reached).
    pub failed: u64,
    /// Requests dropped because the thread was behind.
    pub dropped_requests: u64,
    /// Follow-up descriptions after exec dropped in an exec storm.
    pub dropped_follow_ups: u64,
    /// Longest single description (reading maps and compiling new tables).
    pub slowest_describe: Duration,
    /// Time taken to describe the processes running at start.
    pub initial_load: Option<Duration>,
}

/// Handle to the unwinder thread. Dropping it stops the thread.
pub struct Unwinder {
    requests: Option<SyncSender<Request>>,
    stats: Arc<Mutex<UnwindStats>>,
    thread: Option<JoinHandle<()>>,
}

impl Unwinder {
    /// Starts the thread and asks it to describe `initial` processes.
    /// CPython processes it finds are attached to the Python walker and published in
    /// `python`.
    pub fn start(maps: UnwindMaps, initial: Vec<u32>, python: Arc<PythonProcesses>) -> Result<Self> {
        let (sender, receiver) = mpsc::sync_channel(QUEUE_LEN);
        let stats = Arc::new(Mutex::new(UnwindStats::default()));
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("oxeye-unwind".into())
            .spawn(move || run(maps, initial, receiver, thread_stats, python))
            .context("cannot start the unwinder thread")?;
        Ok(Unwinder { requests: Some(sender), stats, thread: Some(thread) })
    }

    /// Asks for `pid`'s mappings to be (re)described: it exec'd, was seen for the first
    /// time, or ran code outside every mapping described so far.
    pub fn describe(&self, pid: u32) {
        self.send(Request::Describe(pid));
    }

    /// Tells the thread `pid` exec'd a new image.
    ///
    /// The thread reads the mappings itself rather than take the process table's read of
    /// the exec event: that one is taken before the dynamic loader has mapped the libraries,
    /// and measured, using it put a new rustc's librustc_driver in the kernel 0.78 s after
    /// exec instead of 0.25 s (the next read is the 300 ms follow-up).
    pub fn exec(&self, pid: u32) {
        self.send(Request::Exec(pid));
    }

    /// Tells the thread `pid` exited.
    pub fn forget(&self, pid: u32) {
        self.send(Request::Forget(pid));
    }

    /// Waits until the processes given to [`Unwinder::start`] are described, up to
    /// `timeout`; returns whether they are.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stats().initial_load.is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// What the thread has done so far.
    pub fn stats(&self) -> UnwindStats {
        self.stats.lock().map(|stats| *stats).unwrap_or_default()
    }

    fn send(&self, request: Request) {
        if let Some(requests) = &self.requests {
            if let Err(TrySendError::Full(_)) = requests.try_send(request) {
                if let Ok(mut stats) = self.stats.lock() {
                    stats.dropped_requests += 1;
                }
            }
        }
    }
}

impl std::fmt::Debug for Unwinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unwinder").field("stats", &self.stats()).finish()
    }
}

impl Drop for Unwinder {
    fn drop(&mut self) {
        self.requests = None; // closes the channel: the thread finishes its queue and stops
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(maps: UnwindMaps, initial: Vec<u32>, requests: Receiver<Request>, stats: Arc<Mutex<UnwindStats>>, python: Arc<PythonProcesses>) {
    let tables = TableStore::new(maps.rows, maps.rules).publishing_to(maps.file_tables);
    let processes = ProcessMappings::new(maps.mappings, maps.ranges, maps.max_processes, tables);
    let python = PythonAttacher::new(maps.python, maps.max_python_processes, python);
    let mut worker = Worker { processes, python, stats: UnwindStats::default(), follow_ups: VecDeque::new() };
    let started = Instant::now();
    for pid in initial {
        worker.describe(pid, true);
    }
    worker.stats.initial_load = Some(started.elapsed());
    worker.publish(&stats);
    let initial = worker.stats;
    info!(
        processes = initial.processes,
        tables = initial.tables.tables,
        rows = initial.tables.rows,
        table_kib = initial.tables.rows * size_of::<UnwindEntry>() as u64 / 1024,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "unwind tables loaded for running processes"
    );
    let mut last_sweep = Instant::now();
    loop {
        match requests.recv_timeout(worker.next_follow_up()) {
            Ok(request) => {
                worker.handle(request);
                while let Ok(request) = requests.try_recv() {
                    worker.handle(request);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        worker.follow_up();
        worker.python.retry_pending();
        if last_sweep.elapsed() >= SWEEP_INTERVAL {
            last_sweep = Instant::now();
            worker.processes.forget_dead();
            worker.python.forget_dead();
        }
        worker.publish(&stats);
    }
}

/// Compiling a large table needs tens of MB for a moment; give them back to the system
/// afterwards (glibc keeps freed memory of a thread's arena otherwise).
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: plain libc call, no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The unwinder thread's state.
struct Worker {
    processes: ProcessMappings,
    python: PythonAttacher,
    stats: UnwindStats,
    /// Descriptions to repeat after an exec, in due order (each delay is constant).
    follow_ups: VecDeque<(Instant, u32)>,
}

impl Worker {
    fn handle(&mut self, request: Request) {
        match request {
            Request::Exec(pid) => {
                // A new image: its old description and interpreter are gone. Forgetting the
                // description too makes the next one new, so the interpreter is looked for
                // again even if the process was described (and attached) before its exec
                // event arrived.
                self.processes.forget(pid);
                self.python.forget(pid);
                for delay in AFTER_EXEC {
                    if self.follow_ups.len() < MAX_FOLLOW_UPS {
                        self.follow_ups.push_back((Instant::now() + delay, pid));
                    } else {
                        self.stats.dropped_follow_ups += 1;
                    }
                }
                self.describe(pid, true);
            }
            Request::Describe(pid) => self.describe(pid, false),
            Request::Forget(pid) => {
                self.processes.forget(pid);
                self.python.forget(pid);
                // An exited process has nothing left to read (a 1 ms process exits before its
                // first follow-up).
                self.follow_ups.retain(|&(_, waiting)| waiting != pid);
            }
        }
    }

    /// How long until the next follow-up is due (at most a second).
    fn next_follow_up(&self) -> Duration {
        let now = Instant::now();
        self.follow_ups.iter().map(|(due, _)| due.saturating_duration_since(now)).min().unwrap_or(Duration::from_secs(1))
    }

    /// Describes every process whose follow-up is due.
    fn follow_up(&mut self) {
        let now = Instant::now();
        let (due, waiting): (VecDeque<_>, VecDeque<_>) = self.follow_ups.drain(..).partition(|(at, _)| *at <= now);
        self.follow_ups = waiting;
        for (_, pid) in due {
            self.describe(pid, true);
        }
    }

    fn describe(&mut self, pid: u32, scheduled: bool) {
        let begun = Instant::now();
        let before = self.processes.tables.stats();
        match self.processes.describe(pid, scheduled) {
            Ok(Outcome::Updated(entries)) => {
                self.python.on_described(pid, &entries);
                self.stats.described += 1;
                self.stats.slowest_describe = self.stats.slowest_describe.max(begun.elapsed());
                let after = self.processes.tables.stats();
                let (new_tables, new_rows) = (after.compiled - before.compiled, after.rows.saturating_sub(before.rows));
                if new_tables > 0 {
                    release_freed_memory();
                }
                debug!(pid, new_tables, new_rows, elapsed_ms = begun.elapsed().as_secs_f64() * 1e3, "described process to the unwinder");
            }
            Ok(Outcome::Unchanged) => {}
            Err(error) => {
                self.stats.failed += 1;
                debug!(pid, "cannot describe process to the unwinder: {error:#}");
            }
        }
    }

    fn publish(&mut self, shared: &Mutex<UnwindStats>) {
        self.stats.tables = self.processes.tables.stats();
        self.stats.processes = self.processes.len() as u64;
        self.stats.mappings = self.processes.mappings_used() as u64;
        if let Ok(mut shared) = shared.lock() {
            let dropped = shared.dropped_requests;
            *shared = UnwindStats { dropped_requests: dropped, ..self.stats };
        }
    }
}
