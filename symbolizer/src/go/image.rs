//! The ELF side: which sections hold the pclntab, the text, the moduledata and the inline
//! trees. Only borrowed while [`super::GoTable::from_elf`] runs.

use object::{Endianness, Object, ObjectSection, ObjectSymbol, SectionKind};

use super::{header, moduledata::DataSection};
use crate::Error;

/// Section names the Go linker gives the pclntab: `.gopclntab`, or in PIE and other
/// relro builds `.data.rel.ro.gopclntab`.
const PCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];
/// Sections only Go binaries have.
const GO_NOTE_SECTIONS: [&str; 2] = [".go.buildinfo", ".note.go.buildid"];

/// Where the pclntab is.
pub(super) struct Pclntab<'d> {
    pub address: u64,
    /// From the header to the end of the section.
    pub data: &'d [u8],
    /// Inside another section: `data` runs on past the table's end.
    pub embedded: bool,
}

/// A parsed ELF file and the sections a Go table is built from.
pub(super) struct Image<'d> {
    file: object::File<'d>,
    /// Allocated sections with bytes in the file: (address, bytes).
    loaded: Vec<(u64, &'d [u8])>,
}

impl<'d> Image<'d> {
    pub fn parse(data: &'d [u8]) -> Result<Self, Error> {
        let file = object::File::parse(data).map_err(|source| Error::ElfData { source })?;
        let loaded = file
            .sections()
            .filter(|s| s.address() != 0 && !matches!(s.kind(), SectionKind::UninitializedData | SectionKind::UninitializedTls | SectionKind::Metadata | SectionKind::Debug))
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
        Ok(Self { file, loaded })
    }

    pub fn is_little_endian(&self) -> bool {
        self.file.endianness() == Endianness::Little
    }

    /// The pclntab: its address and bytes, which run to the end of the section holding it.
    /// Its own section unless an external linker merged it into `.data.rel.ro` (cgo PIE
    /// builds); then it is found by its header, only in files that are Go binaries.
    pub fn pclntab(&self) -> Option<Pclntab<'d>> {
        if let Some(section) = PCLNTAB_SECTIONS.iter().find_map(|name| self.file.section_by_name(name)) {
            return Some(Pclntab { address: section.address(), data: section.data().ok()?, embedded: false });
        }
        let is_go = GO_NOTE_SECTIONS.iter().any(|name| self.file.section_by_name(name).is_some());
        if !is_go {
            return None;
        }
        let text = self.file.section_by_name(".text").map(|s| s.address()..s.address() + s.size())?;
        self.file.sections().filter(|s| s.name().is_ok_and(|n| n.starts_with(".data.rel.ro") || n.starts_with(".rodata"))).find_map(|section| {
            let data = section.data().ok()?;
            let off = (0..data.len()).step_by(8).find(|&off| header::looks_like_pclntab(&data[off..], &text))?;
            Some(Pclntab { address: section.address() + off as u64, data: &data[off..], embedded: true })
        })
    }

    /// Start of `.text`: the base of 1.18+ functab offsets when the header's `textStart`
    /// is zero (as a relocation would leave it in the file).
    pub fn text_address(&self) -> Option<u64> {
        self.file.section_by_name(".text").map(|s| s.address())
    }

    /// The `go:func.*` symbol (`go.func.*` before 1.20), present unless stripped.
    pub fn gofunc_symbol(&self) -> Option<u64> {
        self.file.symbols().find(|s| matches!(s.name(), Ok("go:func.*" | "go.func.*"))).map(|s| s.address())
    }

    /// The sections the runtime's moduledata may be in: the data sections (`.noptrdata`
    /// until Go 1.25) and `.go.module` (Go 1.26).
    pub fn data_sections(&self) -> Vec<DataSection<'d>> {
        self.file
            .sections()
            .filter(|s| s.name().is_ok_and(|n| (n.contains("data") && !n.contains("gopclntab")) || n == ".go.module") && s.kind() != SectionKind::UninitializedData)
            .filter_map(|s| Some(DataSection { address: s.address(), data: s.data().ok()? }))
            .collect()
    }

    /// Up to `len` bytes at virtual address `address`, stopping at the end of the section
    /// holding it.
    pub fn read(&self, address: u64, len: u64) -> Option<&'d [u8]> {
        let &(start, data) = self.loaded.iter().find(|(start, data)| address >= *start && address - start < data.len() as u64)?;
        let off = usize::try_from(address - start).ok()?;
        let end = off.saturating_add(usize::try_from(len).ok()?).min(data.len());
        data.get(off..end)
    }
}
