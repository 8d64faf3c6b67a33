//! The functab (sorted function entry pcs, each with the offset of its `_func` record) and
//! the `_func` records themselves. Nothing is decoded ahead of time: lookups binary-search
//! the functab in place and read one `_func`.

use super::{
    header::{GoVersion, Header},
    reader::{u32_at, u8_at, word_at},
};

/// `PCDATA_InlTreeIndex` (cmd/internal/objabi): the pc-value table giving the inline-tree
/// index in force at each pc, or -1 outside inlined code.
pub(super) const PCDATA_INL_TREE_INDEX: u32 = 2;
/// `abi.FuncFlagTopFrame`: the function is the outermost frame of a stack (`runtime.goexit`,
/// `runtime.mstart`, `runtime.rt0_go`).
pub(super) const FUNC_FLAG_TOP_FRAME: u8 = 1;
/// `abi.FuncFlagSPWrite`: the function writes SP in ways pcsp does not describe
/// (`runtime.systemstack`, `runtime.morestack`, `runtime.gogo`).
pub(super) const FUNC_FLAG_SP_WRITE: u8 = 2;
/// `FUNCDATA_InlTree`: the funcdata slot pointing at a function's inline tree.
pub(super) const FUNCDATA_INL_TREE: u8 = 3;

/// A view of the functab inside the pclntab bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct FuncTab<'a> {
    /// The pclntable sub-table: the functab, then the `_func` records it points into.
    pcln: &'a [u8],
    nfunc: usize,
    version: GoVersion,
    ptr_size: u8,
    text_start: u64,
}

impl<'a> FuncTab<'a> {
    /// `None` unless all `nfunc + 1` functab entries (the last one holds the end pc of
    /// the last function) fit in the table.
    pub fn new(pclntab: &'a [u8], header: &Header, text_start: u64) -> Option<Self> {
        let pcln = pclntab.get(header.pcln.clone())?;
        let table = Self { pcln, nfunc: header.nfunc, version: header.version, ptr_size: header.ptr_size, text_start };
        let bytes = header.nfunc.checked_add(1)?.checked_mul(table.entry_size())?;
        (bytes <= pcln.len()).then_some(table)
    }

    pub fn len(&self) -> usize {
        self.nfunc
    }

    fn entry_size(&self) -> usize {
        match self.version {
            GoVersion::Go116 => 2 * usize::from(self.ptr_size),
            GoVersion::Go118 | GoVersion::Go120 => 8,
        }
    }

    /// Entry pc of function `i` (`i == len()` gives the end of the last function).
    fn entry(&self, i: usize) -> Option<u64> {
        let off = i.checked_mul(self.entry_size())?;
        match self.version {
            GoVersion::Go116 => word_at(self.pcln, off, self.ptr_size),
            GoVersion::Go118 | GoVersion::Go120 => self.text_start.checked_add(u64::from(u32_at(self.pcln, off)?)),
        }
    }

    /// Offset of function `i`'s `_func` record within the pclntable.
    fn func_offset(&self, i: usize) -> Option<usize> {
        let off = i.checked_mul(self.entry_size())?;
        let value = match self.version {
            GoVersion::Go116 => word_at(self.pcln, off + usize::from(self.ptr_size), self.ptr_size)?,
            GoVersion::Go118 | GoVersion::Go120 => u64::from(u32_at(self.pcln, off + 4)?),
        };
        usize::try_from(value).ok()
    }

    /// Where function `i`'s code ends: the next function's entry.
    pub fn end(&self, i: usize) -> Option<u64> {
        self.entry(i.checked_add(1)?)
    }

    pub fn first_entry(&self) -> Option<u64> {
        self.entry(0)
    }

    /// Where the last `_func` record (with its pcdata and funcdata arrays) ends, as an offset
    /// into the pclntable: the end of the table when nothing else says where it is.
    pub fn records_end(&self) -> Option<usize> {
        let mut end = (self.nfunc + 1) * self.entry_size();
        for i in 0..self.nfunc {
            let func = self.func(i)?;
            let funcdata_size = match self.version {
                GoVersion::Go116 => usize::from(func.nfuncdata) * usize::from(self.ptr_size) + usize::from(self.ptr_size),
                GoVersion::Go118 | GoVersion::Go120 => usize::from(func.nfuncdata) * 4,
            };
            let record_end = func.pcdata_start.checked_add(usize::try_from(func.npcdata).ok()?.checked_mul(4)?)?.checked_add(funcdata_size)?;
            end = end.max(record_end);
        }
        Some(end.min(self.pcln.len()))
    }

