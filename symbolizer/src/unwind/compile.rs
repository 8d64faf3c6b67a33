//! Compiling `.eh_frame` / `.debug_frame` (and Go's pcsp tables) into an [`UnwindTable`] with gimli's CFI evaluator.

use gimli::{
    AArch64, BaseAddresses, CieOrFde, DebugFrame, EhFrame, EndianSlice, Register, RegisterRule, RunTimeEndian, UnwindContext, UnwindSection,
    UnwindTableRow, X86_64,
};
use object::{Object, ObjectSection};
use std::collections::HashMap;

use super::{go_frames, Arch, CfaRule, FpRule, RaRule, RowKind, UnwindRules, UnwindTable};
use crate::go::GoTable;

/// Most rows a table may have (a 2 GB binary has a few million); bounds memory on hostile input.
pub const MAX_ROWS: usize = 20_000_000;

/// Why a file has no unwind table.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Not an ELF file we can parse.
    #[error("not a valid ELF file: {0}")]
    Elf(#[from] object::read::Error),
    /// An architecture the unwinder does not handle.
    #[error("unsupported architecture {0}")]
    UnsupportedArch(String),
    /// Neither `.eh_frame` nor `.debug_frame`.
    #[error("no .eh_frame or .debug_frame section")]
    NoUnwindInfo,
    /// More rows than [`MAX_ROWS`].
    #[error("more than {MAX_ROWS} unwind rows")]
    TooManyRows,
}

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// Registers that matter to the unwinder, in DWARF numbering.
#[derive(Clone, Copy)]
struct Registers {
    sp: Register,
    fp: Register,
    ra: Register,
}

impl UnwindTable {
    /// Compiles the unwind table of an ELF image held in memory.
    pub fn compile(data: &[u8]) -> Result<Self, CompileError> {
        let file = object::File::parse(data)?;
        let (arch, registers) = match file.architecture() {
            object::Architecture::X86_64 => (Arch::X86_64, Registers { sp: X86_64::RSP, fp: X86_64::RBP, ra: X86_64::RA }),
            object::Architecture::Aarch64 => (Arch::Aarch64, Registers { sp: AArch64::SP, fp: AArch64::X29, ra: AArch64::X30 }),
            other => return Err(CompileError::UnsupportedArch(format!("{other:?}"))),
        };
        let endian = if file.is_little_endian() { RunTimeEndian::Little } else { RunTimeEndian::Big };
        let address_size = if file.is_64() { 8 } else { 4 };
        let mut bases = BaseAddresses::default();
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = file.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        let mut compiler = Compiler { arch, registers, spans: Vec::new(), rules: Vec::new(), rule_index: HashMap::new(), skipped: 0 };
        // Go code is described by its pcsp tables; a Go binary's `.debug_frame` says the same
        // for Go code only, while `.eh_frame` (cgo) describes the C code.
        let go = GoTable::from_elf(data).ok().flatten();
        if let Some(section) = file.section_by_name(".eh_frame") {
            let data = section.uncompressed_data()?;
            let bases = bases.set_eh_frame(section.address());
            let mut eh_frame = EhFrame::new(&data, endian);
            eh_frame.set_address_size(address_size);
            if arch == Arch::Aarch64 {
                eh_frame.set_vendor(gimli::Vendor::AArch64);
            }
            compiler.collect(&eh_frame, &bases)?;
        } else if let (Some(section), None) = (file.section_by_name(".debug_frame"), &go) {
            let data = section.uncompressed_data()?;
            let mut debug_frame = DebugFrame::new(&data, endian);
            debug_frame.set_address_size(address_size);
            if arch == Arch::Aarch64 {
                debug_frame.set_vendor(gimli::Vendor::AArch64);
            }
            compiler.collect(&debug_frame, &bases)?;
        } else if go.is_none() {
            return Err(CompileError::NoUnwindInfo);
        }
        if let Some(go) = &go {
            compiler.collect_go(go)?;
        }
        let no_info = compiler.intern(UnwindRules::NO_INFO);
        let (starts, rule_of) = merge(compiler.spans, no_info);
        Ok(UnwindTable { arch, starts, rule_of, rules: compiler.rules, skipped_entries: compiler.skipped })
    }
}

