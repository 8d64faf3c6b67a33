//! The kernel's vDSO: a small ELF image the kernel maps into every process (`[vdso]`), the
//! same one in all of them. oxeye reads its own copy once, for symbols and unwind tables.

use std::sync::OnceLock;

/// This process's vDSO image, if it has one.
pub fn image() -> Option<&'static [u8]> {
    static IMAGE: OnceLock<Option<&'static [u8]>> = OnceLock::new();
    *IMAGE.get_or_init(|| {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let line = maps.lines().find(|line| line.ends_with("[vdso]"))?;
        let (start, end) = line.split(' ').next()?.split_once('-')?;
        let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        // SAFETY: the vDSO stays mapped, readable and unchanged for the whole life of the process.
        Some(unsafe { std::slice::from_raw_parts(start as *const u8, end.checked_sub(start)?) })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_vdso_is_an_elf_image_with_symbols() {
        let image = super::image().expect("Linux maps a vDSO into every process");
        assert_eq!(&image[..4], b"\x7fELF");
        let symbols = symbolizer::elf::ElfSymbols::parse(image).expect("the vDSO parses");
        // clock_gettime, gettimeofday, time, getcpu, … under their __vdso_ and plain names.
        assert!(symbols.symbols().len() >= 4, "only {} symbols in the vDSO", symbols.symbols().len());
    }
}
