//! The user-stack unwinder: walks a user stack with the `.eh_frame` tables user space put in
//! [`UNWIND_ROWS`], and with frame pointers where no table covers the code.
//!
//! The sampler reads the user registers and tail-calls `oxeye_unwind`; each run of it walks
//! up to [`FRAMES_PER_PROGRAM`] frames (keeping every program far under the verifier's limits)
//! and tail-calls itself until the stack ends or [`MAX_USER_FRAMES`] frames are walked. The
//! registers between runs live in this CPU's [`Scratch`]. The record always says why the walk
//! ended ([`StackEnd`]), so user space can end the stack with an explicit error frame.
//!
//! Register offsets in `struct pt_regs` and the architecture come from user space
//! (`UNWIND_CONFIG`): the same object runs on x86-64 and arm64, with no CO-RE.

use agent_common::{
    counters::Counter,
    sampler::{MAX_FRAMES, MAX_KERNEL_FRAMES, MAX_USER_FRAMES},
    unwind::{
        arch, cfa, fp, ra, row, tail_call, ExecMapping, MappingRange, StackEnd, UnwindConfig, UnwindRule, FLAG_UNKNOWN_MAPPING,
        MAPPING_SEARCH_STEPS, MAX_FILE_ROWS, MAX_PROCESS_MAPPINGS, ROW_SEARCH_STEPS,
    },
};
use aya_ebpf::{
    bindings::bpf_perf_event_data,
    helpers::{bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs},
    macros::{perf_event, raw_tracepoint},
    maps::ProgramArray,
    programs::{PerfEventContext, RawTracePointContext},
    EbpfContext,
};

use crate::read_only::ReadOnly;
use crate::{files, python};
use crate::maps::{count, Scratch, TAIL_CALL_BUDGET, FRAME_SLOTS, EXEC_MAPPINGS, PROCESS_MAPPINGS, SCRATCH, OFF_CPU_PROGRAMS, UNWIND_PROGRAMS, UNWIND_ROWS, UNWIND_RULES};

/// Frames walked per program run, between tail calls.
const FRAMES_PER_PROGRAM: u32 = 5;
/// Tail calls per sample: enough for [`MAX_USER_FRAMES`], leaving the Python walker a few of
/// the chain's [`TAIL_CALL_BUDGET`].
const MAX_TAIL_CALLS: u32 = (MAX_USER_FRAMES as u32).div_ceil(FRAMES_PER_PROGRAM) + 1;
const _: () = assert!(MAX_TAIL_CALLS + 4 <= TAIL_CALL_BUDGET);

/// x86-64: offset of `uc.uc_mcontext` in `struct rt_sigframe`, where the interrupted
/// registers are once the handler has returned into `__restore_rt`.
const X86_SIGFRAME_REGS: u64 = 40;
/// arm64: offset of `uc.uc_mcontext.regs[0]` in `struct rt_sigframe` (siginfo 128 +
/// `uc_mcontext` 176 + `fault_address` 8).
const ARM64_SIGFRAME_REGS: u64 = 312;

/// How to read registers, set by user space at load time.
#[unsafe(no_mangle)]
pub static UNWIND_CONFIG: ReadOnly<UnwindConfig> = ReadOnly::new(UnwindConfig {
    arch: 0,
    use_tables: 0,
    regs_ip: 0,
    regs_sp: 0,
    regs_fp: 0,
    regs_lr: 0,
    regs_mode: 0,
    reserved: 0,
    address_mask: u64::MAX,
});

/// When the sample interrupted user code, copies its registers from the perf event into
/// `scratch` and returns true: the common case, with no kernel stack and no memory reads.
#[inline(always)]
pub fn registers_from_context(ctx: &PerfEventContext, scratch: &mut Scratch) -> bool {
    // SAFETY: a perf_event program's context is a `bpf_perf_event_data`; its registers are
    // read with fixed offsets, as the verifier requires.
    let regs = unsafe { &(*(ctx.as_ptr() as *const bpf_perf_event_data)).regs };
    #[cfg(bpf_target_arch = "x86_64")]
    {
        if regs.cs & 3 != 3 {
            return false;
        }
        (scratch.pc, scratch.sp, scratch.fp, scratch.lr) = (regs.rip, regs.rsp, regs.rbp, 0);
        true
    }
    #[cfg(bpf_target_arch = "aarch64")]
    {
        if regs.pstate & 0x1f != 0 {
            return false;
        }
        let mask = UNWIND_CONFIG.get().address_mask;
        (scratch.pc, scratch.sp, scratch.fp, scratch.lr) = (regs.pc & mask, regs.sp, regs.regs[29], regs.regs[30] & mask);
        true
    }
    #[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
    {
        let _ = (regs, scratch);
        false
    }
}

