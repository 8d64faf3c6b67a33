//! The CPython frame walker: after the native walk of a known CPython process's sample, finds
//! the sampled thread's `PyThreadState` and records its Python frames, innermost first, after
//! the native frames (layout and encoding: `agent_common::python`).
//!
//! Every read goes through `bpf_probe_read_user`, which fails cleanly on a bad address: a
//! process in the middle of changing its frames gives a shorter stack, never a fault. Each
//! frame costs two reads: a window of the frame, and a window of its code object.

use agent_common::{
    counters::Counter,
    python::{
        code_tag, frame_word, frames, PythonLayout, PythonProcess, PythonThread, CODE_WINDOW, ENTRY_FRAME,
        FRAME_OWNED_BY_CSTACK, INSTRUCTION_MASK, MAX_PYTHON_FRAMES, MAX_PYTHON_THREADS, NO_OFFSET,
    },
    sampler::{MAX_KERNEL_FRAMES, MAX_USER_FRAMES, SLOTS_PER_PYTHON_FRAME},
    unwind::{tail_call, StackEnd, FLAG_PYTHON},
};
use aya_ebpf::{
    bindings::bpf_pidns_info,
    helpers::{
        bpf_get_ns_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_probe_read_user as probe_read_user,
    },
    macros::{perf_event, raw_tracepoint},
    maps::ProgramArray,
    programs::{PerfEventContext, RawTracePointContext},
    EbpfContext,
};

use crate::maps::{count, submit, Scratch, FRAME_SLOTS, PYTHON_PROCESSES, PYTHON_THREADS, SCRATCH, TAIL_CALL_BUDGET, OFF_CPU_PROGRAMS, UNWIND_PROGRAMS};

/// Python frames walked per program run, between tail calls. Verification time grows faster
/// than the loop: 32 frames per run took the kernel 0.75 s to verify, 8 take 0.05 s.
const FRAMES_PER_PROGRAM: u32 = 8;
/// Runs per sample: enough for [`MAX_PYTHON_FRAMES`], as far as the tail-call budget left by
/// the native walk allows.
const MAX_RUNS: u32 = (MAX_PYTHON_FRAMES as u32).div_ceil(FRAMES_PER_PROGRAM);
/// How long a thread found to have no `PyThreadState` is taken at its word before the thread
/// list is searched again (a native thread may attach to the interpreter later).
const NO_THREAD_STATE_RETRY_NS: u64 = 200_000_000;
/// Words in [`Scratch::python_frame_window`] (a power of two: offsets are masked to it).
pub const FRAME_WINDOW_WORDS: usize = 16;
/// Words in [`Scratch::python_code_window`] (a power of two, holding [`CODE_WINDOW`] bytes).
pub const CODE_WINDOW_WORDS: usize = 32;
const _: () = assert!(CODE_WINDOW <= 8 * CODE_WINDOW_WORDS && FRAME_WINDOW_WORDS.is_power_of_two() && CODE_WINDOW_WORDS.is_power_of_two());

/// Where the native walk ends: hands the sample to the Python walker when its process is a
/// known CPython, and sends it otherwise (or when the tail call fails).
#[inline(always)]
pub fn finish<C: EbpfContext>(ctx: &C, programs: &ProgramArray, scratch: &mut Scratch) {
    crate::files::send_hints(scratch);
    // SAFETY: only checks for the key.
    if unsafe { PYTHON_PROCESSES.get(&scratch.record.header.pid) }.is_some() {
        scratch.python_runs = 0;
        // SAFETY: the table holds the Python walker of this program's type at this index.
        unsafe { programs.tail_call(ctx, tail_call::PYTHON) };
        count(Counter::PythonTailCallFailed);
    }
    submit(&scratch.record);
}

/// Walks up to [`FRAMES_PER_PROGRAM`] Python frames, then tail-calls itself or sends the
/// record.
#[perf_event]
pub fn oxeye_python(ctx: PerfEventContext) -> u32 {
    walk(&ctx, &UNWIND_PROGRAMS)
}

/// [`oxeye_python`] for the off-CPU sampler, a raw tracepoint program.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn oxeye_off_python(ctx: RawTracePointContext) -> u32 {
    walk(&ctx, &OFF_CPU_PROGRAMS)
}

