//! The `struct file` behind a descriptor of the current process (`current->files->fdt->fd[fd]`),
//! for the file-mapping programs (a file mapped through its descriptor) and the network ones
//! (a socket), at offsets user space resolved from kernel BTF.

use agent_common::files::FdTableOffsets;
use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};

/// A read of kernel memory failed on the way (callers count it as their own kind of failure).
pub struct ReadFailed;

/// The `struct file` behind descriptor `fd` of the current process; `Ok(None)` when it is not
/// an open descriptor (nothing failed).
#[inline(always)]
pub fn file_of_fd(fd: u32, offsets: &FdTableOffsets) -> Result<Option<u64>, ReadFailed> {
    // SAFETY: the helper only returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, offsets.task_files)?;
    let fdt: u64 = read(files, offsets.files_fdt)?;
    let max_fds: u32 = read(fdt, offsets.fdtable_max_fds)?;
    if fd >= max_fds {
        return Ok(None);
    }
    let fd_array: u64 = read(fdt, offsets.fdtable_fd)?;
    let file: u64 = read(fd_array, fd * 8)?;
    Ok((file != 0).then_some(file))
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, ReadFailed> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.map_err(|_| ReadFailed)
}
