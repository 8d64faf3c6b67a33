//! Compiling `.eh_frame` / `.debug_frame` into an [`UnwindTable`] with gimli's CFI evaluator.

use gimli::{
    AArch64, BaseAddresses, CieOrFde, DebugFrame, EhFrame, EndianSlice, Register, RegisterRule, RunTimeEndian, UnwindContext, UnwindSection,
    UnwindTableRow, X86_64,
};
use object::{Object, ObjectSection};

use super::{Arch, CfaRule, FpRule, RaRule, RowKind, UnwindRow, UnwindTable};

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
        let mut compiler = Compiler { arch, registers, spans: Vec::new(), skipped: 0 };
        if let Some(section) = file.section_by_name(".eh_frame") {
            let data = section.uncompressed_data()?;
            let bases = bases.set_eh_frame(section.address());
            let mut eh_frame = EhFrame::new(&data, endian);
            eh_frame.set_address_size(address_size);
            if arch == Arch::Aarch64 {
                eh_frame.set_vendor(gimli::Vendor::AArch64);
            }
            compiler.collect(&eh_frame, &bases)?;
        } else if let Some(section) = file.section_by_name(".debug_frame") {
            let data = section.uncompressed_data()?;
            let mut debug_frame = DebugFrame::new(&data, endian);
            debug_frame.set_address_size(address_size);
            if arch == Arch::Aarch64 {
                debug_frame.set_vendor(gimli::Vendor::AArch64);
            }
            compiler.collect(&debug_frame, &bases)?;
        } else {
            return Err(CompileError::NoUnwindInfo);
        }
        Ok(UnwindTable { arch, rows: merge(compiler.spans), skipped_entries: compiler.skipped })
    }
}

struct Compiler {
    arch: Arch,
    registers: Registers,
    /// (start, end, rules) for every row of every FDE.
    spans: Vec<(u64, u64, UnwindRow)>,
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
                        let rules = self.convert(row, section, signal_frame);
                        self.spans.push((row.start_address(), row.end_address(), rules));
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

    fn convert<'a, S: UnwindSection<Slice<'a>>>(&self, row: &UnwindTableRow<usize>, section: &S, signal_frame: bool) -> UnwindRow {
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
        UnwindRow { start: row.start_address(), kind, cfa, ra, fp }
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

/// Turns per-FDE spans into one sorted table: gaps between FDEs become no-info rows, and
/// consecutive rows with the same rules merge.
fn merge(mut spans: Vec<(u64, u64, UnwindRow)>) -> Vec<UnwindRow> {
    spans.sort_by_key(|(start, ..)| *start);
    let mut rows: Vec<UnwindRow> = Vec::with_capacity(spans.len() / 2);
    let mut covered_until = None;
    for (start, end, row) in spans {
        if start >= end {
            continue;
        }
        if covered_until.is_some_and(|until| start > until) {
            push(&mut rows, UnwindRow::no_info(covered_until.unwrap_or(start)));
        }
        push(&mut rows, row);
        covered_until = Some(end);
    }
    if let Some(until) = covered_until {
        push(&mut rows, UnwindRow::no_info(until));
    }
    rows.shrink_to_fit();
    rows
}

fn push(rows: &mut Vec<UnwindRow>, row: UnwindRow) {
    match rows.last_mut() {
        // Overlapping entries (malformed input): the later start wins from there on.
        Some(last) if last.start == row.start => *last = row,
        Some(last) if last.same_rules(&row) => {}
        _ => rows.push(row),
    }
    // Replacing a row can make it equal to the one before it.
    if rows.len() >= 2 && rows[rows.len() - 2].same_rules(&rows[rows.len() - 1]) {
        rows.pop();
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
        let row = |start, offset| UnwindRow { start, kind: RowKind::Normal, cfa: CfaRule::SpOffset(offset), ra: RaRule::CfaOffset(-8), fp: FpRule::Unchanged };
        let spans = vec![(0x20, 0x30, row(0x20, 8)), (0x10, 0x18, row(0x10, 8)), (0x18, 0x20, row(0x18, 8)), (0x30, 0x40, row(0x30, 16))];
        let rows = merge(spans);
        assert_eq!(rows, [row(0x10, 8), row(0x30, 16), UnwindRow::no_info(0x40)]);
        let gap = merge(vec![(0x10, 0x18, row(0x10, 8)), (0x20, 0x28, row(0x20, 8))]);
        assert_eq!(gap, [row(0x10, 8), UnwindRow::no_info(0x18), row(0x20, 8), UnwindRow::no_info(0x28)]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(UnwindTable::compile(b"").is_err());
        assert!(UnwindTable::compile(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]).is_err());
    }
}