/// The walk of [`oxeye_python`], tail-calling through `programs`.
#[inline(always)]
fn walk<C: EbpfContext>(ctx: &C, programs: &ProgramArray) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch entry; see `SCRATCH` for why nothing else touches it.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: the value is copied out at once.
    let Some(process) = (unsafe { PYTHON_PROCESSES.get(&scratch.record.header.pid) }).copied() else {
        submit(&scratch.record);
        return 0;
    };
    if scratch.python_runs == 0 {
        let header = &mut scratch.record.header;
        header.flags |= FLAG_PYTHON;
        header.python_frame_count = 0;
        header.python_stack_end = StackEnd::Complete as u32;
        count(Counter::PythonWalks);
        match innermost_frame(&process, header.pid, header.tid) {
            Ok(frame) if frame != 0 => scratch.python_frame = frame,
            Ok(_) => {
                count(Counter::PythonThreadNotFound);
                submit(&scratch.record);
                return 0;
            }
            Err(end) => return end_walk(scratch, end),
        }
    }
    for _ in 0..FRAMES_PER_PROGRAM {
        if let Err(end) = step(scratch, &process) {
            return end_walk(scratch, end);
        }
    }
    scratch.python_runs += 1;
    // Tail calls so far: the sampler's into the unwinder, the unwinder's into itself, its
    // one into this program, and this program's into itself. A native walk of 128 frames
    // leaves 5 runs (40 frames); a shallow one, all 16.
    let used = 2 + scratch.tail_calls + scratch.python_runs;
    if scratch.python_runs < MAX_RUNS && used < TAIL_CALL_BUDGET {
        // SAFETY: this very program.
        unsafe { programs.tail_call(ctx, tail_call::PYTHON) };
        count(Counter::PythonTailCallFailed);
    }
    end_walk(scratch, StackEnd::DepthLimit)
}

fn end_walk(scratch: &mut Scratch, end: StackEnd) -> u32 {
    if end == StackEnd::BadRead {
        count(Counter::PythonReadFailed);
    }
    scratch.record.header.python_stack_end = end as u32;
    submit(&scratch.record);
    0
}

/// The sampled thread's innermost frame (0: the thread has no Python state, or no frame).
#[inline(always)]
fn innermost_frame(process: &PythonProcess, pid: u32, tid: u32) -> Result<u64, StackEnd> {
    let layout = &process.layout;
    let thread_state = thread_state(process, pid, tid)?;
    if thread_state == 0 {
        return Ok(0);
    }
    let frame = read_word(thread_state + layout.thread_frame as u64)?;
    if layout.cframe_current == NO_OFFSET || frame == 0 {
        return Ok(frame);
    }
    read_word(frame + layout.cframe_current as u64)
}

/// The thread's `PyThreadState`: from the cache if it still belongs to the thread, else
/// from a search of the interpreter's thread list. A thread the whole list does not hold (a
/// native thread) is remembered as such for a while; one searched before the interpreter has
/// started is not remembered at all, so a new process is walked from its first frames.
#[inline(always)]
fn thread_state(process: &PythonProcess, pid: u32, tid: u32) -> Result<u64, StackEnd> {
    let id = namespace_tid(process, tid)?;
    let key = ((pid as u64) << 32) | tid as u64;
    // SAFETY: helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is copied out at once.
    if let Some(cached) = unsafe { PYTHON_THREADS.get(&key) }.copied() {
        if cached.thread_state == 0 {
            if now.wrapping_sub(cached.looked_up_ns) < NO_THREAD_STATE_RETRY_NS {
                return Ok(0);
            }
        } else if belongs_to(cached.thread_state, id, &process.layout) {
            return Ok(cached.thread_state);
        }
    }
    let found = match search_threads(process, id)? {
        Search::Found(thread_state) => thread_state,
        Search::Absent => 0,
        Search::NotStarted => return Ok(0),
    };
    // A failed insert only costs a search next time.
    let _ = PYTHON_THREADS.insert(&key, &PythonThread { thread_state: found, looked_up_ns: now }, 0);
    Ok(found)
}

