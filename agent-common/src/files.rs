//! Files as the kernel sees them: for a process user space has not described (one that lives
//! a millisecond), the kernel side records its code mappings as they are made — the
//! executable and the loader at exec (`bpf_find_vma`, Linux 5.17+), libraries as they are
//! mapped — so the unwinder walks them with their files' tables if user space compiled them,
//! and tells user space each sample's files and offsets, which names the frames after the
//! process is gone.
//!
//! Files are keyed by the kernel's device number (`super_block.s_dev`: major << 20 | minor,
//! not `stat`'s encoding) and inode number.

/// Most distinct mappings one sample reports in its [`FileHintRecord`].
pub const MAX_FILE_HINTS: usize = 8;

/// Byte offsets of the kernel struct fields read to identify a mapping's file, from the
/// running kernel's BTF (`FILE_OFFSETS` global). `enabled` is 0 when any is unknown: the
/// programs then never read them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileOffsets {
    /// 1 when every offset below is set.
    pub enabled: u32,
    /// `vm_area_struct.vm_start`.
    pub vm_start: u32,
    /// `vm_area_struct.vm_end`.
    pub vm_end: u32,
    /// `vm_area_struct.vm_pgoff`.
    pub vm_pgoff: u32,
    /// `vm_area_struct.vm_file`.
    pub vm_file: u32,
    /// `file.f_inode`.
    pub f_inode: u32,
    /// `inode.i_ino`.
    pub i_ino: u32,
    /// `inode.i_sb`.
    pub i_sb: u32,
    /// `super_block.s_dev`.
    pub s_dev: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `mm_struct.start_code` (the executable's first code address).
    pub mm_start_code: u32,
    /// The way from a task to its open files.
    pub fd_table: FdTableOffsets,
    /// Offset of the instruction pointer in `struct pt_regs`.
    pub regs_ip: u32,
    /// `mm_struct.context.vdso` (where the vDSO is mapped).
    pub mm_vdso: u32,
}
const _: () = assert!(core::mem::size_of::<FileOffsets>() == 72);

/// Byte offsets of the members on the way from a task to the `struct file` behind one of its
/// descriptors (`task->files->fdt->fd[fd]`), read by the file-mapping and the network
/// programs alike.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdTableOffsets {
    /// `task_struct.files`.
    pub task_files: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.fd`.
    pub fdtable_fd: u32,
    /// `fdtable.max_fds`.
    pub fdtable_max_fds: u32,
}
const _: () = assert!(core::mem::size_of::<FdTableOffsets>() == 16);

impl FdTableOffsets {
    /// All zero (nothing resolved).
    pub const ZERO: FdTableOffsets = FdTableOffsets { task_files: 0, files_fdt: 0, fdtable_fd: 0, fdtable_max_fds: 0 };

    /// The (structure, member) each offset is, in field order, for user space to resolve.
    pub const MEMBERS: [(&'static str, &'static str); 4] = [("task_struct", "files"), ("files_struct", "fdt"), ("fdtable", "fd"), ("fdtable", "max_fds")];

    /// The offsets in [`FdTableOffsets::MEMBERS`]' order.
    pub const fn from_array([task_files, files_fdt, fdtable_fd, fdtable_max_fds]: [u32; 4]) -> Self {
        FdTableOffsets { task_files, files_fdt, fdtable_fd, fdtable_max_fds }
    }
}
crate::impl_pod!(FileOffsets, FdTableOffsets);

/// Which file: the `FILE_TABLES` key. All zero ([`KernelFile::VDSO`]) is the vDSO.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KernelFile {
    /// `s_dev` of the file's super block (kernel encoding).
    pub dev: u64,
    /// Inode number.
    pub inode: u64,
}

impl KernelFile {
    /// The vDSO, which has no file.
    pub const VDSO: KernelFile = KernelFile { dev: 0, inode: 0 };
}
crate::impl_pod!(KernelFile);

/// Where a file's unwind table is, for mappings the unwinder finds itself (`FILE_TABLES`
/// value). A mapping at `vm_start` of file offset `offset` (inside `[exec_offset_start,
/// exec_offset_end)`) has bias `vm_start - (offset + vaddr_minus_offset) + base`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileTable {
    /// Index of the table's first row in the rows array.
    pub rows_start: u32,
    /// Rows in the table.
    pub rows_len: u32,
    /// File virtual address of row `pc` 0.
    pub base: u64,
    /// First file offset (page-aligned) of the executable segment.
    pub exec_offset_start: u64,
    /// One past its last file offset.
    pub exec_offset_end: u64,
    /// The segment's virtual address minus its file offset.
    pub vaddr_minus_offset: u64,
}
const _: () = assert!(core::mem::size_of::<FileTable>() == 40);
crate::impl_pod!(FileTable);

/// One mapping the unwinder found for a frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileHint {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last.
    pub end: u64,
    /// File offset of `start`.
    pub file_offset: u64,
    /// The file.
    pub file: KernelFile,
}
const _: () = assert!(core::mem::size_of::<FileHint>() == 40);
crate::impl_pod!(FileHint);

/// A young process's code mappings: the `KERNEL_MAPPINGS` value, and sent as is right
/// before each of its samples ([`crate::records::RecordKind::FileHints`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileHintRecord {
    /// [`crate::records::RecordKind::FileHints`] as `u32`.
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// Hints used in `hints`.
    pub count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The mappings, in the order they were made.
    pub hints: [FileHint; MAX_FILE_HINTS],
}
const _: () = assert!(core::mem::size_of::<FileHintRecord>() == 16 + 40 * MAX_FILE_HINTS);
crate::impl_pod!(FileHintRecord);

/// Bytes of the executable's path an [`ExecFileEvent`] carries.
pub const EXEC_PATH_BYTES: usize = 112;

/// The file a process exec'd ([`crate::records::RecordKind::ExecFile`]), sent after its
/// exec event: user space opens it by path, checked against `file`, so its frames are named
/// even if the process is gone before its maps are read.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecFileEvent {
    /// [`crate::records::RecordKind::ExecFile`] as `u32`.
    pub kind: u32,
    /// Process id.
    pub pid: u32,
    /// `mm->exe_file`.
    pub file: KernelFile,
    /// The path given to `execve` (the tracepoint's `filename`), NUL-terminated, cut short.
    pub path: [u8; EXEC_PATH_BYTES],
}
const _: () = assert!(core::mem::size_of::<ExecFileEvent>() == 136);
crate::impl_pod!(ExecFileEvent);

/// An `mmap` of code in progress (`PENDING_MMAPS` value), from its entry to its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingMmap {
    /// Bytes asked for.
    pub len: u64,
    /// File offset asked for.
    pub offset: u64,
    /// The file descriptor.
    pub fd: u32,
    /// Reserved, zero.
    pub reserved: u32,
}
const _: () = assert!(core::mem::size_of::<PendingMmap>() == 24);
crate::impl_pod!(PendingMmap);