/// One row of one FDE: 16 bytes, so a large binary's millions of rows stay cheap until merged.
#[derive(Clone, Copy)]
struct Span {
    start: u64,
    /// Bytes covered (an FDE covers less than 4 GiB).
    len: u32,
    /// Index into `Compiler::rules`.
    rule: u32,
}

struct Compiler {
    arch: Arch,
    registers: Registers,
    /// Every row of every FDE.
    spans: Vec<Span>,
    /// The distinct rules the spans use (a few hundred per file).
    rules: Vec<UnwindRules>,
    rule_index: HashMap<UnwindRules, u32>,
    skipped: usize,
}

impl Compiler {
    fn collect<'a, S: UnwindSection<Slice<'a>>>(&mut self, section: &S, bases: &BaseAddresses) -> Result<(), CompileError> {
        let mut context = Box::new(UnwindContext::new());
        let mut entries = section.entries(bases);
        loop {
            let partial = match entries.next() {
                Ok(Some(CieOrFde::Fde(partial))) => partial,
                Ok(Some(CieOrFde::Cie(_))) => continue,
                Ok(None) => return Ok(()),
                // A bad length field leaves no way to find the next entry.
                Err(_) => {
                    self.skipped += 1;
                    return Ok(());
                }
            };
            let Ok(fde) = partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset)) else {
                self.skipped += 1;
                continue;
            };
            let signal_frame = fde.is_signal_trampoline();
            let Ok(mut table) = fde.rows(section, bases, &mut context) else {
                self.skipped += 1;
                continue;
            };
            let first = self.spans.len();
            loop {
                match table.next_row() {
                    Ok(Some(row)) => {
                        let rule = self.intern(self.convert(row, section, signal_frame));
                        let len = u32::try_from(row.end_address().saturating_sub(row.start_address())).unwrap_or(u32::MAX);
                        self.spans.push(Span { start: row.start_address(), len, rule });
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // Keep nothing of an FDE we could not evaluate to the end.
                        self.spans.truncate(first);
                        self.skipped += 1;
                        break;
                    }
                }
            }
            if self.spans.len() > MAX_ROWS {
                return Err(CompileError::TooManyRows);
            }
        }
    }

    /// Adds the rows of a Go binary's functions, from their frame sizes.
    fn collect_go(&mut self, go: &GoTable) -> Result<(), CompileError> {
        let arch = self.arch;
        let mut spans = Vec::new();
        let malformed = go.frame_sizes(|start, end, size| spans.push((start, end, go_frames::rules(arch, size))));
        self.skipped += malformed;
        for (start, end, rules) in spans {
            let rule = self.intern(rules);
            let len = u32::try_from(end.saturating_sub(start)).unwrap_or(u32::MAX);
            self.spans.push(Span { start, len, rule });
            if self.spans.len() > MAX_ROWS {
                return Err(CompileError::TooManyRows);
            }
        }
        Ok(())
    }

    /// The index of `rules`, added if new.
    fn intern(&mut self, rules: UnwindRules) -> u32 {
        let next = self.rules.len() as u32;
        let index = *self.rule_index.entry(rules).or_insert(next);
        if index == next {
            self.rules.push(rules);
        }
        index
    }

    fn convert<'a, S: UnwindSection<Slice<'a>>>(&self, row: &UnwindTableRow<usize>, section: &S, signal_frame: bool) -> UnwindRules {
        let Registers { sp, fp, ra } = self.registers;
        let cfa = match row.cfa() {
            gimli::CfaRule::RegisterAndOffset { register, offset } => match i32::try_from(*offset) {
                Ok(offset) if *register == sp => CfaRule::SpOffset(offset),
                Ok(offset) if *register == fp => CfaRule::FpOffset(offset),
                _ => CfaRule::Unsupported,
            },
            gimli::CfaRule::Expression(expression) => match (self.arch, expression.get(section)) {
                (Arch::X86_64, Ok(expression)) => plt_rule(expression.0.slice()),
                _ => CfaRule::Unsupported,
            },
        };
        let ra = match row.register(ra) {
            Some(RegisterRule::Offset(offset)) => i32::try_from(offset).map_or(RaRule::Unsupported, RaRule::CfaOffset),
            Some(RegisterRule::Undefined) => RaRule::EndOfStack,
            // Not yet saved: on arm64 the return address is still in X30.
            None | Some(RegisterRule::SameValue) if self.arch == Arch::Aarch64 => RaRule::LinkRegister,
            _ => RaRule::Unsupported,
        };
        let fp = match row.register(fp) {
            Some(RegisterRule::Offset(offset)) => i32::try_from(offset).map_or(FpRule::Unsupported, FpRule::CfaOffset),
            None | Some(RegisterRule::SameValue | RegisterRule::Undefined) => FpRule::Unchanged,
            _ => FpRule::Unsupported,
        };
        let kind = if signal_frame { RowKind::SignalFrame } else { RowKind::Normal };
        UnwindRules { kind, cfa, ra, fp }
    }
}

