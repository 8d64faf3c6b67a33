//! Maps shared by oxeye's BPF programs.

use agent_common::{
    counters::Counter,
    files::{FileHintRecord, MAX_FILE_HINTS},
    sampler::{SampleRecord, MAX_FRAMES},
    python::{PythonProcess, PythonThread},
    sampler::SLOTS_PER_PYTHON_FRAME,
    unwind::{tail_call, ExecMapping, MappingRange, UnwindEntry, UnwindRule},
};
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};

/// Samples and process events, in the order the kernel produced them.
///
/// - Records: [`agent_common::sampler::SampleRecord`] and [`agent_common::records::ProcessEvent`],
///   told apart by their first `u32` ([`agent_common::records::RecordKind`]).
/// - Written by: `sampler` and `process_events`. Read by: the agent's event reader.
/// - Size: set by user space at load time from samples per second × CPUs × record size ×
///   its drain interval, with headroom (see `agent/src/bpf/sizing.rs`); this default is
///   overridden.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Event counters, one `u64` per [`Counter`], per CPU.
///
/// - Key: `Counter as u32`. Value: count since load.
/// - Written by: every program. Read by: the agent, summed over CPUs, for its reports.
/// - Size: [`Counter::COUNT`] entries (user space sets the same at load time).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Adds one to `counter` on this CPU.
///
/// Kprobe, tracepoint and perf_event programs run under the kernel's per-CPU
/// `bpf_prog_active` guard, so none starts on a CPU while another runs there (it is skipped).
/// An fentry program is not under that guard: the sampler's timer interrupt may land in the
/// middle of one, and both may count. The increment is then a plain read-modify-write that the
/// interrupt can split, losing one count; that is the worst case, and a tolerable one for a
/// diagnostic counter (the BPF target has no atomic add that stable Rust can emit).
#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a valid, aligned pointer into this CPU's map value, which lives as long as
        // the map; see above for who else may write it.
        unsafe { *slot += 1 };
    }
}

/// The sample being built on this CPU, and the unwinder's registers, carried across the
/// unwinder's tail calls.
///
/// - Key: 0. Value: [`Scratch`]. Written and read by `sampler` and `unwinder` only.
/// - Size: one entry per CPU.
///
/// Nothing else on the CPU can write it while a sample is built: both programs are perf_event
/// programs, which run under the kernel's per-CPU `bpf_prog_active` guard (another perf_event,
/// kprobe or tracepoint program that would start on this CPU meanwhile is skipped), and a
/// tail call continues the same run. No other program uses this map (the network programs
/// have their own, `PAYLOAD_SCRATCH`, and fentry programs use none), except that the exec
/// tracepoint keeps its last wake-up time in [`Scratch::last_exec_wakeup_ns`], a field nothing
/// else touches, and `oxeye_exec_files` builds a process's first mappings in
/// [`Scratch::hints`], which a sample only uses from its start to its end (neither can run
/// while a sample is built on this CPU).
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Unwinder state between frames.
#[repr(C)]
pub struct Scratch {
    /// Program counter of the frame being unwound.
    pub pc: u64,
    /// Stack pointer in that frame.
    pub sp: u64,
    /// Frame pointer (RBP / X29) in that frame.
    pub fp: u64,
    /// Link register (X30): only meaningful while `exact_pc` is 1.
    pub lr: u64,
    /// 1 when `pc` is an interrupted instruction (not a return address) and `lr` is live.
    pub exact_pc: u32,
    /// Tail calls made for this sample so far.
    pub tail_calls: u32,
    /// Where this sample's process's mappings are (looked up once per sample).
    pub mappings: MappingRange,
    /// The mapping the previous frame was in (all zero: none).
    pub last_mapping: ExecMapping,
    /// Python walker: the next frame to record (0: none).
    pub python_frame: u64,
    /// Python walker: program runs for this sample so far.
    pub python_runs: u32,
    /// Padding.
    pub reserved: u32,
    /// When the exec tracepoint last woke user space up on this CPU (`bpf_ktime_get_ns`).
    pub last_exec_wakeup_ns: u64,
    /// Python walker: the frame being read.
    pub python_frame_window: [u64; crate::python::FRAME_WINDOW_WORDS],
    /// Python walker: the start of the frame's code object.
    pub python_code_window: [u64; crate::python::CODE_WINDOW_WORDS],
    /// The mappings `bpf_find_vma` found for this sample (undescribed processes only).
    pub hints: FileHintRecord,
    /// The same mappings, with their tables, to walk later frames in them.
    pub hint_mappings: [ExecMapping; MAX_FILE_HINTS],
    /// The record sent when the walk ends.
    pub record: SampleRecord,
    /// Room after the record's frames, so a frame index masked to [`FRAME_SLOTS`] is always
    /// inside the map value (see `unwinder::step`).
    pub overflow: [u64; FRAME_SLOTS - MAX_FRAMES],
}

