use std::{io, path::PathBuf};

/// Errors from loading symbols.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A file is not an ELF object we can parse.
    #[error("{path} is not a valid ELF file: {source}")]
    Elf {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: object::read::Error,
    },
    /// A file does not start with the ELF magic bytes.
    #[error("{path} is not an ELF file")]
    NotElf {
        /// The file.
        path: PathBuf,
    },
    /// A file is larger than we are willing to map.
    #[error("{path} is too large to read symbols from ({size} bytes)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// `/proc/kallsyms` lists only zero addresses: the caller lacks privileges or
    /// `kernel.kptr_restrict` hides them.
    #[error("/proc/kallsyms hides kernel addresses (run as root, or set kernel.kptr_restrict=0)")]
    KallsymsHidden,
    /// Bytes given as an ELF image do not parse as one.
    #[error("not a valid ELF image: {source}")]
    ElfData {
        /// What the parser said.
        #[source]
        source: object::read::Error,
    },
    /// A file's DWARF cannot be opened.
    #[error("cannot read the DWARF of {path}: {reason}")]
    Dwarf {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        reason: String,
    },
    /// A Go pclntab is malformed or of a layout we do not read.
    #[error("unreadable Go pclntab: {reason}")]
    GoPclntab {
        /// What is wrong with it.
        reason: &'static str,
    },
}