    /// The function whose `[entry, next entry)` range holds `pc`.
    pub fn find(&self, pc: u64) -> Option<Func> {
        let (first, end) = (self.entry(0)?, self.entry(self.nfunc)?);
        if pc < first || pc >= end {
            return None;
        }
        // Largest i with entry(i) <= pc; unreadable entries sort as "after" so a corrupt
        // table yields a wrong or no answer, never a panic.
        let (mut lo, mut hi) = (0usize, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid).is_some_and(|e| e <= pc) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.func(lo)
    }

    /// Function `i`'s `_func` record.
    pub fn func(&self, i: usize) -> Option<Func> {
        if i >= self.nfunc {
            return None;
        }
        Func::parse(self, self.entry(i)?, self.func_offset(i)?)
    }

    /// Reads funcdata slot `slot` of `func`: an absolute address (1.16) or an offset from
    /// `moduledata.gofunc` (1.18+). `None` if the function has no such funcdata.
    pub fn funcdata(&self, func: &Func, slot: u8, gofunc: Option<u64>) -> Option<u64> {
        if slot >= func.nfuncdata {
            return None;
        }
        let pcdata_end = func.pcdata_start.checked_add(usize::try_from(func.npcdata).ok()?.checked_mul(4)?)?;
        match self.version {
            GoVersion::Go116 => {
                // The funcdata array is pointer-aligned (runtime.funcdata); the pclntable starts
                // pointer-aligned in the section, so aligning its offset is enough.
                let ptr = usize::from(self.ptr_size);
                let start = pcdata_end.checked_add(ptr - 1)? / ptr * ptr;
                let value = word_at(self.pcln, start.saturating_add(usize::from(slot) * ptr), self.ptr_size)?;
                (value != 0).then_some(value)
            }
            GoVersion::Go118 | GoVersion::Go120 => {
                let value = u32_at(self.pcln, pcdata_end.saturating_add(usize::from(slot) * 4))?;
                if value == u32::MAX {
                    return None;
                }
                gofunc?.checked_add(u64::from(value))
            }
        }
    }

    /// Offset into the pctab of `func`'s pcdata table `index`; `None` if it has none.
    pub fn pcdata(&self, func: &Func, index: u32) -> Option<u32> {
        if index >= func.npcdata {
            return None;
        }
        let off = u32_at(self.pcln, func.pcdata_start.saturating_add(usize::try_from(index).ok()?.checked_mul(4)?))?;
        (off != 0).then_some(off)
    }
}

/// The fields of one `_func` record that symbolization needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Func {
    pub entry: u64,
    /// Offset of the name in the funcname table.
    pub name_off: u32,
    /// Offsets into the pctab of the stack-pointer delta, file-index and line tables.
    pub pcsp: u32,
    pub pcfile: u32,
    pub pcln: u32,
    /// This function's compilation unit's first entry in the cutab.
    pub cu_offset: u32,
    npcdata: u32,
    /// `funcFlag` bits (1.17+; 0 in the 1.16 layout, which has none).
    pub flag: u8,
    /// Number of funcdata slots.
    pub nfuncdata: u8,
    /// Offset of the pcdata array within the pclntable.
    pcdata_start: usize,
}

impl Func {
    /// Reads the record at `off`. Before 1.18 it starts with a pointer-sized entry pc;
    /// 1.20 adds `startLine` before the trailing funcID/flag/pad/nfuncdata bytes.
    fn parse(table: &FuncTab<'_>, entry: u64, off: usize) -> Option<Self> {
        let fields = off.checked_add(match table.version {
            GoVersion::Go116 => usize::from(table.ptr_size),
            GoVersion::Go118 | GoVersion::Go120 => 4,
        })?;
        // Offsets come from the file: saturate rather than overflow, and let the bounds
        // checks of the reads refuse them.
        let field = |index: usize| u32_at(table.pcln, fields.saturating_add(4 * index));
        let trailer = fields.saturating_add(if table.version == GoVersion::Go120 { 36 } else { 32 });
        Some(Self {
            entry,
            name_off: field(0)?,
            pcsp: field(3)?,
            pcfile: field(4)?,
            pcln: field(5)?,
            npcdata: field(6)?,
            cu_offset: field(7)?,
            flag: match table.version {
                GoVersion::Go116 => 0,
                GoVersion::Go118 | GoVersion::Go120 => u8_at(table.pcln, trailer.saturating_add(1))?,
            },
            nfuncdata: u8_at(table.pcln, trailer.saturating_add(3))?,
            pcdata_start: trailer.saturating_add(4),
        })
    }
}