/// A power of two at least [`MAX_FRAMES`]: frame indices are masked to it.
pub const FRAME_SLOTS: usize = 512;
const _: () = assert!(FRAME_SLOTS.is_power_of_two() && FRAME_SLOTS >= MAX_FRAMES);

/// Unwind rows of every file with a table, each file's rows contiguous and sorted by `pc`.
///
/// - Key: row index. Value: [`UnwindEntry`] (8 bytes: address and rule index).
/// - Written by: user space, through a memory mapping of the array (no syscall per row).
///   Read by: `unwinder`.
/// - Size: `--unwind-table-memory-mb` at load time; user space allocates ranges of it to
///   files and evicts the tables of files no process maps any more.
#[map]
pub static UNWIND_ROWS: Array<UnwindEntry> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// The distinct unwind rules the rows point to (a whole machine has a few hundred).
///
/// - Key: rule index; 0 is always "no unwind information". Value: [`UnwindRule`] (16 bytes).
/// - Written by: user space through a memory mapping, each rule once, before any row points
///   to it; never rewritten. Read by: `unwinder`.
/// - Size: fixed at load time (65,536 rules, 1 MiB); a rule past it reads as "no info".
#[map]
pub static UNWIND_RULES: Array<UnwindRule> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Executable mappings of every known process, each process's contiguous and sorted by
/// address.
///
/// - Key: mapping index. Value: [`ExecMapping`] (32 bytes).
/// - Written by: user space, through a memory mapping. Read by: `unwinder`.
/// - Size: set at load time (about 64 mappings per process for the process limit).
#[map]
pub static EXEC_MAPPINGS: Array<ExecMapping> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Where each process's mappings are in [`EXEC_MAPPINGS`].
///
/// - Key: process id (thread-group id). Value: [`MappingRange`].
/// - Written by: user space after the mappings (and their rows) are in place, so the BPF side
///   never sees a half-written process. Read by: `unwinder`.
/// - Size: the most processes described at once, set at load time; preallocated, as
///   perf_event programs require on older kernels.
#[map]
pub static PROCESS_MAPPINGS: HashMap<u32, MappingRange> = HashMap::with_max_entries(1, 0);

/// The unwinder and the Python walker, tail-called from the sampler and from themselves.
///
/// - Key: an index of `agent_common::unwind::tail_call`. Value: that program. Written by user
///   space at load time.
#[map]
pub static UNWIND_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(tail_call::COUNT, 0);

/// The same for the off-CPU sampler, a tracepoint program: tracepoint copies of the unwinder
/// and the Python walker (a tail call stays within one program type).
///
/// - Key: an index of `agent_common::unwind::tail_call`. Value: that program. Written by user
///   space at load time, when off-CPU sampling is on.
#[map]
pub static OFF_CPU_PROGRAMS: ProgramArray = ProgramArray::with_max_entries(tail_call::COUNT, 0);

/// Tail calls one sample's chain of programs may make: every supported kernel allows 32
/// (5.17 made it 33).
pub const TAIL_CALL_BUDGET: u32 = 32;

/// Known CPython processes: where their runtime state is and how this version lays it out.
///
/// - Key: process id (thread-group id). Value: [`PythonProcess`] (80 bytes).
/// - Written by: user space, when it recognises a process's interpreter; removed at exit.
///   Read by: `unwinder` (whether to hand over) and `python`.
/// - Size: set at load time, the same as [`PROCESS_MAPPINGS`]; preallocated.
#[map]
pub static PYTHON_PROCESSES: HashMap<u32, PythonProcess> = HashMap::with_max_entries(1, 0);

/// Each sampled thread's `PyThreadState`, so the thread list is searched once per thread.
///
/// - Key: `pid << 32 | tid`. Value: [`PythonThread`] (16 bytes). A cached state is checked
///   against the thread's id at every use; a thread with none is searched again after a
///   second.
/// - Written and read by: `python`.
/// - Size: set at load time (threads of Python processes sampled recently); LRU, so the
///   oldest threads make room.
#[map]
pub static PYTHON_THREADS: LruHashMap<u64, PythonThread> = LruHashMap::with_max_entries(1, 0);

/// Sends the used part of this CPU's sample record to user space.
#[inline(always)]
pub fn submit(record: &SampleRecord) {
    let header = &record.header;
    let frames = header.kernel_frame_count as usize + header.user_frame_count as usize + SLOTS_PER_PYTHON_FRAME * header.python_frame_count as usize;
    if frames > MAX_FRAMES {
        return;
    }
    let len = SampleRecord::used_bytes(frames);
    // SAFETY: `len` is within the record, which is plain data.
    let bytes = unsafe { core::slice::from_raw_parts((record as *const SampleRecord).cast::<u8>(), len) };
    // User space drains on a timer: no wake-up per sample.
    if EVENTS.output::<[u8]>(bytes, BPF_RB_NO_WAKEUP as u64).is_err() {
        count(Counter::SampleRingFull);
    } else {
        count(Counter::SamplesSent);
    }
}
