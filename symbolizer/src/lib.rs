//! Host-side symbolization for oxeye, with no BPF dependency.
//!
//! - [`elf::ElfSymbols`]: an ELF file's function symbols (`.symtab` and `.dynsym`), its GNU
//!   build ID, and the mapping from file offsets to virtual addresses.
//! - [`debug_file`]: separate debug files by build ID and `.gnu_debuglink`, and
//!   MiniDebugInfo (`.gnu_debugdata`).
//! - [`dwarf_frames::DwarfFrames`]: inlined calls, files and lines of native code from DWARF.
//! - [`kallsyms::KernelSymbols`]: kernel and module function symbols from `/proc/kallsyms`.
//! - [`file_id::FileId`]: the "htlhash" file ID OpenTelemetry profilers identify files by.
//! - [`unwind::UnwindTable`]: unwind rules compiled from `.eh_frame` for unwinding without frame
//!   pointers.
//! - [`demangle::demangle`]: Rust (legacy and v0) and C++ (Itanium) names made readable.
//! - [`go::GoTable`]: function names, files, lines and inlined frames of Go binaries from
//!   `.gopclntab`, which stripped Go binaries keep.
//! - [`symbfile::write`]: a file's functions, inlined calls and lines as a symbfile, the format
//!   devfiler's symbol endpoint serves.
//!
//! Nothing here reads a file per lookup: load once, look up many times.
//!
//! ```no_run
//! use symbolizer::elf::ElfSymbols;
//!
//! let libc = ElfSymbols::open("/lib/x86_64-linux-gnu/libc.so.6")?;
//! if let Some(symbol) = libc.lookup_file_offset(0x2a1ca) {
//!     println!("{}+{:#x}", symbol.demangled(), symbol.offset);
//! }
//! # Ok::<(), symbolizer::Error>(())
//! ```
#![deny(missing_docs)]

pub mod btf;
pub mod build_id;
pub mod debug_file;
pub mod demangle;
pub mod dwarf_frames;
pub mod elf;
pub mod file_id;
pub mod go;
mod error;
pub mod kallsyms;
pub mod symbfile;
pub mod unwind;
mod symbol_table;

pub use error::Error;
pub use symbol_table::{Symbol, SymbolTable};