/// Recognizes the CFA expression of x86-64 PLT stubs:
/// `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit<N>; DW_OP_ge;
/// DW_OP_lit3; DW_OP_shl; DW_OP_plus`, i.e. `RSP + 8 + ((RIP & 15) >= N) * 8`.
fn plt_rule(expression: &[u8]) -> CfaRule {
    const DW_OP_LIT0: u8 = 0x30;
    match expression {
        [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, lit, 0x2a, 0x33, 0x24, 0x22] if (DW_OP_LIT0..DW_OP_LIT0 + 32).contains(lit) => {
            CfaRule::PltX86 { threshold: lit - DW_OP_LIT0 }
        }
        _ => CfaRule::Unsupported,
    }
}

/// Turns per-FDE spans into one sorted table (start addresses and rule indices): gaps
/// between FDEs become no-info rows, and consecutive rows with the same rules merge.
fn merge(mut spans: Vec<Span>, no_info: u32) -> (Vec<u64>, Vec<u32>) {
    spans.sort_by_key(|span| span.start);
    let mut table = Rows::default();
    let mut covered_until = None;
    for Span { start, len, rule } in spans {
        let end = start.saturating_add(u64::from(len));
        if start >= end {
            continue;
        }
        if let Some(until) = covered_until.filter(|&until| start > until) {
            table.push(until, no_info);
        }
        table.push(start, rule);
        covered_until = Some(end);
    }
    if let Some(until) = covered_until {
        table.push(until, no_info);
    }
    table.starts.shrink_to_fit();
    table.rule_of.shrink_to_fit();
    (table.starts, table.rule_of)
}

#[derive(Default)]
struct Rows {
    starts: Vec<u64>,
    rule_of: Vec<u32>,
}

impl Rows {
    fn push(&mut self, start: u64, rule: u32) {
        match (self.starts.last(), self.rule_of.last_mut()) {
            // Overlapping entries (malformed input): the later start wins from there on.
            (Some(&last), Some(last_rule)) if last == start => *last_rule = rule,
            (Some(_), Some(&mut last_rule)) if last_rule == rule => {}
            _ => {
                self.starts.push(start);
                self.rule_of.push(rule);
            }
        }
        // Replacing a row's rule can make it equal to the one before it.
        let n = self.rule_of.len();
        if n >= 2 && self.rule_of[n - 2] == self.rule_of[n - 1] {
            self.starts.pop();
            self.rule_of.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_plt_expressions() {
        let lazy = [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(plt_rule(&lazy), CfaRule::PltX86 { threshold: 11 });
        assert_eq!(plt_rule(&lazy[..10]), CfaRule::Unsupported);
        assert_eq!(plt_rule(&[0x77, 0x10]), CfaRule::Unsupported);
    }

    #[test]
    fn merges_equal_rows_and_marks_gaps() {
        // Rules 0 and 1; 9 is "no info".
        let span = |start: u64, end: u64, rule| Span { start, len: (end - start) as u32, rule };
        let spans = vec![span(0x20, 0x30, 0), span(0x10, 0x18, 0), span(0x18, 0x20, 0), span(0x30, 0x40, 1)];
        assert_eq!(merge(spans, 9), (vec![0x10, 0x30, 0x40], vec![0, 1, 9]));
        let gap = merge(vec![span(0x10, 0x18, 0), span(0x20, 0x28, 0)], 9);
        assert_eq!(gap, (vec![0x10, 0x18, 0x20, 0x28], vec![0, 9, 0, 9]));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(UnwindTable::compile(b"").is_err());
        assert!(UnwindTable::compile(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]).is_err());
    }
}
