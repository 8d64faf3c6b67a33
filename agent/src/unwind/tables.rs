//! Unwind tables of files, in the kernel's rows array: compiled once per file (device, inode,
//! modification time), shared by every process that maps the file, and evicted — least
//! recently unused first — only when no process maps the file and the space is needed.

use std::collections::HashMap;

use crate::process::maps::FileIdentity;

use agent_common::{
    files::KernelFile,
    unwind::{UnwindEntry, UnwindRule},
};
use aya::maps::{HashMap as BpfHashMap, MapData};
use anyhow::Result;
use symbolizer::unwind::UnwindTable;
use tracing::debug;

use super::{
    encode::encode,
    extents::{Extent, Extents},
    mapped_array::MappedArray,
    rules::RuleTable,
};

/// A file's bytes: memory-mapped (only the pages the compiler reads count against oxeye's
/// memory) or, for the vDSO, a copy.
pub enum FileBytes {
    /// A read-only mapping of the file.
    Mapped(memmap2::Mmap),
    /// Bytes in memory.
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Owned(bytes) => bytes,
        }
    }
}

/// What identifies a file's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKey {
    /// A file on the host.
    File(FileIdentity),
    /// The kernel's vDSO (the same image in every process).
    Vdso,
}

/// A loadable segment: file offset and size, and its virtual address.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// Offset in the file.
    pub offset: u64,
    /// Bytes in the file.
    pub size: u64,
    /// Virtual address of `offset`.
    pub vaddr: u64,
}

impl Segment {
    /// The file offsets a mapping of this segment may start at and cover: from the segment's
    /// offset rounded down to the largest page size (64 KiB, arm64's), to its end.
    pub fn mappable_offsets(&self) -> std::ops::Range<u64> {
        const MAX_PAGE: u64 = 64 << 10;
        self.offset & !(MAX_PAGE - 1)..self.offset + self.size.max(1)
    }
}

/// One file's table in the rows array.
#[derive(Debug)]
pub struct FileTable {
    /// Where the rows are; `None` when the file has no usable unwind information.
    pub rows: Option<Extent>,
    /// File virtual address of row `pc` 0.
    pub base: u64,
    /// Executable loadable segments, to turn a mapping's file offset into a virtual address.
    pub segments: Vec<Segment>,
    /// Processes mapping the file.
    refs: u32,
    /// When `refs` last dropped to 0 (a sequence number), for eviction order.
    unused_since: u64,
}

impl FileTable {
    /// The virtual address of file offset `offset` (the start of an executable mapping), if
    /// an executable segment holds it. Mappings start on a page boundary, which may be below
    /// the segment's own offset (lld puts `.text` mid-page); the address then is too.
    pub fn vaddr_of(&self, offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.mappable_offsets().contains(&offset))
            .map(|s| offset.wrapping_sub(s.offset).wrapping_add(s.vaddr))
    }
}

/// Counts for reports and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct TableStats {
    /// Files with a table in the array.
    pub tables: u64,
    /// Rows in use.
    pub rows: u64,
    /// Rows the array holds.
    pub capacity: u64,
    /// Tables compiled since start.
    pub compiled: u64,
    /// Tables evicted to make room.
    pub evicted: u64,
    /// Files left without a table because the array was full of tables in use.
    pub no_room: u64,
    /// Files with no usable unwind information (or unreadable).
    pub without_info: u64,
    /// Distinct rules the rows share.
    pub rules: u64,
}

/// The tables in the kernel's rows array.
pub struct TableStore {
    tables: HashMap<TableKey, FileTable>,
    rows: MappedArray<UnwindEntry>,
    rules: RuleTable,
    extents: Extents,
    clock: u64,
    stats: TableStats,
    /// `FILE_TABLES`: where each file's table is, for processes the unwinder finds mappings
    /// of itself.
    by_file: Option<BpfHashMap<MapData, KernelFile, agent_common::files::FileTable>>,
}

impl TableStore {
    /// An empty store over the rows and rules arrays.
    pub fn new(rows: MappedArray<UnwindEntry>, rules: MappedArray<UnwindRule>) -> Self {
        let extents = Extents::new(rows.len() as u32);
        let stats = TableStats { capacity: rows.len() as u64, ..Default::default() };
        TableStore { tables: HashMap::new(), rows, rules: RuleTable::new(rules), extents, clock: 0, stats, by_file: None }
    }

