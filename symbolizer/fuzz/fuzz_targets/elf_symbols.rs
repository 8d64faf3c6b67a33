//! Any bytes given to the ELF symbol reader give symbols or an error, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(elf) = symbolizer::elf::ElfSymbols::parse(data) {
        for segment in elf.segments() {
            let _ = elf.lookup_file_offset(segment.file_offset);
        }
    }
});
