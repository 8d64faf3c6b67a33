//! Names for JIT-compiled code from perf maps (`/tmp/perf-PID.map`, written by Node with
//! `--perf-basic-prof`, .NET with `DOTNET_PerfMapEnabled=1`, the JDK with
//! `jcmd PID Compiler.perfmap`).
//!
//! A sample's address outside every file mapping is looked up in its process's perf map,
//! [`open`]ed safely the first time and re-read as it grows ([`perf_map`]); the answer is a
//! [`functions`] id, so the frame keeps its name after the process and its map are gone.

pub mod functions;
pub mod hotspot;
pub mod open;
pub mod perf_map;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use tracing::{debug, warn};

use self::{
    functions::{JitFunctionId, JitFunctions, Runtime},
    hotspot::{HotspotAttach, FIRST_REQUEST_INTERVAL, REQUEST_INTERVAL},
    open::{open_perf_map, Refusal},
    perf_map::PerfMap,
};

/// Least time between two attempts to open a process's perf map that was not there.
const OPEN_RETRY: Duration = Duration::from_secs(1);
/// How long an exited process's map is kept, for samples still in flight.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// Most processes tracked (open maps hold a file descriptor each).
const MAX_PROCESSES: usize = 4096;
/// Most code ranges held across all maps (about 40 bytes each).
const MAX_RANGES: usize = 2 << 20;

#[derive(Debug)]
enum State {
    /// No perf map when last tried.
    Missing { tried_at: Instant },
    Open { map: PerfMap },
    /// Refused (logged once); never tried again for this process image.
    Refused,
}

#[derive(Debug)]
struct Process {
    state: State,
    exited_at: Option<Instant>,
    /// With `--java-perf-map`: whether it is a JVM, and when its perf map was last asked for.
    jvm: Option<bool>,
    /// When it was last asked, and how long to wait before asking again.
    asked: Option<(Instant, Duration)>,
    /// The attach thread's count of perf maps written when this one was asked for: once it
    /// grows, the map is looked for at once rather than after [`OPEN_RETRY`].
    awaiting: Option<u64>,
}

/// What the perf maps gave in a run, for the closing summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct JitFigures {
    /// Perf maps read (open now).
    pub maps: usize,
    /// Code ranges held.
    pub ranges: usize,
    /// Distinct functions named.
    pub functions: usize,
    /// Perf maps refused (a symbolic link, another owner, too big, not a file).
    pub refused: u64,
    /// Frames named from a perf map.
    pub named_frames: u64,
    /// Memory the function table holds, estimated.
    pub function_bytes: usize,
    /// With `--java-perf-map`: perf maps JVMs wrote when asked, and JVMs that could not be.
    pub jvm_written: u64,
    pub jvm_failed: u64,
}

/// Every process's perf map.
#[derive(Debug, Default)]
pub struct PerfMaps {
    processes: HashMap<u32, Process>,
    /// Processes whose refusal was logged: an exec event that arrives after the first samples
    /// starts the process afresh, and must not log it twice.
    logged: HashSet<u32>,
    ranges: usize,
    named_frames: u64,
    swept_at: Option<Instant>,
    /// Asks JVMs for perf maps (`--java-perf-map`).
    attach: Option<HotspotAttach>,
}

impl PerfMaps {
    /// Perf maps as processes write them, and with `ask_jvms` also asked of HotSpot JVMs
    /// whose samples land in JIT code their map lacks ([`hotspot`]).
    pub fn new(ask_jvms: bool) -> Self {
        let attach = ask_jvms.then(HotspotAttach::start).and_then(|started| started.map_err(|error| warn!("jit: --java-perf-map is off: {error:#}")).ok());
        PerfMaps { attach, ..PerfMaps::default() }
    }

    /// The JIT function at `address` in `pid`, from its perf map (opened or re-read as needed).
    pub fn lookup(&mut self, pid: u32, address: u64, functions: &mut JitFunctions) -> Option<JitFunctionId> {
        let found = self.lookup_in_map(pid, address, functions);
        if found.is_none() {
            self.ask_jvm(pid);
        }
        found
    }

    /// Asks `pid` for a fresh perf map if it is a JVM and was not asked recently.
    fn ask_jvm(&mut self, pid: u32) {
        let (Some(attach), Some(process)) = (&self.attach, self.processes.get_mut(&pid)) else { return };
        let now = Instant::now();
        if process.exited_at.is_some() || matches!(process.state, State::Refused) || process.asked.is_some_and(|(at, wait)| now.duration_since(at) < wait) {
            return;
        }
        let jvm = *process.jvm.get_or_insert_with(|| {
            let executable = crate::process::identity::read_executable_path(pid);
            Runtime::of_executable(executable.rsplit('/').next().unwrap_or(&executable)) == Runtime::Jvm
        });
        if jvm {
            // A JVM compiles most of its code early on: ask again soon, then less and less often.
            let wait = process.asked.map_or(FIRST_REQUEST_INTERVAL, |(_, wait)| (wait * 2).min(REQUEST_INTERVAL));
            process.asked = Some((now, wait));
            process.awaiting = Some(attach.written());
            attach.request(pid);
        }
    }