/// Starts the walk: `in_user` says [`registers_from_context`] already set the registers;
/// otherwise the current task's user registers are read from its kernel stack. Sends the
/// record itself when there is nothing to walk or the tail call fails.
#[inline(always)]
pub fn start<C: EbpfContext>(ctx: &C, programs: &ProgramArray, scratch: &mut Scratch, in_user: bool) {
    let config = UNWIND_CONFIG.get();
    let registers = if in_user && scratch.pc != 0 { Ok(()) } else { user_registers(&config, scratch) };
    // Counted from here on by the Python walker too, whether or not the unwinder runs.
    scratch.tail_calls = 0;
    match registers {
        Ok(()) => {
            scratch.exact_pc = 1;
            scratch.tail_calls = 0;
            // SAFETY: `programs` holds the unwinder of this program's type at index 0.
            unsafe { programs.tail_call(ctx, tail_call::UNWIND) };
            count(Counter::UnwindTailCallFailed);
        }
        Err(end) => scratch.record.header.user_stack_end = end as u32,
    }
    python::finish(ctx, programs, scratch);
}

/// The user registers saved at the last entry into the kernel (a sample taken in user mode
/// interrupted user code, so these are its registers too).
#[inline(always)]
fn user_registers(config: &UnwindConfig, scratch: &mut Scratch) -> Result<(), StackEnd> {
    // SAFETY: helpers on the current task; the result is checked before use.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    if regs == 0 {
        return Err(StackEnd::NoUserRegisters);
    }
    let read = |offset: u32| -> Result<u64, StackEnd> {
        // SAFETY: reading kernel memory through the helper, which handles faults.
        unsafe { bpf_probe_read_kernel((regs + offset as u64) as *const u64) }.map_err(|_| StackEnd::NoUserRegisters)
    };
    let mode = read(config.regs_mode)?;
    let user_mode = if config.arch == arch::AARCH64 {
        mode & 0x1f == 0 // PSTATE.M: EL0t, AArch64
    } else {
        mode & 3 == 3 // CS: ring 3
    };
    if !user_mode {
        return Err(StackEnd::NoUserRegisters); // a kernel thread
    }
    scratch.pc = read(config.regs_ip)?;
    scratch.sp = read(config.regs_sp)?;
    scratch.fp = read(config.regs_fp)?;
    scratch.lr = if config.arch == arch::AARCH64 { read(config.regs_lr)? & config.address_mask } else { 0 };
    if scratch.pc == 0 {
        return Err(StackEnd::NoUserRegisters);
    }
    Ok(())
}

/// Walks up to [`FRAMES_PER_PROGRAM`] frames, then tail-calls itself or sends the record.
#[perf_event]
pub fn oxeye_unwind(ctx: PerfEventContext) -> u32 {
    walk(&ctx, &UNWIND_PROGRAMS)
}

/// [`oxeye_unwind`] for the off-CPU sampler, a raw tracepoint program (a tail call stays
/// within one program type).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn oxeye_off_unwind(ctx: RawTracePointContext) -> u32 {
    walk(&ctx, &OFF_CPU_PROGRAMS)
}

