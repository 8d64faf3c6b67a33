//! Ranges from an ELF file's symbol tables (`.symtab`, else what `.dynsym` exports): one
//! depth-0 range per function symbol with a size, named by its demangled name.

use object::{Object, ObjectSymbol, SymbolKind};

/// A function symbol's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolRange<'data> {
    /// First address.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    /// The name as stored (mangled): demangled as it is written, so that a large library's
    /// names are never all held at once.
    pub name: &'data str,
}

/// The function symbols of `file` (IFUNC resolvers included) as ranges, sorted by address. Of several symbols at one
/// address the one `nm` would list first among equals is not predictable, so oxeye's own rule
/// applies (as in its symbol table): the shortest name, usually the public alias. A symbol
/// that starts inside the previous kept one is dropped: readers pick one range per depth, and
/// two overlapping ones would make that choice arbitrary.
pub fn symbol_ranges<'data>(file: &object::File<'data>) -> Vec<SymbolRange<'data>> {
    let mut raw: Vec<(u64, u64, &str)> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|symbol| symbol.kind() == SymbolKind::Text && !symbol.is_undefined() && symbol.size() > 0 && symbol.address() != 0)
        .filter_map(|symbol| Some((symbol.address(), symbol.size(), symbol.name().ok().filter(|n| !n.is_empty())?)))
        .collect();
    raw.sort_by_key(|&(address, _, name)| (address, name.len(), name));
    raw.dedup_by_key(|&mut (address, _, _)| address);
    let mut ranges: Vec<SymbolRange> = Vec::with_capacity(raw.len());
    for (start, size, name) in raw {
        if ranges.last().is_some_and(|last| start < last.start.saturating_add(last.size)) {
            continue;
        }
        ranges.push(SymbolRange { start, size, name });
    }
    ranges
}
