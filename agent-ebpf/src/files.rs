//! Code mappings of processes too young for user space to have read, recorded as they are
//! made: the executable's and the loader's at exec (found with `bpf_find_vma` in
//! `oxeye_exec_files`, loaded where the kernel has the helper: Linux 5.17+), and each file
//! mapped executable afterwards (`mmap` tracepoints: the loader mapping libraries). The
//! unwinder walks an undescribed process's frames in them, with their files' tables from
//! [`FILE_TABLES`], and sends them to user space ahead of the sample, which names the frames
//! even once the process is gone.
//!
//! `bpf_find_vma` is used only here, in process context: from the sampler (hard-IRQ context)
//! it works once per sample at most, since it defers the mmap lock's release to an irq_work
//! that cannot be queued twice.
//!
//! Struct offsets come from the running kernel's BTF through [`FILE_OFFSETS`]; fields are read
//! with `bpf_probe_read_kernel` (no CO-RE in Rust BPF).

use agent_common::{
    counters::Counter,
    files::{ExecFileEvent, FdTableOffsets, FileHint, FileHintRecord, FileOffsets, FileTable, KernelFile, PendingMmap, MAX_FILE_HINTS},
    records::RecordKind,
    unwind::ExecMapping,
};
use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    cty::c_void,
    helpers::{bpf_find_vma, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_task_pt_regs},
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::TracePointContext,
    EbpfContext,
};

use crate::read_only::ReadOnly;
use crate::{
    fd_table::file_of_fd,
    maps::{count, Scratch, EVENTS, PROCESS_MAPPINGS, SCRATCH},
    sampler::SAMPLER_CONFIG,
};

/// Kernel struct offsets, set by user space at load time (all zero and `enabled == 0` when
/// the kernel's BTF lacks one).
#[unsafe(no_mangle)]
pub static FILE_OFFSETS: ReadOnly<FileOffsets> = ReadOnly::new(FileOffsets {
    enabled: 0,
    vm_start: 0,
    vm_end: 0,
    vm_pgoff: 0,
    vm_file: 0,
    f_inode: 0,
    i_ino: 0,
    i_sb: 0,
    s_dev: 0,
    task_mm: 0,
    mm_exe_file: 0,
    mm_start_code: 0,
    fd_table: FdTableOffsets::ZERO,
    regs_ip: 0,
    mm_vdso: 0,
});

/// Unwind tables by file, for mappings the kernel side recorded itself.
///
/// - Key: [`KernelFile`] (device, inode). Value: [`FileTable`] (40 bytes): where the file's
///   rows are in `UNWIND_ROWS` and how a mapping's offset becomes a row address.
/// - Written by: user space, when it compiles a file's table; removed when the table is
///   evicted. Read by: `unwinder`.
/// - Size: set at load time (`sizing.rs`), more than the tables the rows array holds at once;
///   preallocated.
#[map]
pub static FILE_TABLES: HashMap<KernelFile, FileTable> = HashMap::with_max_entries(1, 0);

/// Code mappings of young processes.
///
/// - Key: process id. Value: [`FileHintRecord`] (336 bytes): up to [`MAX_FILE_HINTS`] code
///   mappings, in the order they were made.
/// - Written by: `oxeye_exec_files` (reset at exec) and `oxeye_mmap_exit`, only while user
///   space has not described the process; removed at exit. Read by: `unwinder`.
/// - Size: set at load time; least recently used out, so a storm never fills it.
#[map]
pub static KERNEL_MAPPINGS: LruHashMap<u32, FileHintRecord> = LruHashMap::with_max_entries(1, 0);

/// `mmap` calls of code in progress, from the syscall's entry to its exit.
///
/// - Key: pid_tgid. Value: [`PendingMmap`] (24 bytes).
/// - Written by: `oxeye_mmap_enter` (executable mappings of files by undescribed processes
///   only); removed by `oxeye_mmap_exit`.
/// - Size: set at load time (one per thread in such a call at once); LRU, so a thread killed
///   mid-call leaves nothing behind for long.
#[map]
pub static PENDING_MMAPS: LruHashMap<u64, PendingMmap> = LruHashMap::with_max_entries(1, 0);