/// The walk of [`oxeye_unwind`], tail-calling through `programs`.
#[inline(always)]
fn walk<C: EbpfContext>(ctx: &C, programs: &ProgramArray) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch entry, which no other program touches while the sampler and
    // this chain of tail calls run (see `SCRATCH`).
    let scratch = unsafe { &mut *scratch };
    let config = UNWIND_CONFIG.get();
    if scratch.tail_calls == 0 {
        // Once per sample: where the process's mappings are. None (len 0) for a process user
        // space has not described yet: frame pointers only.
        scratch.mappings = MappingRange::default();
        scratch.last_mapping = ExecMapping::default();
        if config.use_tables != 0 {
            // SAFETY: the value is copied out at once.
            match unsafe { PROCESS_MAPPINGS.get(&scratch.record.header.pid) } {
                Some(range) => scratch.mappings = *range,
                None => {
                    count(Counter::UnwindUnknownProcess);
                    scratch.record.header.flags |= FLAG_UNKNOWN_MAPPING;
                }
            }
        }
        // A process too young to be described: the code mappings the kernel side recorded.
        scratch.hints.count = 0;
        if scratch.mappings.len == 0 {
            files::load_hints(scratch);
        }
    }
    for _ in 0..FRAMES_PER_PROGRAM {
        if let Err(end) = step(scratch, &config) {
            if end.is_error() {
                count(Counter::UserStackError);
            }
            scratch.record.header.user_stack_end = end as u32;
            python::finish(ctx, programs, scratch);
            return 0;
        }
    }
    scratch.tail_calls += 1;
    if scratch.tail_calls < MAX_TAIL_CALLS {
        // SAFETY: index 0 holds this very program.
        unsafe { programs.tail_call(ctx, tail_call::UNWIND) };
        count(Counter::UnwindTailCallFailed);
    }
    scratch.record.header.user_stack_end = StackEnd::DepthLimit as u32;
    python::finish(ctx, programs, scratch);
    0
}

/// Records the current frame and moves the registers to its caller's.
#[inline(always)]
fn step(scratch: &mut Scratch, config: &UnwindConfig) -> Result<(), StackEnd> {
    let header = &mut scratch.record.header;
    let kernel = header.kernel_frame_count.min(MAX_KERNEL_FRAMES as u32);
    if header.user_frame_count >= MAX_USER_FRAMES as u32 {
        return Err(StackEnd::DepthLimit);
    }
    let slot = (kernel + header.user_frame_count) as usize;
    if slot >= MAX_FRAMES {
        return Err(StackEnd::DepthLimit);
    }
    let pc = scratch.pc;
    // The mask keeps the index visibly in bounds for the verifier, whatever LLVM made of the
    // check above; `Scratch::overflow` makes every masked index land inside the map value.
    // SAFETY: slot < 256 and the record's frames are followed by `overflow`.
    unsafe { scratch.record.frames.as_mut_ptr().add(slot & (FRAME_SLOTS - 1)).write(pc) };
    header.user_frame_count += 1;

    // A return address may be just past the last instruction of a function (a call to a
    // function that never returns): look up the call instruction instead.
    let lookup_pc = if scratch.exact_pc != 0 { pc } else { pc - 1 };
    // A NO_INFO row stands for "no table here".
    let mut entry = UnwindRule::NO_INFO;
    if scratch.mappings.len != 0 {
        // Callers are mostly in the same file as their callees: try the last mapping first.
        let last = scratch.last_mapping;
        let mapping = if last.start <= lookup_pc && lookup_pc < last.end { Some(last) } else { find_mapping(&scratch.mappings, lookup_pc) };
        match mapping {
            Some(mapping) => {
                scratch.last_mapping = mapping;
                if let Some(found) = find_row(&mapping, lookup_pc) {
                    entry = found;
                }
            }
            None => scratch.record.header.flags |= FLAG_UNKNOWN_MAPPING,
        }
    } else if scratch.hints.count != 0 {
        if let Some(mapping) = files::mapping_of(scratch, lookup_pc) {
            if let Some(found) = find_row(&mapping, lookup_pc) {
                count(Counter::FileTableFrames);
                entry = found;
            }
        }
    }
    match entry.row_kind {
        row::NORMAL => table_step(scratch, &entry, config),
        row::SIGNAL_FRAME => signal_step(scratch, config),
        _ => frame_pointer_step(scratch, config),
    }
}

/// The mapping of `range` that contains `pc`.
#[inline(always)]
fn find_mapping(range: &MappingRange, pc: u64) -> Option<ExecMapping> {
    let len = range.len.min(MAX_PROCESS_MAPPINGS);
    let index = last_at_or_below::<{ MAPPING_SEARCH_STEPS }>(range.start, len, pc, |i| EXEC_MAPPINGS.get(i).map(|m| m.start))?;
    let mapping = *EXEC_MAPPINGS.get(index)?;
    (mapping.start <= pc && pc < mapping.end).then_some(mapping)
}

