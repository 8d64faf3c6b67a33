//! Function symbols, build ID and load segments of one ELF file, read once.

use std::{fs::File, path::Path};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

use crate::{
    build_id::BuildId,
    debug_file::{mini_debug_info, DebugFile, DebugLink},
    go::GoTable,
    symbol_table::{Symbol, SymbolTable, SymbolTableBuilder},
    Error,
};

/// Files larger than this are not mapped (no real executable comes close).
const MAX_FILE_BYTES: u64 = 4 << 30;

/// A loadable segment: file bytes `[file_offset, file_offset + file_size)` are mapped at
/// virtual address `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// Offset of the segment in the file.
    pub file_offset: u64,
    /// Bytes of the file in the segment.
    pub file_size: u64,
    /// Virtual address the segment is linked at.
    pub address: u64,
}

/// What oxeye needs from one ELF file to name its frames: its function symbols from
/// `.symtab` and `.dynsym`, its build ID and its load segments. The file is read once and
/// not kept open.
#[derive(Debug)]
pub struct ElfSymbols {
    build_id: Option<BuildId>,
    segments: Vec<LoadSegment>,
    symbols: SymbolTable,
    /// A Go binary's `.gopclntab` (stripped ones keep it): names, lines and inlined calls.
    go: Option<GoTable>,
    /// Where a separate debug file may be found by name.
    debug_link: Option<DebugLink>,
    /// The separate debug file whose symbols were merged in.
    debug_file: Option<std::path::PathBuf>,
    /// Whether the file itself has DWARF (`.debug_info`).
    has_dwarf: bool,
}

impl ElfSymbols {
    /// Reads `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        Self::read(&file, path)
    }

    /// Reads an open file; `path` names it in errors.
    pub fn read(file: &File, path: &Path) -> Result<Self, Error> {
        let io_error = |source| Error::Io { path: path.to_owned(), source };
        let size = file.metadata().map_err(io_error)?.len();
        if size > MAX_FILE_BYTES {
            return Err(Error::TooLarge { path: path.to_owned(), size });
        }
        // SAFETY: the map is read-only and dropped before returning. A file truncated by
        // another process while we parse it could fault; executables in use are not truncated
        // (the kernel refuses writes to running executables with ETXTBSY).
        let data = unsafe { memmap2::Mmap::map(file) }.map_err(io_error)?;
        Self::parse_named(&data, path)
    }

    /// Parses an ELF image held in memory.
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        Self::parse_named(data, Path::new("<memory>"))
    }

    fn parse_named(data: &[u8], path: &Path) -> Result<Self, Error> {
        if !data.starts_with(b"\x7fELF") {
            return Err(Error::NotElf { path: path.to_owned() });
        }
        let file = object::File::parse(data).map_err(|source| Error::Elf { path: path.to_owned(), source })?;
        let build_id = file.build_id().ok().flatten().and_then(BuildId::new);
        let segments = file
            .segments()
            .filter_map(|segment| {
                let (file_offset, file_size) = segment.file_range();
                (file_size > 0).then(|| LoadSegment { file_offset, file_size, address: segment.address() })
            })
            .collect();
        let mut builder = SymbolTableBuilder::default();
        push_functions(&file, &mut builder);
        // MiniDebugInfo holds the local functions a stripped binary's .dynsym lacks.
        if let Some(image) = mini_debug_info(&file) {
            if let Ok(inner) = object::File::parse(&*image) {
                push_functions(&inner, &mut builder);
            }
        }
        // A table that does not parse leaves the ELF symbols to name the frames.
        let go = GoTable::from_elf(data).ok().flatten();
        let debug_link = DebugLink::of(&file);
        let has_dwarf = file.section_by_name(".debug_info").is_some_and(|section| section.size() > 0);
        Ok(ElfSymbols { build_id, segments, symbols: builder.build(), go, debug_link, debug_file: None, has_dwarf })
    }

    /// Adds the function symbols of `debug`, a separate debug file of this binary (see
    /// [`crate::debug_file`]); returns how many symbols the table has now.
    pub fn merge_debug_file(&mut self, debug: &DebugFile) -> Result<usize, Error> {
        let io_error = |source| Error::Io { path: debug.path.clone(), source };
        let data = crate::debug_file::map(&debug.file).map_err(io_error)?;
        if !data.starts_with(b"\x7fELF") {
            return Err(Error::NotElf { path: debug.path.clone() });
        }
        let file = object::File::parse(&*data).map_err(|source| Error::Elf { path: debug.path.clone(), source })?;
        let mut builder = std::mem::take(&mut self.symbols).into_builder();
        push_functions(&file, &mut builder);
        self.symbols = builder.build();
        self.debug_file = Some(debug.path.clone());
        Ok(self.symbols.len())
    }

    /// The binary's `.gnu_debuglink`, if it has one.
    pub fn debug_link(&self) -> Option<&DebugLink> {
        self.debug_link.as_ref()
    }

    /// Whether the file itself has DWARF (`.debug_info`).
    pub fn has_dwarf(&self) -> bool {
        self.has_dwarf
    }

    /// The separate debug file merged in, if any.
    pub fn debug_file(&self) -> Option<&Path> {
        self.debug_file.as_deref()
    }

    /// The GNU build ID, if the file has one.
    pub fn build_id(&self) -> Option<&BuildId> {
        self.build_id.as_ref()
    }

    /// The loadable segments.
    pub fn segments(&self) -> &[LoadSegment] {
        &self.segments
    }

    /// The function symbols.
    pub fn symbols(&self) -> &SymbolTable {
        &self.symbols
    }

    /// The Go table, for a Go binary.
    pub fn go(&self) -> Option<&GoTable> {
        self.go.as_ref()
    }

    /// The virtual address that file offset `offset` is linked at, if a load segment holds it.
    pub fn file_offset_to_address(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| offset >= s.file_offset && offset - s.file_offset < s.file_size)
            // Hostile headers can put a segment at the top of the address space.
            .and_then(|s| (offset - s.file_offset).checked_add(s.address))
    }

    /// The function containing file offset `offset`.
    pub fn lookup_file_offset(&self, offset: u64) -> Option<Symbol<'_>> {
        self.symbols.lookup(self.file_offset_to_address(offset)?)
    }

    /// Bytes of memory held.
    pub fn heap_bytes(&self) -> usize {
        self.symbols.heap_bytes() + self.segments.capacity() * std::mem::size_of::<LoadSegment>() + self.go.as_ref().map_or(0, GoTable::heap_bytes)
    }
}