    /// Also keeps `by_file` (`FILE_TABLES`) up to date with the tables of files.
    pub fn publishing_to(mut self, by_file: BpfHashMap<MapData, KernelFile, agent_common::files::FileTable>) -> Self {
        self.by_file = Some(by_file);
        self
    }

    /// Tells the unwinder where `key`'s table is, for mappings it finds itself.
    fn publish(&mut self, key: TableKey, table: &FileTable) {
        let (Some(by_file), Some(rows)) = (&mut self.by_file, table.rows) else { return };
        let file = match key {
            TableKey::File(identity) => identity.kernel_file(),
            TableKey::Vdso => KernelFile::VDSO,
        };
        let Some(segment) = table.segments.first() else { return };
        let offsets = segment.mappable_offsets();
        let value = agent_common::files::FileTable {
            rows_start: rows.start,
            rows_len: rows.len,
            base: table.base,
            exec_offset_start: offsets.start,
            exec_offset_end: offsets.end,
            vaddr_minus_offset: segment.vaddr.wrapping_sub(segment.offset),
        };
        if let Err(error) = by_file.insert(file, value, 0) {
            debug!(?key, %error, "cannot publish the unwind table by file");
        }
    }

    fn unpublish(&mut self, key: TableKey) {
        if let Some(by_file) = &mut self.by_file {
            let _ = by_file.remove(&match key {
                TableKey::File(identity) => identity.kernel_file(),
                TableKey::Vdso => KernelFile::VDSO,
            });
        }
    }

    /// Current counts.
    pub fn stats(&self) -> TableStats {
        TableStats {
            tables: self.tables.values().filter(|t| t.rows.is_some()).count() as u64,
            rows: self.extents.used() as u64,
            rules: self.rules.len() as u64,
            ..self.stats
        }
    }

    /// Takes a reference on `key`'s table, compiling it from the bytes `read` returns if it is
    /// not loaded yet.
    pub fn acquire(&mut self, key: TableKey, read: impl FnOnce() -> Result<FileBytes>) -> &FileTable {
        if !self.tables.contains_key(&key) {
            let table = self.load(key, read);
            self.publish(key, &table);
            self.tables.insert(key, table);
        }
        let table = self.tables.get_mut(&key).expect("inserted above");
        table.refs += 1;
        table
    }

    /// Drops a reference taken by [`TableStore::acquire`].
    pub fn release(&mut self, key: &TableKey) {
        self.clock += 1;
        if let Some(table) = self.tables.get_mut(key) {
            table.refs = table.refs.saturating_sub(1);
            if table.refs == 0 {
                table.unused_since = self.clock;
            }
        }
    }

    /// Drops one reference to each of `keys`.
    pub fn release_all(&mut self, keys: &[TableKey]) {
        for key in keys {
            self.release(key);
        }
    }

    fn load(&mut self, key: TableKey, read: impl FnOnce() -> Result<FileBytes>) -> FileTable {
        let mut table = FileTable { rows: None, base: 0, segments: Vec::new(), refs: 0, unused_since: 0 };
        let data = match read() {
            Ok(data) => data,
            Err(error) => {
                debug!(?key, "cannot read file for its unwind table: {error:#}");
                self.stats.without_info += 1;
                return table;
            }
        };
        let started = std::time::Instant::now();
        table.segments = segments(&data);
        let compiled = match UnwindTable::compile(&data) {
            Ok(compiled) => compiled,
            Err(error) => {
                debug!(?key, %error, "no unwind table");
                self.stats.without_info += 1;
                return table;
            }
        };
        drop(data);
        self.stats.compiled += 1;
        let rules = &mut self.rules;
        let encoded = encode(&compiled, |rule| rules.intern(rule));
        drop(compiled);
        table.base = encoded.base;
        let len = encoded.entries.len() as u32;
        let Some(extent) = self.allocate(len) else {
            debug!(?key, rows = len, "no room for the unwind table");
            self.stats.no_room += 1;
            return table;
        };
        self.rows.write(extent.start as usize, &encoded.entries);
        debug!(?key, rows = len, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "unwind table compiled and loaded");
        table.rows = Some(extent);
        table
    }

