//! Turning a compiled [`UnwindTable`] into the rows and rules the BPF unwinder reads.

use agent_common::unwind::{cfa, fp, ra, row, UnwindEntry, UnwindRule, MAX_FILE_ROWS, NO_INFO_RULE};
use symbolizer::unwind::{CfaRule, FpRule, RaRule, RowKind, UnwindRules, UnwindTable};

/// A file's rows, with addresses relative to `base` (the first row's address).
#[derive(Debug)]
pub struct EncodedTable {
    /// File virtual address that row `pc` 0 stands for.
    pub base: u64,
    /// The rows, sorted by `pc`.
    pub entries: Vec<UnwindEntry>,
}

/// Encodes `table`, turning each row's rules into a rule index with `intern`. Rows past 4 GiB
/// from the first, or past [`MAX_FILE_ROWS`], are cut and the table ends with a no-info row
/// (the unwinder then uses frame pointers there).
pub fn encode(table: &UnwindTable, mut intern: impl FnMut(UnwindRule) -> u32) -> EncodedTable {
    let base = table.entries().next().map_or(0, |(start, _)| start);
    // The table's own few hundred rules, each interned once.
    let rules: Vec<u32> = table.rules().iter().map(|rules| intern(rule(rules))).collect();
    let mut entries: Vec<UnwindEntry> = Vec::with_capacity(table.len().min(MAX_FILE_ROWS as usize));
    for (start, index) in table.entries() {
        let Ok(pc) = u32::try_from(start - base) else { break };
        if entries.len() + 1 >= MAX_FILE_ROWS as usize {
            entries.push(UnwindEntry { pc, rule: NO_INFO_RULE });
            break;
        }
        entries.push(UnwindEntry { pc, rule: rules[index as usize] });
    }
    EncodedTable { base, entries }
}

/// The kernel's form of a row's rules.
pub fn rule(source: &UnwindRules) -> UnwindRule {
    let row_kind = match source.kind {
        RowKind::Normal => row::NORMAL,
        RowKind::SignalFrame => row::SIGNAL_FRAME,
        RowKind::NoInfo => row::NO_INFO,
    };
    let (cfa_kind, cfa_offset) = match source.cfa {
        CfaRule::SpOffset(offset) => (cfa::SP, offset),
        CfaRule::FpOffset(offset) => (cfa::FP, offset),
        CfaRule::PltX86 { threshold } => (cfa::PLT_X86, i32::from(threshold)),
        CfaRule::Unsupported => (cfa::UNSUPPORTED, 0),
    };
    let (ra_kind, ra_offset) = match source.ra {
        RaRule::CfaOffset(offset) => i16::try_from(offset).map_or((ra::UNSUPPORTED, 0), |offset| (ra::CFA_OFFSET, offset)),
        RaRule::LinkRegister => (ra::LINK_REGISTER, 0),
        RaRule::EndOfStack => (ra::END_OF_STACK, 0),
        RaRule::Unsupported => (ra::UNSUPPORTED, 0),
    };
    let (fp_kind, fp_offset) = match source.fp {
        FpRule::Unchanged => (fp::UNCHANGED, 0),
        FpRule::CfaOffset(offset) => i16::try_from(offset).map_or((fp::UNKNOWN, 0), |offset| (fp::CFA_OFFSET, offset)),
        FpRule::Unsupported => (fp::UNKNOWN, 0),
    };
    UnwindRule { cfa_offset, ra_offset, fp_offset, cfa_kind, ra_kind, fp_kind, row_kind, reserved: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_this_binary_relative_to_its_first_row() {
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let table = UnwindTable::compile(&data).unwrap();
        let mut rules: Vec<UnwindRule> = Vec::new();
        let encoded = encode(&table, |rule| match rules.iter().position(|r| *r == rule) {
            Some(index) => index as u32,
            None => {
                rules.push(rule);
                rules.len() as u32 - 1
            }
        });
        assert_eq!(encoded.entries.len(), table.len());
        assert_eq!(encoded.base, table.row(0).start);
        assert!(encoded.entries.windows(2).all(|pair| pair[0].pc < pair[1].pc));
        // Thousands of rows share a few hundred rules.
        assert!(rules.len() * 20 < encoded.entries.len(), "{} rules for {} rows", rules.len(), encoded.entries.len());
        // x86-64 and arm64 code mostly has CFA = SP + n with the return address saved.
        let plain = encoded.entries.iter().filter(|e| matches!(rules[e.rule as usize], r if r.cfa_kind == cfa::SP && r.row_kind == row::NORMAL)).count();
        assert!(plain * 2 > encoded.entries.len(), "{plain} of {}", encoded.entries.len());
    }
}