/// `PROT_EXEC` in `mmap`'s `prot`.
const PROT_EXEC: u64 = 4;
/// `sys_enter_mmap`: `addr, len, prot, flags, fd, off` are 8-byte fields from offset 16.
const MMAP_ARGS: usize = 16;
/// `sys_exit_mmap`: `ret` at offset 16.
const SYSCALL_RET: usize = 16;
/// `sched:sched_process_exec`'s `__data_loc char[] filename` field.
const EXEC_FILENAME_FIELD: usize = 8;

/// Loads an undescribed process's recorded mappings, with their tables, into the sample's
/// hints (nothing for a process user space has described, or one with none recorded).
#[inline(always)]
pub fn load_hints(scratch: &mut Scratch) {
    scratch.hints.count = 0;
    let pid = scratch.record.header.pid;
    // SAFETY: the value is copied out at once.
    let Some(recorded) = (unsafe { KERNEL_MAPPINGS.get(&pid) }) else { return };
    scratch.hints = *recorded;
    let count = scratch.hints.count as usize;
    // Every slot is written (unused ones empty), so lookups need no count: loops with a
    // constant bound are all older verifiers (6.1) accept; a loop bounded by a value read
    // from a map is not.
    for i in 0..MAX_FILE_HINTS {
        let (Some(hint), Some(slot)) = (scratch.hints.hints.get(i), scratch.hint_mappings.get_mut(i)) else { break };
        *slot = if i < count { mapping_with_table(hint) } else { ExecMapping::default() };
    }
}

/// The mapping of `hint` with its file's table, if user space has compiled it.
#[inline(always)]
fn mapping_with_table(hint: &FileHint) -> ExecMapping {
    let mut mapping = ExecMapping { start: hint.start, end: hint.end, bias: 0, rows_start: 0, rows_len: 0 };
    // SAFETY: the value is copied out at once.
    if let Some(table) = unsafe { FILE_TABLES.get(&hint.file) }.copied() {
        if table.exec_offset_start <= hint.file_offset && hint.file_offset < table.exec_offset_end {
            let vaddr = hint.file_offset.wrapping_add(table.vaddr_minus_offset);
            mapping.bias = hint.start.wrapping_sub(vaddr).wrapping_add(table.base);
            mapping.rows_start = table.rows_start;
            mapping.rows_len = table.rows_len;
        }
    }
    mapping
}

/// The sample's recorded mapping that holds `pc`.
#[inline(always)]
pub fn mapping_of(scratch: &mut Scratch, pc: u64) -> Option<ExecMapping> {
    let last = scratch.last_mapping;
    if last.start <= pc && pc < last.end {
        return Some(last);
    }
    // Unused slots are empty (see `load_hints`).
    for i in 0..MAX_FILE_HINTS {
        let known = *scratch.hint_mappings.get(i)?;
        if known.start <= pc && pc < known.end {
            scratch.last_mapping = known;
            return Some(known);
        }
    }
    None
}

/// Sends the sample's recorded mappings, if any, ahead of the sample itself.
#[inline(always)]
pub fn send_hints(scratch: &mut Scratch) {
    if scratch.hints.count == 0 {
        return;
    }
    scratch.hints.kind = RecordKind::FileHints as u32;
    scratch.hints.pid = scratch.record.header.pid;
    if EVENTS.output::<FileHintRecord>(&scratch.hints, BPF_RB_NO_WAKEUP as u64).is_err() {
        count(Counter::FileRecordRingFull);
    }
}

/// Forgets an exited process's recorded mappings.
#[inline(always)]
pub fn forget(pid: u32) {
    let _ = KERNEL_MAPPINGS.remove(&pid);
}

/// What the `bpf_find_vma` callback found (on the caller's stack).
#[repr(C)]
struct FoundVma {
    start: u64,
    end: u64,
    pgoff: u64,
    file: u64,
}

/// `bpf_find_vma` callback: copies the mapping's bounds and file out.
extern "C" fn on_vma(_task: *mut c_void, vma: *mut c_void, found: *mut FoundVma) -> i64 {
    let offsets = FILE_OFFSETS.get();
    let vma = vma as u64;
    // SAFETY: `found` is the caller's stack slot the helper passes back.
    let found = unsafe { &mut *found };
    found.start = read_kernel(vma + offsets.vm_start as u64).unwrap_or(0);
    found.end = read_kernel(vma + offsets.vm_end as u64).unwrap_or(0);
    found.pgoff = read_kernel(vma + offsets.vm_pgoff as u64).unwrap_or(0);
    found.file = read_kernel(vma + offsets.vm_file as u64).unwrap_or(0);
    0
}

