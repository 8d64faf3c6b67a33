//! CPython stacks: the Python functions a CPython process runs, in place of the interpreter's
//! native frames.
//!
//! - [`runtime`] recognises a CPython runtime in an ELF file, and [`versions`] knows each
//!   version's layout (3.13+ describes itself with `_Py_DebugOffsets`).
//! - [`attach`], on the unwinder thread, attaches the BPF walker (`agent-ebpf/src/python.rs`)
//!   to each CPython process and publishes it in [`registry`].
//! - [`frames`] names the frames a sample recorded, reading each code object once from the
//!   process ([`memory`], [`code`], [`linetable`]) into the [`functions`] table.
//! - [`merge`] puts them where the interpreter runs them in the native stack.

pub mod attach;
pub mod code;
pub mod frames;
pub mod functions;
pub mod linetable;
pub mod memory;
pub mod merge;
pub mod registry;
pub mod runtime;
pub mod versions;

/// What the Python side did in a run, for the closing summary and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct PythonFigures {
    /// Processes attached now.
    pub processes: usize,
    /// Distinct functions named.
    pub functions: usize,
    /// Memory the function table holds, estimated.
    pub function_bytes: usize,
    /// Code objects cached.
    pub cached_code_objects: usize,
    /// Code objects read from processes.
    pub code_reads: u64,
    /// Frames left unnamed (the code object was gone or had become another).
    pub unnamed_frames: u64,
}
