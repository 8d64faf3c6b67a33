//! Set-up of the kernel side's records of young processes' code mappings
//! (`agent-ebpf/src/files.rs`): struct offsets from the running kernel's BTF, and the exec
//! and `mmap` tracepoints, all optional: without them, processes too brief to be read keep
//! unnamed frames, and everything else works.

use agent_common::{
    files::{FdTableOffsets, FileOffsets},
    names::programs,
};
use aya::{programs::TracePoint, Ebpf};
use symbolizer::btf::Btf;
use tracing::{debug, info};

/// The tracepoints, with the program each runs.
pub(super) const HOOKS: [(&str, &str, &str); 3] = [
    (programs::EXEC_FILES, "sched", "sched_process_exec"),
    (programs::MMAP_ENTER, "syscalls", "sys_enter_mmap"),
    (programs::MMAP_EXIT, "syscalls", "sys_exit_mmap"),
];

/// The offsets the programs read mappings and files with (`regs_ip`: the instruction
/// pointer's offset in `struct pt_regs`); disabled (all zero) if the kernel's BTF lacks any.
pub fn offsets(regs_ip: u32) -> FileOffsets {
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(error) => {
            info!("processes too brief to be read keep unnamed frames: no kernel BTF ({error})");
            return FileOffsets::default();
        }
    };
    match read_offsets(&btf, regs_ip) {
        Ok(offsets) => offsets,
        Err(missing) => {
            info!("processes too brief to be read keep unnamed frames: kernel BTF has no {missing}");
            FileOffsets::default()
        }
    }
}

fn read_offsets(btf: &Btf, regs_ip: u32) -> Result<FileOffsets, String> {
    let get = |structure: &str, member: &str| btf.member_offset(structure, member).ok_or_else(|| format!("{structure}.{member}"));
    Ok(FileOffsets {
        enabled: 1,
        vm_start: get("vm_area_struct", "vm_start")?,
        vm_end: get("vm_area_struct", "vm_end")?,
        vm_pgoff: get("vm_area_struct", "vm_pgoff")?,
        vm_file: get("vm_area_struct", "vm_file")?,
        f_inode: get("file", "f_inode")?,
        i_ino: get("inode", "i_ino")?,
        i_sb: get("inode", "i_sb")?,
        s_dev: get("super_block", "s_dev")?,
        task_mm: get("task_struct", "mm")?,
        mm_exe_file: get("mm_struct", "exe_file")?,
        mm_start_code: get("mm_struct", "start_code")?,
        fd_table: fd_table_offsets(btf)?,
        regs_ip,
        mm_vdso: get("mm_struct", "context.vdso")?,
    })
}

/// The offsets on the way from a task to its open files (the file-mapping and the network
/// programs both walk it); `Err` names the first member the kernel's BTF lacks.
pub(super) fn fd_table_offsets(btf: &Btf) -> Result<FdTableOffsets, String> {
    let mut offsets = [0; 4];
    for (slot, (structure, member)) in offsets.iter_mut().zip(FdTableOffsets::MEMBERS) {
        *slot = btf.member_offset(structure, member).ok_or_else(|| format!("{structure}.{member}"))?;
    }
    Ok(FdTableOffsets::from_array(offsets))
}

/// Loads and attaches the tracepoints that record young processes' mappings; says once why
/// not if the kernel refuses (`bpf_find_vma` needs Linux 5.17).
pub fn attach(ebpf: &mut Ebpf, offsets: &FileOffsets) {
    if offsets.enabled == 0 {
        return;
    }
    for (program, category, name) in HOOKS {
        if let Err(error) = attach_one(ebpf, program, category, name) {
            debug!(program, error = %format!("{error:#}"), "cannot attach");
            info!("processes too brief to be read keep unnamed frames: {error:#}");
            return;
        }
    }
}

fn attach_one(ebpf: &mut Ebpf, program: &str, category: &str, name: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let tracepoint: &mut TracePoint = super::program_mut(ebpf, program)?.try_into()?;
    tracepoint.load().with_context(|| format!("the kernel rejected {program} (bpf_find_vma needs Linux 5.17)"))?;
    tracepoint.attach(category, name).with_context(|| format!("cannot attach to tracepoint {category}:{name}"))?;
    Ok(())
}
