//! Unwind rules compiled from a stripped Go binary's pcsp tables against the `.debug_frame`
//! the Go linker writes into the unstripped build of the same code (which gimli evaluates):
//! at every row of every FDE, the same CFA, and on x86-64 the return address at CFA - 8.
//! Each installed toolchain, for x86-64 and arm64, plain and PIE.

mod go_common;

use std::path::Path;

use gimli::{BaseAddresses, CfaRule as DwarfCfa, DebugFrame, LittleEndian, UnwindContext, UnwindSection};
use go_common::{build_for, same_code, toolchains, Variant};
use object::{Object, ObjectSection};
use symbolizer::unwind::{CfaRule, RaRule, RowKind, UnwindTable};

/// What one comparison found.
#[derive(Default, Debug)]
struct Score {
    rows: usize,
    agree: usize,
    /// Rows our table leaves without information (SPWRITE and top-frame functions).
    no_info: usize,
    first_disagreements: Vec<String>,
}

/// Evaluates every FDE row of `plain`'s `.debug_frame` and looks the same address up in
/// `table`.
fn compare(plain: &Path, table: &UnwindTable, sp_register: u16) -> Score {
    let data = std::fs::read(plain).expect("read the plain build");
    let file = object::File::parse(&*data).expect("parse ELF");
    let section = file.section_by_name(".debug_frame").expect("the plain build has .debug_frame");
    let bytes = section.uncompressed_data().expect(".debug_frame bytes");
    let mut debug_frame = DebugFrame::new(&bytes, LittleEndian);
    debug_frame.set_address_size(8);
    let bases = BaseAddresses::default();
    let mut context = Box::new(UnwindContext::new());
    let mut score = Score::default();
    let mut entries = debug_frame.entries(&bases);
    while let Some(entry) = entries.next().expect("a well-formed .debug_frame") {
        let gimli::CieOrFde::Fde(partial) = entry else { continue };
        let fde = partial.parse(|s, b, o| s.cie_from_offset(b, o)).expect("FDE");
        let mut rows = fde.rows(&debug_frame, &bases, &mut context).expect("FDE rows");
        while let Some(row) = rows.next_row().expect("row") {
            let DwarfCfa::RegisterAndOffset { register, offset } = *row.cfa() else { continue };
            assert_eq!(register.0, sp_register, "Go's CFA is always SP-based");
            score.rows += 1;
            let ours = table.lookup(row.start_address());
            match ours {
                Some(r) if r.kind == RowKind::NoInfo || r.ra == RaRule::EndOfStack => score.no_info += 1,
                Some(r) if r.cfa == CfaRule::SpOffset(offset as i32) && (sp_register != 7 || r.ra == RaRule::CfaOffset(-8)) => score.agree += 1,
                _ => {
                    if score.first_disagreements.len() < 5 {
                        score.first_disagreements.push(format!("{:#x}: DWARF CFA = SP + {offset}, ours {ours:?}", row.start_address()));
                    }
                }
            }
        }
    }
    score
}

fn check(goarch: &str, sp_register: u16, plain: Variant, stripped: Variant) {
    for toolchain in toolchains() {
        let plain_path = build_for(&toolchain, "chain", plain, Some(goarch));
        let stripped_path = build_for(&toolchain, "chain", stripped, Some(goarch));
        same_code(&plain_path, &stripped_path);
        let data = std::fs::read(&stripped_path).expect("read the stripped build");
        assert!(object::File::parse(&*data).expect("ELF").section_by_name(".debug_frame").is_none());
        let table = UnwindTable::compile(&data).unwrap_or_else(|e| panic!("{} {goarch}: no table from pcsp: {e}", toolchain.version));
        let score = compare(&plain_path, &table, sp_register);
        eprintln!("{} {goarch} {plain:?}: {} rows, {} agree, {} without info", toolchain.version, score.rows, score.agree, score.no_info);
        assert!(score.rows > 1000, "{score:?}");
        assert_eq!(score.agree + score.no_info, score.rows, "{} {goarch}: {:?}", toolchain.version, score.first_disagreements);
        // Only the runtime's stack-switching and outermost functions have no rules.
        assert!(score.no_info * 50 < score.rows, "{} {goarch}: {score:?}", toolchain.version);
    }
}

#[test]
fn x86_64_pcsp_rules_match_debug_frame() {
    check("amd64", 7, Variant::Plain, Variant::Stripped);
    check("amd64", 7, Variant::Pie, Variant::PieStripped);
}

#[test]
fn arm64_pcsp_rules_match_debug_frame() {
    check("arm64", 31, Variant::Plain, Variant::Stripped);
}