/// Adds the defined function symbols of `file` (`.symtab` and `.dynsym`).
fn push_functions(file: &object::File<'_>, builder: &mut SymbolTableBuilder) {
    for symbol in file.symbols().chain(file.dynamic_symbols()) {
        // Text symbols include IFUNC resolvers, which `is_definition` leaves out.
        if symbol.kind() != SymbolKind::Text || symbol.is_undefined() {
            continue;
        }
        if let Ok(name) = symbol.name() {
            builder.push(symbol.address(), symbol.size(), name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    #[unsafe(no_mangle)]
    extern "C" fn oxeye_symbolizer_test_marker() -> u64 {
        std::hint::black_box(42)
    }

    /// File offset of a runtime address in this process, from `/proc/self/maps`.
    fn own_file_offset(address: u64) -> u64 {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for line in maps.lines() {
            let mut fields = line.split_whitespace();
            let (range, offset) = (fields.next().unwrap(), fields.nth(1).unwrap());
            let (start, end) = range.split_once('-').unwrap();
            let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
            if (start..end).contains(&address) {
                return address - start + u64::from_str_radix(offset, 16).unwrap();
            }
        }
        panic!("{address:#x} is not mapped");
    }

    /// This test binary is an ELF file with symbols: find one of its functions by the file
    /// offset it runs at, as the agent does for a sampled process.
    #[test]
    fn finds_own_function_by_file_offset() {
        let elf = ElfSymbols::open(std::env::current_exe().unwrap()).unwrap();
        assert!(elf.symbols().len() > 100, "only {} symbols", elf.symbols().len());
        let address = oxeye_symbolizer_test_marker as *const () as u64;
        let symbol = elf.lookup_file_offset(own_file_offset(address) + 1).expect("marker not found");
        assert_eq!(symbol.name, "oxeye_symbolizer_test_marker");
        assert_eq!(symbol.offset, 1);
        assert_eq!(oxeye_symbolizer_test_marker(), 42);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(ElfSymbols::parse(b"not an elf at all").is_err());
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for cut in [0, 4, 16, 63, 64, 100, 4096] {
            // Truncated images must give an error or a partial result, never a panic.
            let _ = ElfSymbols::parse(&exe[..cut.min(exe.len())]);
        }
    }

    /// Found by `cargo fuzz run elf_symbols`: a segment address near `u64::MAX` overflowed the
    /// offset-to-address translation.
    #[test]
    fn regression_segment_address_overflow() {
        let data = include_bytes!("testdata/segment-address-overflow.elf");
        if let Ok(elf) = ElfSymbols::parse(data) {
            for segment in elf.segments() {
                let _ = elf.lookup_file_offset(segment.file_offset);
                let _ = elf.file_offset_to_address(segment.file_offset.saturating_add(segment.file_size.saturating_sub(1)));
            }
        }
    }

    #[test]
    fn missing_file_names_path() {
        let error = ElfSymbols::open("/nonexistent/oxeye-test").unwrap_err();
        assert!(error.to_string().contains("/nonexistent/oxeye-test"), "{error}");
    }
}
