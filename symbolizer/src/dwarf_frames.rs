//! Source-level frames of native code from DWARF, where a file (or its separate debug file)
//! has it: the functions the compiler inlined at an address, innermost first, each with its
//! file and line, then the function whose code it is.
//!
//! Parsing is lazy (the `addr2line` crate reads a compilation unit the first time an address
//! in it is asked for) and the file is mapped, not read, so opening a large file is cheap and
//! memory grows only with the units touched.

use std::path::Path;

use crate::{demangle::demangle, Error};

/// Frames reported for one address at most (deeper inlining is cut at the outermost end).
pub const MAX_FRAMES: usize = 64;

/// One source-level frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFrame {
    /// The function, demangled; `None` where DWARF names none.
    pub function: Option<String>,
    /// The source file.
    pub file: Option<String>,
    /// The line (0 when unknown).
    pub line: u32,
}

/// The DWARF of one file, opened for lookups.
pub struct DwarfFrames {
    loader: addr2line::Loader,
}

impl std::fmt::Debug for DwarfFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DwarfFrames")
    }
}

impl DwarfFrames {
    /// Opens `path`, an ELF file with DWARF (a binary or its separate debug file).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let loader = addr2line::Loader::new(path).map_err(|error| Error::Dwarf { path: path.to_owned(), reason: error.to_string() })?;
        Ok(DwarfFrames { loader })
    }

    /// The frames at `address` (the file's own virtual address), innermost first, into
    /// `frames` (cleared first); none when no DWARF function covers the address.
    pub fn frames(&self, address: u64, frames: &mut Vec<SourceFrame>) {
        frames.clear();
        let Ok(mut found) = self.loader.find_frames(address) else { return };
        while let Ok(Some(frame)) = found.next() {
            if frames.len() == MAX_FRAMES {
                break;
            }
            let function = frame.function.as_ref().and_then(|name| name.raw_name().ok()).map(|name| demangle(&name).into_owned());
            let (file, line) = frame.location.map_or((None, 0), |location| (location.file.map(str::to_owned), location.line.unwrap_or(0)));
            frames.push(SourceFrame { function, file, line });
        }
        // A location from the line table alone, with no function, says nothing useful here.
        if frames.iter().all(|frame| frame.function.is_none()) {
            frames.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSymbol};

    use super::*;

    #[inline(never)]
    #[unsafe(no_mangle)]
    extern "C" fn oxeye_dwarf_frames_marker() -> u64 {
        std::hint::black_box(7)
    }

    /// This test binary has DWARF (the profiles keep `debug = 1`): its own function is found,
    /// with this file as its source.
    #[test]
    fn finds_own_function_with_file_and_line() {
        let exe = std::env::current_exe().unwrap();
        let dwarf = DwarfFrames::open(&exe).unwrap();
        // The marker's link-time address, from the symbol table.
        let data = std::fs::read(&exe).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let marker = file.symbols().find(|s| s.name() == Ok("oxeye_dwarf_frames_marker")).expect("the marker symbol");
        let mut frames = Vec::new();
        dwarf.frames(marker.address(), &mut frames);
        let last = frames.last().expect("DWARF covers the marker");
        assert_eq!(last.function.as_deref(), Some("oxeye_dwarf_frames_marker"), "{frames:?}");
        assert!(last.file.as_deref().is_some_and(|f| f.ends_with("dwarf_frames.rs")), "{frames:?}");
        assert!(last.line > 0);
        assert_eq!(oxeye_dwarf_frames_marker(), 7);
        dwarf.frames(u64::MAX - 16, &mut frames);
        assert!(frames.is_empty());
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        assert!(DwarfFrames::open(Path::new("/etc/passwd")).is_err());
        assert!(DwarfFrames::open(Path::new("/nonexistent/oxeye")).is_err());
    }
}