/// What a search of the thread list found.
enum Search {
    /// The thread's state.
    Found(u64),
    /// The list, searched to its end (or to [`MAX_PYTHON_THREADS`]), does not hold it.
    Absent,
    /// The interpreter has no state or no threads yet.
    NotStarted,
}

/// The thread's id as the process sees it: in its pid namespace, if it has its own.
#[inline(always)]
fn namespace_tid(process: &PythonProcess, tid: u32) -> Result<u32, StackEnd> {
    if process.pid_namespace_inode == 0 {
        return Ok(tid);
    }
    let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `info` is a writable `bpf_pidns_info` of the size passed.
    let result = unsafe {
        bpf_get_ns_current_pid_tgid(process.pid_namespace_dev, process.pid_namespace_inode, &mut info, size_of::<bpf_pidns_info>() as u32)
    };
    if result != 0 { Err(StackEnd::NoUserRegisters) } else { Ok(info.pid) }
}

/// Whether `thread_state` is the state of the thread whose (namespace) id is `id`.
#[inline(always)]
fn belongs_to(thread_state: u64, id: u32, layout: &PythonLayout) -> bool {
    let Ok(value) = read_word(thread_state + layout.thread_id as u64) else { return false };
    if layout.pthread_tid == NO_OFFSET {
        return value == id as u64;
    }
    // SAFETY: the helper handles faults; the value is plain data.
    let pthread_tid = unsafe { aya_ebpf::helpers::bpf_probe_read_user((value + layout.pthread_tid as u64) as *const u32) };
    pthread_tid.is_ok_and(|tid| tid == id)
}

/// Searches the main interpreter's thread list for the thread `id`.
#[inline(always)]
fn search_threads(process: &PythonProcess, id: u32) -> Result<Search, StackEnd> {
    let layout = &process.layout;
    let interpreter = read_word(process.runtime + layout.runtime_interpreter as u64)?;
    if interpreter == 0 {
        return Ok(Search::NotStarted);
    }
    let mut thread_state = read_word(interpreter + layout.interpreter_threads as u64)?;
    if thread_state == 0 {
        return Ok(Search::NotStarted);
    }
    for _ in 0..MAX_PYTHON_THREADS {
        if thread_state == 0 {
            return Ok(Search::Absent);
        }
        if belongs_to(thread_state, id, layout) {
            return Ok(Search::Found(thread_state));
        }
        thread_state = read_word(thread_state + layout.thread_next as u64)?;
    }
    Ok(Search::Absent)
}

/// Records the current Python frame (unless it is a shim or has no code object) and moves
/// to its caller; `Err` ends the walk.
#[inline(always)]
fn step(scratch: &mut Scratch, process: &PythonProcess) -> Result<(), StackEnd> {
    let frame = scratch.python_frame;
    if frame == 0 {
        return Err(StackEnd::Complete);
    }
    let count = scratch.record.header.python_frame_count;
    if count >= MAX_PYTHON_FRAMES as u32 {
        return Err(StackEnd::DepthLimit);
    }
    let layout = &process.layout;
    let window = &mut scratch.python_frame_window;
    read_window(window, frame, layout.frame_bytes as u32)?;
    let code = word(window, layout.frame_code);
    scratch.python_frame = word(window, layout.frame_previous);
    let entry = match layout.frames {
        frames::FRAME_OBJECTS => true,
        frames::INTERPRETER_FRAMES_311 => byte(window, layout.frame_is_entry) != 0,
        _ => {
            if byte(window, layout.frame_owner) == FRAME_OWNED_BY_CSTACK {
                mark_entry(scratch);
                return Ok(());
            }
            false
        }
    };
    let raw_instruction = word(window, layout.frame_instruction);
    if code == 0 {
        return Ok(());
    }
    let code_window = &mut scratch.python_code_window;
    read_window(code_window, code, CODE_WINDOW as u32)?;
    if word(code_window, 8) != process.code_type {
        return Ok(()); // not a code object: nothing to name
    }
    let tag = code_tag(
        word(code_window, layout.code_filename),
        word(code_window, layout.code_name),
        word(code_window, layout.code_linetable),
        word(code_window, layout.code_firstlineno) as u32,
    );
    let instruction = if layout.frames == frames::FRAME_OBJECTS {
        raw_instruction as u32 // f_lasti, a C int
    } else {
        // A pointer into the bytecode; before its start for a frame not yet begun.
        match raw_instruction.checked_sub(code + layout.code_bytecode as u64) {
            Some(bytes) => (bytes / 2) as u32,
            None => INSTRUCTION_MASK,
        }
    };
    record(scratch, code, frame_word(tag, instruction, entry));
    Ok(())
}