    fn lookup_in_map(&mut self, pid: u32, address: u64, functions: &mut JitFunctions) -> Option<JitFunctionId> {
        let now = Instant::now();
        self.sweep(now);
        if !self.processes.contains_key(&pid) && self.processes.len() >= MAX_PROCESSES {
            return None;
        }
        let process = self.processes.entry(pid).or_insert(Process { state: State::Missing { tried_at: now - OPEN_RETRY }, exited_at: None, jvm: None, asked: None, awaiting: None });
        let written = self.attach.as_ref().map_or(0, HotspotAttach::written);
        let answered = process.awaiting.is_some_and(|before| written > before);
        match &mut process.state {
            State::Missing { tried_at } if answered || now.duration_since(*tried_at) >= OPEN_RETRY => {
                process.awaiting = None;
                if self.logged.len() >= MAX_PROCESSES {
                    self.logged.clear();
                }
                process.state = open(pid, now, &mut self.logged);
            }
            State::Open { map } => {
                if let Some(found) = map.lookup(address) {
                    self.named_frames += 1;
                    return Some(found);
                }
            }
            _ => return None,
        }
        // Just opened, or a miss: read what was appended since (one `fstat` when nothing
        // was), then look again. Runtimes write the line before they run the code.
        let State::Open { map, .. } = &mut process.state else { return None };
        if self.ranges < MAX_RANGES {
            let before = map.len();
            if let Err(error) = map.refresh(functions) {
                debug!(pid, path = map.path(), %error, "jit: cannot read perf map");
            }
            self.ranges = (self.ranges + map.len()).saturating_sub(before);
        }
        let found = map.lookup(address);
        self.named_frames += found.is_some() as u64;
        found
    }

    /// `pid` has exited: its map goes after [`EXIT_GRACE`].
    pub fn exited(&mut self, pid: u32) {
        if let Some(process) = self.processes.get_mut(&pid) {
            process.exited_at = Some(Instant::now());
        }
    }

    /// `pid` has exec'd a new program: its old map no longer describes it.
    pub fn forget(&mut self, pid: u32) {
        if let Some(Process { state: State::Open { map, .. }, .. }) = self.processes.remove(&pid) {
            self.ranges = self.ranges.saturating_sub(map.len());
        }
    }

    /// Figures for the summary.
    pub fn figures(&self, functions: &JitFunctions) -> JitFigures {
        let maps = self.processes.values().filter(|p| matches!(p.state, State::Open { .. })).count();
        let asked = |counter: fn(&hotspot::AttachCounters) -> &std::sync::atomic::AtomicU64| {
            self.attach.as_ref().map_or(0, |attach| counter(&attach.counters).load(std::sync::atomic::Ordering::Relaxed))
        };
        JitFigures {
            maps,
            ranges: self.ranges,
            functions: functions.len() - 1,
            refused: self.logged.len() as u64,
            named_frames: self.named_frames,
            function_bytes: functions.bytes(),
            jvm_written: asked(|c| &c.written),
            jvm_failed: asked(|c| &c.failed),
        }
    }

    fn sweep(&mut self, now: Instant) {
        if self.swept_at.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        self.swept_at = Some(now);
        let gone: Vec<u32> = self.processes.iter().filter(|(_, p)| p.exited_at.is_some_and(|at| now.duration_since(at) >= EXIT_GRACE)).map(|(&pid, _)| pid).collect();
        for pid in gone {
            self.forget(pid);
        }
    }
}

/// Opens `pid`'s perf map; a refusal is logged once per process, as one line.
fn open(pid: u32, now: Instant, logged: &mut HashSet<u32>) -> State {
    match open_perf_map(pid) {
        Ok(opened) => {
            let executable = crate::process::identity::read_executable_path(pid);
            let name = executable.rsplit('/').next().unwrap_or(&executable);
            let runtime = Runtime::of_executable(name);
            debug!(pid, path = %opened.path, bytes = opened.bytes, ?runtime, "jit: reading perf map");
            State::Open { map: PerfMap::new(opened, runtime) }
        }
        Err(Refusal::Absent | Refusal::Stale | Refusal::ProcessGone) => State::Missing { tried_at: now },
        Err(refusal) => {
            if logged.insert(pid) {
                warn!("jit: not reading the perf map of PID {pid} (/tmp/perf-PID.map in its root): {refusal}");
            }
            State::Refused
        }
    }
}
