//! Kernel function symbols from `/proc/kallsyms`, modules included.

use std::{
    io::{BufRead, BufReader},
    path::Path,
};

use crate::{
    symbol_table::{Symbol, SymbolTable, SymbolTableBuilder},
    Error,
};

/// The kernel's function symbols, loaded once.
#[derive(Debug)]
pub struct KernelSymbols {
    symbols: SymbolTable,
}

/// The path the kernel publishes its symbols at.
pub const KALLSYMS: &str = "/proc/kallsyms";

impl KernelSymbols {
    /// Reads `/proc/kallsyms`.
    pub fn load() -> Result<Self, Error> {
        Self::load_from(Path::new(KALLSYMS))
    }

    /// Reads a file in the `/proc/kallsyms` format.
    pub fn load_from(path: &Path) -> Result<Self, Error> {
        let file = std::fs::File::open(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
        Self::from_reader(BufReader::with_capacity(1 << 16, file))
            .map_err(|error| match error {
                Error::Io { source, .. } => Error::Io { path: path.to_owned(), source },
                other => other,
            })
    }

    /// Parses lines like `ffffffff81000000 T _stext` and `ffffffffc0a01000 t foo\t[module]`.
    /// Only text symbols are kept; module functions are named `function [module]`.
    pub fn from_reader(reader: impl BufRead) -> Result<Self, Error> {
        let mut builder = SymbolTableBuilder::default();
        let mut lines = 0usize;
        let mut name_buf = String::new();
        for line in reader.lines() {
            let line = line.map_err(|source| Error::Io { path: KALLSYMS.into(), source })?;
            lines += 1;
            let mut fields = line.split_ascii_whitespace();
            let (Some(address), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(address) = u64::from_str_radix(address, 16) else { continue };
            match fields.next() {
                Some(module) => {
                    name_buf.clear();
                    name_buf.push_str(name);
                    name_buf.push(' ');
                    name_buf.push_str(module);
                    builder.push(address, 0, &name_buf);
                }
                None => builder.push(address, 0, name),
            }
        }
        let symbols = builder.build();
        if symbols.is_empty() && lines > 0 {
            return Err(Error::KallsymsHidden);
        }
        Ok(KernelSymbols { symbols })
    }

    /// The function containing kernel address `address`.
    pub fn lookup(&self, address: u64) -> Option<Symbol<'_>> {
        self.symbols.lookup(address)
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether no symbols were loaded.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// Bytes of memory held.
    pub fn heap_bytes(&self) -> usize {
        self.symbols.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 t do_one_thing
ffffffff81000200 D some_data
ffffffff81000300 W weak_fn
ffffffffc0a01000 t ext4_read\t[ext4]
";

    #[test]
    fn parses_text_and_modules() {
        let symbols = KernelSymbols::from_reader(SAMPLE.as_bytes()).unwrap();
        assert_eq!(symbols.len(), 4);
        assert_eq!(symbols.lookup(0xffffffff81000150).unwrap().name, "do_one_thing");
        // Data symbols are skipped: the address falls into the preceding function.
        assert_eq!(symbols.lookup(0xffffffff81000250).unwrap().name, "do_one_thing");
        assert_eq!(symbols.lookup(0xffffffffc0a01010).unwrap().name, "ext4_read [ext4]");
        assert!(symbols.lookup(0x1000).is_none());
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 t foo\n";
        assert!(matches!(KernelSymbols::from_reader(hidden.as_bytes()), Err(Error::KallsymsHidden)));
    }

    #[test]
    fn this_kernel() {
        // Runs as root in CI; as a normal user the kernel hides addresses.
        match KernelSymbols::load() {
            Ok(symbols) => assert!(symbols.len() > 1000),
            Err(Error::KallsymsHidden) => eprintln!("skipped: kallsyms hidden for this user"),
            Err(other) => panic!("{other}"),
        }
    }
}
