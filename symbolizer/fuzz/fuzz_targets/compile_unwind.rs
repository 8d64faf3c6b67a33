//! Any bytes given to the unwind table compiler give a table or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(table) = symbolizer::unwind::UnwindTable::compile(data) {
        let rows = table.rows();
        assert!(rows.windows(2).all(|w| w[0].start < w[1].start));
        if let Some(first) = rows.first() {
            let _ = table.lookup(first.start);
        }
    }
});