    /// Allocates rows, evicting unused tables (oldest first) until they fit.
    fn allocate(&mut self, len: u32) -> Option<Extent> {
        if len > self.extents.capacity() {
            return None;
        }
        loop {
            if let Some(extent) = self.extents.allocate(len) {
                return Some(extent);
            }
            let victim = self.tables.iter().filter(|(_, t)| t.refs == 0).min_by_key(|(_, t)| t.unused_since).map(|(key, _)| *key)?;
            self.unpublish(victim);
            if let Some(evicted) = self.tables.remove(&victim) {
                if let Some(extent) = evicted.rows {
                    self.extents.release(extent);
                    self.stats.evicted += 1;
                }
            }
        }
    }
}

/// The executable loadable segments of an ELF image (none if it is not one).
fn segments(data: &[u8]) -> Vec<Segment> {
    use object::{elf::PF_X, Object, ObjectSegment, SegmentFlags};
    let Ok(file) = object::File::parse(data) else { return Vec::new() };
    file.segments()
        .filter(|segment| matches!(segment.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.contains(PF_X)))
        .map(|segment| {
            let (offset, size) = segment.file_range();
            Segment { offset, size, vaddr: segment.address() }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn this_binary() -> Result<FileBytes> {
        Ok(FileBytes::Owned(std::fs::read(std::env::current_exe()?)?))
    }

    fn key(inode: u64) -> TableKey {
        TableKey::File(FileIdentity { dev: 1, inode, mtime_ns: 0, size: 0 })
    }

    #[test]
    fn tables_are_shared_written_and_evicted_only_when_unused() {
        let mut rules = RuleTable::new(MappedArray::anonymous(4096));
        let rows = encode(&UnwindTable::compile(&this_binary().unwrap()).unwrap(), |rule| rules.intern(rule)).entries;
        // Room for two copies of this binary's table, not three.
        let mut store = TableStore::new(MappedArray::anonymous(rows.len() as u32 * 5 / 2), MappedArray::anonymous(4096));
        let first = store.acquire(key(1), this_binary).rows.expect("fits");
        assert_eq!(store.rows.get(first.start as usize + 7), rows[7], "rows are written where the extent says");
        assert!(store.acquire(key(1), || panic!("already loaded: not read again")).rows.is_some());
        let second = store.acquire(key(2), this_binary).rows.expect("fits");
        assert_ne!(first.start, second.start);

        // Both are in use: a third does not fit and nothing is evicted.
        assert!(store.acquire(key(3), this_binary).rows.is_none());
        assert_eq!((store.stats().no_room, store.stats().evicted), (1, 0));

        // Once no process uses the first (two references were taken), it makes room.
        store.release(&key(1));
        store.release(&key(1));
        store.release(&key(3));
        assert!(store.acquire(key(4), this_binary).rows.is_some());
        assert_eq!(store.stats().evicted, 1);
        assert_eq!(store.stats().rows, 2 * rows.len() as u64);
    }

    #[test]
    fn unreadable_and_non_elf_files_get_no_table() {
        let mut store = TableStore::new(MappedArray::anonymous(1024), MappedArray::anonymous(16));
        assert!(store.acquire(key(1), || anyhow::bail!("gone")).rows.is_none());
        assert!(store.acquire(key(2), || Ok(FileBytes::Owned(b"not an ELF file".to_vec()))).rows.is_none());
        assert_eq!(store.stats().without_info, 2);
    }

    #[test]
    fn mapping_offsets_below_a_mid_page_segment_get_the_right_address() {
        // lld puts .text at file offset 0x16970, address 0x17970; the mapping starts at 0x16000.
        let table = FileTable {
            rows: None,
            base: 0,
            segments: vec![Segment { offset: 0x16970, size: 0x3efb0, vaddr: 0x17970 }],
            refs: 0,
            unused_since: 0,
        };
        assert_eq!(table.vaddr_of(0x16000), Some(0x17000));
        assert_eq!(table.vaddr_of(0x16970), Some(0x17970));
        assert_eq!(table.vaddr_of(0x60000), None);
    }
}
