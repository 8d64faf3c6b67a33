//! Source-level frames of one address in a file: the calls the compiler inlined there,
//! innermost first, then the function whose code it is, each with file and line.
//!
//! Go binaries say it in `.gopclntab` (frame type `go`); other native code in DWARF, where
//! the file or its separate debug file has it (frame type `native`). The outermost frame keeps
//! the symbol table's name where there is one (as `perf report --inline` does), so a file
//! whose DWARF turns up later does not rename its functions; the inlined ones are DWARF's.

use std::{collections::HashMap, sync::Arc};

use symbolizer::dwarf_frames::{DwarfFrames, SourceFrame};
use tracing::debug;

use crate::{
    objects::{ObjectId, ObjectRegistry},
    symbolize::{Named, SourceLine},
};

/// Addresses whose frame count is remembered before the cache is cleared.
const MAX_CACHED_ADDRESSES: usize = 1 << 20;
/// Files whose DWARF is kept open at once; past it all are closed (and reopened on use).
const MAX_OPEN_DWARF: usize = 256;

/// Frame counts and DWARF readers, per file.
#[derive(Debug, Default)]
pub struct SourceFrames {
    /// How many source-level frames each address is (0: none known, name it by symbol).
    depths: HashMap<(ObjectId, u64), u16>,
    /// Each file's DWARF, once looked for (`None`: it has none, or it cannot be read).
    dwarf: HashMap<ObjectId, Option<DwarfFrames>>,
    scratch: Vec<SourceFrame>,
}

impl SourceFrames {
    /// How many source-level frames the code at `file_offset` of `object` is, if its file says.
    pub fn depth(&mut self, object: ObjectId, file_offset: u64, objects: &mut ObjectRegistry) -> Option<u16> {
        if self.depths.len() >= MAX_CACHED_ADDRESSES && !self.depths.contains_key(&(object, file_offset)) {
            self.depths.clear();
        }
        if let Some(&depth) = self.depths.get(&(object, file_offset)) {
            return (depth > 0).then_some(depth);
        }
        let depth = self.count(object, file_offset, objects).min(u16::MAX as usize) as u16;
        self.depths.insert((object, file_offset), depth);
        (depth > 0).then_some(depth)
    }

    fn count(&mut self, object: ObjectId, file_offset: u64, objects: &mut ObjectRegistry) -> usize {
        let loaded = objects.ensure_loaded(object);
        let Some((symbols, address)) = loaded.symbols().and_then(|s| Some((s, s.file_offset_to_address(file_offset)?))) else { return 0 };
        if let Some(table) = symbols.go() {
            let mut frames = Vec::new();
            return if table.lookup(address, &mut frames) { frames.len() } else { 0 };
        }
        let Some(dwarf) = dwarf_of(&mut self.dwarf, object, objects) else { return 0 };
        dwarf.frames(address, &mut self.scratch);
        self.scratch.len()
    }

    /// The name and source line of frame `index` (0 innermost) at `file_offset` of `object`.
    pub fn named(&mut self, object: ObjectId, file_offset: u64, index: u16, objects: &mut ObjectRegistry) -> Named {
        let loaded = objects.ensure_loaded(object);
        let fallback = Named { name: format!("{}+{file_offset:#x}", loaded.file_name()).into(), from_symbol: false, source: None };
        let Some((symbols, address)) = loaded.symbols().and_then(|s| Some((s, s.file_offset_to_address(file_offset)?))) else { return fallback };
        if let Some(table) = symbols.go() {
            let mut frames = Vec::new();
            let Some(frame) = table.lookup(address, &mut frames).then(|| frames.get(index as usize)).flatten() else { return fallback };
            let source = (!frame.file.is_empty()).then(|| SourceLine { file: frame.file.into(), line: frame.line, first_line: 0 });
            return Named { name: frame.function.into(), from_symbol: true, source };
        }
        let symbol: Option<Arc<str>> = symbols.symbols().lookup(address).map(|s| s.demangled().into());
        let Some(dwarf) = dwarf_of(&mut self.dwarf, object, objects) else { return fallback };
        dwarf.frames(address, &mut self.scratch);
        let outermost = index as usize + 1 == self.scratch.len();
        let Some(frame) = self.scratch.get(index as usize) else { return fallback };
        let source = frame.file.as_deref().map(|file| SourceLine { file: file.into(), line: frame.line, first_line: 0 });
        let name = match (outermost, symbol, &frame.function) {
            (true, Some(symbol), _) => symbol,
            (_, _, Some(function)) => function.as_str().into(),
            (_, Some(symbol), None) => symbol,
            (_, None, None) => return Named { source, ..fallback },
        };
        Named { name, from_symbol: true, source }
    }

    /// Forgets what is known of `objects`, whose symbols have changed.
    pub fn forget(&mut self, objects: &[ObjectId]) {
        self.depths.retain(|(object, _), _| !objects.contains(object));
        self.dwarf.retain(|object, _| !objects.contains(object));
    }
}

/// The DWARF of `object`, opened on first use.
fn dwarf_of<'a>(dwarf: &'a mut HashMap<ObjectId, Option<DwarfFrames>>, object: ObjectId, objects: &ObjectRegistry) -> Option<&'a DwarfFrames> {
    if dwarf.len() >= MAX_OPEN_DWARF && !dwarf.contains_key(&object) {
        dwarf.clear();
    }
    dwarf
        .entry(object)
        .or_insert_with(|| {
            let entry = objects.get(object);
            entry.dwarf_paths().iter().find_map(|path| DwarfFrames::open(path).map_err(|error| debug!(path = %entry.path, %error, "no DWARF")).ok())
        })
        .as_ref()
}
