//! A sorted, compact table of function symbols with address lookup.

use std::borrow::Cow;

use crate::demangle::demangle;

/// Function symbols sorted by address, with names in one shared string arena.
#[derive(Debug, Default)]
pub struct SymbolTable {
    /// Sorted by `address`; one entry per distinct address.
    entries: Vec<Entry>,
    names: String,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    address: u64,
    /// 0 when the symbol's size is unknown: it then extends to the next symbol.
    size: u64,
    name_start: u32,
    name_len: u32,
}

/// A symbol found by [`SymbolTable::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// The symbol's name as stored in the file (possibly mangled).
    pub name: &'a str,
    /// The symbol's start address.
    pub address: u64,
    /// How far the looked-up address is past the start.
    pub offset: u64,
}

impl Symbol<'_> {
    /// The readable (demangled) name.
    pub fn demangled(&self) -> Cow<'_, str> {
        demangle(self.name)
    }
}

/// Builds a [`SymbolTable`] from `(address, size, name)` triples in any order.
#[derive(Debug, Default)]
pub struct SymbolTableBuilder {
    entries: Vec<Entry>,
    names: String,
}

impl SymbolTableBuilder {
    /// Adds a symbol; empty names and zero addresses are ignored.
    pub fn push(&mut self, address: u64, size: u64, name: &str) {
        if name.is_empty() || address == 0 || self.names.len() + name.len() > u32::MAX as usize {
            return;
        }
        let name_start = self.names.len() as u32;
        self.names.push_str(name);
        self.entries.push(Entry { address, size, name_start, name_len: name.len() as u32 });
    }

    /// Sorts and de-duplicates: of several symbols at one address, the one with a known size
    /// and the shortest name (usually the public alias) wins.
    pub fn build(mut self) -> SymbolTable {
        let names = &self.names;
        self.entries.sort_by_key(|e| (e.address, e.size == 0, e.name_len, &names[e.name_start as usize..(e.name_start + e.name_len) as usize]));
        self.entries.dedup_by_key(|e| e.address);
        self.entries.shrink_to_fit();
        SymbolTable { entries: self.entries, names: self.names }
    }
}

impl SymbolTable {
    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no symbols.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The symbol covering `address`: the last one starting at or below it, if `address` is
    /// within its size (or, for a size-less symbol, before the next symbol).
    pub fn lookup(&self, address: u64) -> Option<Symbol<'_>> {
        let index = self.entries.partition_point(|e| e.address <= address).checked_sub(1)?;
        let entry = self.entries[index];
        if entry.size != 0 && address >= entry.address.saturating_add(entry.size) {
            return None;
        }
        let name = &self.names[entry.name_start as usize..(entry.name_start + entry.name_len) as usize];
        Some(Symbol { name, address: entry.address, offset: address - entry.address })
    }

    /// A builder holding this table's symbols, to add more to.
    pub fn into_builder(self) -> SymbolTableBuilder {
        SymbolTableBuilder { entries: self.entries, names: self.names }
    }

    /// Bytes of memory the table holds.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>() + self.names.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> SymbolTable {
        let mut builder = SymbolTableBuilder::default();
        builder.push(0x2000, 0x10, "second");
        builder.push(0x1000, 0x100, "first");
        builder.push(0x1000, 0x100, "__first_alias");
        builder.push(0x3000, 0, "sizeless");
        builder.push(0, 4, "at_zero");
        builder.build()
    }

    #[test]
    fn finds_covering_symbol() {
        let table = table();
        assert_eq!(table.len(), 3);
        assert_eq!(table.lookup(0x1000).unwrap().name, "first");
        let symbol = table.lookup(0x10ff).unwrap();
        assert_eq!((symbol.name, symbol.offset), ("first", 0xff));
        assert_eq!(table.lookup(0x200f).unwrap().name, "second");
        assert_eq!(table.lookup(0x3abc).unwrap().name, "sizeless");
    }

    #[test]
    fn misses_outside_sizes() {
        let table = table();
        assert!(table.lookup(0xfff).is_none());
        assert!(table.lookup(0x1100).is_none());
        assert!(table.lookup(0x2010).is_none());
    }
}