/// The current process's mapping at `address`, as a hint (`None` without a file, unless
/// `vdso`: the vDSO has none).
#[inline(always)]
fn hint_at(address: u64, offsets: &FileOffsets, vdso: bool) -> Option<FileHint> {
    let mut found = FoundVma { start: 0, end: 0, pgoff: 0, file: 0 };
    // SAFETY: the callback has the signature the helper expects and writes only `found`.
    let result = unsafe { bpf_find_vma(bpf_get_current_task_btf(), address, on_vma as *mut c_void, (&mut found as *mut FoundVma).cast(), 0) };
    if result != 0 {
        return None;
    }
    let (file, file_offset) = if vdso { (KernelFile::VDSO, 0) } else { (identity(found.file, offsets)?, found.pgoff << 12) };
    Some(FileHint { start: found.start, end: found.end, file_offset, file })
}

/// Appends `hint` to `recorded` if there is room.
#[inline(always)]
fn push(recorded: &mut FileHintRecord, hint: FileHint) {
    let index = recorded.count as usize;
    if let Some(slot) = recorded.hints.get_mut(index) {
        *slot = hint;
        recorded.count += 1;
        count(Counter::KernelMappingsRecorded);
    }
}

/// Device and inode of the `struct file` at `file`.
#[inline(always)]
fn identity(file: u64, offsets: &FileOffsets) -> Option<KernelFile> {
    if file == 0 {
        return None;
    }
    let inode = read_kernel(file + offsets.f_inode as u64)?;
    let number = read_kernel(inode + offsets.i_ino as u64)?;
    let super_block = read_kernel(inode + offsets.i_sb as u64)?;
    // SAFETY: the helper handles faults; the value is plain data.
    let dev: u32 = unsafe { bpf_probe_read_kernel((super_block + offsets.s_dev as u64) as *const u32) }.ok()?;
    Some(KernelFile { dev: dev as u64, inode: number })
}

#[inline(always)]
fn read_kernel(address: u64) -> Option<u64> {
    // SAFETY: the helper handles faults; the value is plain data.
    unsafe { bpf_probe_read_kernel(address as *const u64) }.ok()
}

/// Whether the kernel side records `pid`'s mappings: the offsets are known, it is profiled,
/// and user space has not described it.
#[inline(always)]
fn records(pid: u32, offsets: &FileOffsets) -> bool {
    let target = SAMPLER_CONFIG.get().target_pid;
    // SAFETY: only checks for the key.
    offsets.enabled != 0 && (target == 0 || pid == target) && unsafe { PROCESS_MAPPINGS.get(&pid) }.is_none()
}

