//! Any bytes given to the unwind table compiler give a table or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(table) = symbolizer::unwind::UnwindTable::compile(data) {
        assert!(table.rows().zip(table.rows().skip(1)).all(|(a, b)| a.start < b.start));
        if let Some(first) = table.rows().next() {
            assert_eq!(table.lookup(first.start), Some(first));
        }
    }
});
