//! The ELF side: which sections hold the pclntab, the text, the moduledata and the inline
//! trees. Only borrowed while [`super::GoTable::from_elf`] runs.

use object::{Endianness, Object, ObjectSection, ObjectSymbol, SectionKind};

use super::moduledata::DataSection;
use crate::Error;

/// Section names the Go linker gives the pclntab: `.gopclntab`, or in PIE and other
/// relro builds `.data.rel.ro.gopclntab`.
const PCLNTAB_SECTIONS: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

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

    /// The pclntab section: its address and bytes.
    pub fn pclntab(&self) -> Option<(u64, &'d [u8])> {
        let section = PCLNTAB_SECTIONS.iter().find_map(|name| self.file.section_by_name(name))?;
        Some((section.address(), section.data().ok()?))
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

    /// The writable data sections, where the runtime's moduledata lives.
    pub fn data_sections(&self) -> Vec<DataSection<'d>> {
        self.file
            .sections()
            .filter(|s| s.name().is_ok_and(|n| n.contains("data") && !n.contains("gopclntab")) && s.kind() != SectionKind::UninitializedData)
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