/// A shim frame sits right below an activation's first frame: marks the frame recorded last
/// as that first frame, or records an empty activation (the shim is innermost, or follows
/// another), so that user space gives every native activation its own frames.
#[inline(always)]
fn mark_entry(scratch: &mut Scratch) {
    let count = scratch.record.header.python_frame_count;
    if count > 0 {
        let slot = python_slot(scratch, count - 1) + 1;
        let word = frame_slot(scratch, slot);
        if *word & ENTRY_FRAME as u64 == 0 {
            *word |= ENTRY_FRAME as u64;
            return;
        }
    }
    record(scratch, 0, frame_word(0, INSTRUCTION_MASK, true));
}

#[inline(always)]
fn record(scratch: &mut Scratch, code: u64, location: u64) {
    let count = scratch.record.header.python_frame_count;
    if count >= MAX_PYTHON_FRAMES as u32 {
        return;
    }
    let slot = python_slot(scratch, count);
    *frame_slot(scratch, slot) = code;
    *frame_slot(scratch, slot + 1) = location;
    scratch.record.header.python_frame_count = count + 1;
}

/// The record's frame slot `slot`, masked into the frames and the overflow after them.
///
/// The verifier must see the bound on the index itself. LLVM drops a mask it can prove
/// redundant from earlier checks, which the verifier may not have followed, so the index goes
/// through a volatile read first.
#[inline(always)]
fn frame_slot(scratch: &mut Scratch, slot: usize) -> &mut u64 {
    // SAFETY: reading a local.
    let slot = unsafe { core::ptr::read_volatile(&slot) } & (FRAME_SLOTS - 1);
    // SAFETY: `slot` is inside the frames and the overflow that follows them in `Scratch`.
    unsafe { &mut *scratch.record.frames.as_mut_ptr().add(slot) }
}

/// The first slot of Python frame `index`, after the kernel and native user frames.
#[inline(always)]
fn python_slot(scratch: &Scratch, index: u32) -> usize {
    let header = &scratch.record.header;
    let native = header.kernel_frame_count.min(MAX_KERNEL_FRAMES as u32) + header.user_frame_count.min(MAX_USER_FRAMES as u32);
    (native + SLOTS_PER_PYTHON_FRAME as u32 * index) as usize
}

/// Copies `len` bytes (at most the window) of the process's memory at `address`.
#[inline(always)]
fn read_window<const WORDS: usize>(window: &mut [u64; WORDS], address: u64, len: u32) -> Result<(), StackEnd> {
    let len = len.min(8 * WORDS as u32);
    // SAFETY: `len` is within the window; the helper handles faults.
    let result = unsafe { probe_read_user(window.as_mut_ptr().cast(), len, address as *const _) };
    if result != 0 { Err(StackEnd::BadRead) } else { Ok(()) }
}

/// The 8-byte word holding the field at `offset` (pointer fields are 8-aligned), shifted so
/// that the field starts at bit 0.
#[inline(always)]
fn word<const WORDS: usize>(window: &[u64; WORDS], offset: u16) -> u64 {
    let index = (offset as usize >> 3) & (WORDS - 1);
    // SAFETY: the index is masked into the array.
    let value = unsafe { *window.as_ptr().add(index) };
    value >> ((offset as u64 & 7) * 8)
}

#[inline(always)]
fn byte<const WORDS: usize>(window: &[u64; WORDS], offset: u16) -> u8 {
    if offset == NO_OFFSET { 0 } else { word(window, offset) as u8 }
}

#[inline(always)]
fn read_word(address: u64) -> Result<u64, StackEnd> {
    // SAFETY: the helper handles faults; the value is plain data.
    unsafe { aya_ebpf::helpers::bpf_probe_read_user(address as *const u64) }.map_err(|_| StackEnd::BadRead)
}