/// `sched:sched_process_exec`: the new image's executable (by identity and by the path given
/// to `execve`) and the mappings of its code and of the loader's.
#[tracepoint]
pub fn oxeye_exec_files(ctx: TracePointContext) -> u32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let offsets = FILE_OFFSETS.get();
    let target = SAMPLER_CONFIG.get().target_pid;
    if offsets.enabled == 0 || (target != 0 && pid != target) {
        return 0;
    }
    // SAFETY: a helper with no arguments; the task is only read through the helper.
    let task = unsafe { bpf_get_current_task() };
    let Some(mm) = read_kernel(task + offsets.task_mm as u64) else { return 0 };
    // Built in this CPU's scratch (too big for the stack), which no sample is using: a
    // tracepoint program and the sampler never run at once on one CPU (see `SCRATCH`).
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's entry, see above.
    let recorded = unsafe { &mut (*scratch).hints };
    recorded.kind = RecordKind::FileHints as u32;
    recorded.pid = pid;
    recorded.count = 0;
    let mut executable = FileHint::default();
    if let Some(hint) = read_kernel(mm + offsets.mm_start_code as u64).and_then(|start_code| hint_at(start_code, &offsets, false)) {
        executable = hint;
        push(recorded, hint);
    }
    // The new image starts in the loader (or in the executable, if static).
    // SAFETY: the current task's saved user registers, read through the helper.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    if let Some(entry) = read_kernel(regs + offsets.regs_ip as u64) {
        if !(executable.start <= entry && entry < executable.end) {
            if let Some(hint) = hint_at(entry, &offsets, false) {
                push(recorded, hint);
            }
        }
    }
    if let Some(hint) = read_kernel(mm + offsets.mm_vdso as u64).filter(|&vdso| vdso != 0).and_then(|vdso| hint_at(vdso, &offsets, true)) {
        push(recorded, hint);
    }
    let _ = KERNEL_MAPPINGS.insert(&pid, recorded, 0);

    let Some(exe) = read_kernel(mm + offsets.mm_exe_file as u64) else { return 0 };
    let Some(file) = identity(exe, &offsets) else { return 0 };
    let Some(mut entry) = EVENTS.reserve::<ExecFileEvent>(0) else {
        count(Counter::FileRecordRingFull);
        return 0;
    };
    // SAFETY: the reserved record is written field by field before it is submitted.
    unsafe {
        let event = entry.as_mut_ptr();
        (*event).kind = RecordKind::ExecFile as u32;
        (*event).pid = pid;
        (*event).file = file;
        (*event).path[0] = 0;
        if let Ok(location) = ctx.read_at::<u32>(EXEC_FILENAME_FIELD) {
            let at = ctx.as_ptr() as usize + (location & 0xffff) as usize;
            // The helper handles faults and stops at the buffer's end.
            let _ = bpf_probe_read_kernel_str_bytes(at as *const u8, &mut (*event).path);
        }
    }
    entry.submit(BPF_RB_NO_WAKEUP as u64);
    0
}

/// `syscalls:sys_enter_mmap`: remembers an executable mapping of a file by a young process.
#[tracepoint]
pub fn oxeye_mmap_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: the syscall's arguments are 8-byte fields of the tracepoint's record.
    let arg = |index: usize| unsafe { ctx.read_at::<u64>(MMAP_ARGS + 8 * index) }.unwrap_or(0);
    let (len, prot, fd, offset) = (arg(1), arg(2), arg(4) as i64, arg(5));
    if prot & PROT_EXEC == 0 || fd < 0 {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !records((pid_tgid >> 32) as u32, FILE_OFFSETS.get()) {
        return 0;
    }
    let _ = PENDING_MMAPS.insert(&pid_tgid, &PendingMmap { len, offset, fd: fd as u32, reserved: 0 }, 0);
    0
}

/// `syscalls:sys_exit_mmap`: records the mapping [`oxeye_mmap_enter`] remembered.
#[tracepoint]
pub fn oxeye_mmap_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out at once.
    let Some(pending) = (unsafe { PENDING_MMAPS.get(&pid_tgid) }).copied() else { return 0 };
    let _ = PENDING_MMAPS.remove(&pid_tgid);
    // SAFETY: the return value is an 8-byte field of the tracepoint's record.
    let start = unsafe { ctx.read_at::<u64>(SYSCALL_RET) }.unwrap_or(u64::MAX);
    if start >= (-4095i64) as u64 {
        return 0; // the call failed
    }
    let pid = (pid_tgid >> 32) as u32;
    let offsets = FILE_OFFSETS.get();
    let Some(file) = file_of_fd(pending.fd, &offsets.fd_table).ok().flatten().and_then(|file| identity(file, &offsets)) else {
        count(Counter::KernelMappingsMissed);
        return 0;
    };
    let end = (start + pending.len + 4095) & !4095;
    let Some(recorded) = KERNEL_MAPPINGS.get_ptr_mut(&pid) else { return 0 };
    // SAFETY: this process's entry; a race with another of its threads at worst loses a hint.
    let recorded = unsafe { &mut *recorded };
    let index = recorded.count as usize;
    if index >= MAX_FILE_HINTS {
        count(Counter::KernelMappingsMissed);
        return 0;
    }
    if let Some(slot) = recorded.hints.get_mut(index) {
        *slot = FileHint { start, end, file_offset: pending.offset, file };
        recorded.count += 1;
        count(Counter::KernelMappingsRecorded);
    }
    0
}