/// The rule of the row of `mapping`'s table that covers `pc`.
#[inline(always)]
fn find_row(mapping: &ExecMapping, pc: u64) -> Option<UnwindRule> {
    let offset = pc.checked_sub(mapping.bias)?;
    if offset > u32::MAX as u64 {
        return None;
    }
    let len = mapping.rows_len.min(MAX_FILE_ROWS);
    let index = last_at_or_below::<{ ROW_SEARCH_STEPS }>(mapping.rows_start, len, offset, |i| UNWIND_ROWS.get(i).map(|e| e.pc as u64))?;
    let entry = *UNWIND_ROWS.get(index)?;
    if entry.pc as u64 > offset {
        return None;
    }
    UNWIND_RULES.get(entry.rule).copied()
}

/// Binary search over the `len` sorted keys at indices `start..start + len` for the last one
/// at or below `target` (or the first, if all are above); `STEPS` must cover `len`.
///
/// Branch-free: each step moves `start` by arithmetic on the comparison, so the verifier sees
/// one path per step instead of two, which keeps verification linear.
#[inline(always)]
fn last_at_or_below<const STEPS: u32>(mut start: u32, mut len: u32, target: u64, key: impl Fn(u32) -> Option<u64>) -> Option<u32> {
    if len == 0 {
        return None;
    }
    for _ in 0..STEPS {
        if len <= 1 {
            break;
        }
        let half = len / 2;
        start = start.wrapping_add(half & all_ones_if_le(key(start.wrapping_add(half))?, target) as u32);
        len -= half;
    }
    Some(start)
}

/// `u64::MAX` if `a <= b`, else 0, computed without a branch (for values below 2^63).
#[inline(always)]
fn all_ones_if_le(a: u64, b: u64) -> u64 {
    // b - a has its top bit set exactly when a > b.
    (b.wrapping_sub(a) >> 63).wrapping_sub(1)
}

/// Applies a table row: CFA, then the return address and frame pointer saved relative to it.
#[inline(always)]
fn table_step(scratch: &mut Scratch, entry: &UnwindRule, config: &UnwindConfig) -> Result<(), StackEnd> {
    let cfa = match entry.cfa_kind {
        cfa::SP => scratch.sp.wrapping_add(entry.cfa_offset as i64 as u64),
        cfa::FP => scratch.fp.wrapping_add(entry.cfa_offset as i64 as u64),
        cfa::PLT_X86 => scratch.sp + 8 + if (scratch.pc & 15) >= entry.cfa_offset as u64 { 8 } else { 0 },
        _ => return Err(StackEnd::UnsupportedRule),
    };
    let saved_fp = entry.fp_kind == fp::CFA_OFFSET;
    let return_address = match entry.ra_kind {
        // The usual prologue saves the frame pointer right below the return address: read
        // both at once.
        ra::CFA_OFFSET if saved_fp && entry.fp_offset as i32 + 8 == entry.ra_offset as i32 => {
            let [caller_fp, return_address] = read_user_pair(cfa.wrapping_add(entry.fp_offset as i64 as u64))?;
            scratch.fp = caller_fp;
            return_address
        }
        ra::CFA_OFFSET => {
            if saved_fp {
                scratch.fp = read_user(cfa.wrapping_add(entry.fp_offset as i64 as u64))?;
            }
            read_user(cfa.wrapping_add(entry.ra_offset as i64 as u64))?
        }
        ra::LINK_REGISTER if scratch.exact_pc != 0 => {
            if saved_fp {
                scratch.fp = read_user(cfa.wrapping_add(entry.fp_offset as i64 as u64))?;
            }
            scratch.lr
        }
        ra::END_OF_STACK => return Err(StackEnd::Complete),
        _ => return Err(StackEnd::UnsupportedRule),
    };
    // The CFA is the caller's stack pointer: it only moves up (it stays put only while an
    // arm64 leaf still has its return address in X30).
    if cfa < scratch.sp || (cfa == scratch.sp && entry.ra_kind != ra::LINK_REGISTER) {
        return Err(StackEnd::NoProgress);
    }
    scratch.sp = cfa;
    return_to(scratch, return_address, config)
}

/// Follows the frame-pointer chain one frame: `[fp]` is the caller's frame pointer and
/// `[fp + 8]` the return address, on x86-64 and arm64 alike.
#[inline(always)]
fn frame_pointer_step(scratch: &mut Scratch, config: &UnwindConfig) -> Result<(), StackEnd> {
    let frame = scratch.fp;
    let first = scratch.record.header.user_frame_count <= 1;
    if first && config.arch == arch::X86_64 {
        if let Some(return_slot) = x86_frame_not_yet_set_up(scratch.pc, scratch.sp) {
            let return_address = read_user(return_slot)?;
            scratch.sp = return_slot + 8;
            return return_to(scratch, return_address, config);
        }
    }
    if frame == 0 {
        // The ABI zeroes the frame pointer in the outermost frame. In the interrupted frame,
        // though, a zero says only that the code does not use one.
        return Err(if first { StackEnd::NoTable } else { StackEnd::Complete });
    }
    if frame < scratch.sp {
        return Err(StackEnd::NoTable); // not a frame pointer: code without a table or one
    }
    // One read for both words: each read of user memory costs far more than its size.
    let [caller_fp, return_address] = read_user_pair(frame).map_err(|_| StackEnd::NoTable)?;
    scratch.fp = caller_fp;
    scratch.sp = frame + 16;
    return_to(scratch, return_address, config)
}

/// Where the return address is when a sample interrupts a frame-pointer function without a
/// table in its prologue (`[endbr64;] push %rbp; mov %rsp,%rbp`) or at its final `ret`: there
/// `%rbp` is still (or again) the caller's, and following it would skip or invent a frame.
/// `None` anywhere else: the frame pointer is set up.
#[inline(always)]
fn x86_frame_not_yet_set_up(pc: u64, sp: u64) -> Option<u64> {
    // SAFETY: the helper handles faults; the value is plain data.
    let code: u32 = unsafe { bpf_probe_read_user(pc as *const u32) }.ok()?;
    const ENDBR64: u32 = 0xfa1e_0ff3;
    const MOV_RSP_RBP: u32 = 0x00e5_8948; // 48 89 e5
    match code & 0xff {
        0x55 | 0xc3 => Some(sp), // push %rbp, ret
        _ if code == ENDBR64 => Some(sp),
        _ if code & 0x00ff_ffff == MOV_RSP_RBP => Some(sp + 8), // %rbp pushed, not yet moved
        _ => None,
    }
}

/// Continues in the code a signal handler interrupted: its registers are in the signal frame
/// at the stack pointer.
#[inline(always)]
fn signal_step(scratch: &mut Scratch, config: &UnwindConfig) -> Result<(), StackEnd> {
    let sp = scratch.sp;
    if config.arch == arch::AARCH64 {
        let regs = sp + ARM64_SIGFRAME_REGS;
        scratch.fp = read_user(regs + 29 * 8)?;
        scratch.lr = read_user(regs + 30 * 8)? & config.address_mask;
        scratch.sp = read_user(regs + 31 * 8)?;
        scratch.pc = read_user(regs + 32 * 8)? & config.address_mask;
    } else {
        // struct sigcontext: r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip.
        let regs = sp + X86_SIGFRAME_REGS;
        scratch.fp = read_user(regs + 10 * 8)?;
        scratch.sp = read_user(regs + 15 * 8)?;
        scratch.pc = read_user(regs + 16 * 8)?;
    }
    scratch.exact_pc = 1;
    if scratch.pc == 0 { Err(StackEnd::Complete) } else { Ok(()) }
}

#[inline(always)]
fn return_to(scratch: &mut Scratch, return_address: u64, config: &UnwindConfig) -> Result<(), StackEnd> {
    let pc = return_address & config.address_mask;
    if pc == 0 {
        return Err(StackEnd::Complete);
    }
    scratch.pc = pc;
    scratch.exact_pc = 0;
    Ok(())
}

/// Reads two consecutive words of user memory.
#[inline(always)]
fn read_user_pair(address: u64) -> Result<[u64; 2], StackEnd> {
    // SAFETY: the helper handles faults; the value is plain data.
    unsafe { bpf_probe_read_user(address as *const [u64; 2]) }.map_err(|_| StackEnd::BadRead)
}

#[inline(always)]
fn read_user(address: u64) -> Result<u64, StackEnd> {
    // SAFETY: the helper handles faults; the value is plain data.
    unsafe { bpf_probe_read_user(address as *const u64) }.map_err(|_| StackEnd::BadRead)
}
