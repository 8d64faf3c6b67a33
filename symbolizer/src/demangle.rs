//! Readable names for mangled Rust and C++ symbols.

use std::borrow::Cow;

/// Demangles a Rust (legacy or v0) or C++ (Itanium ABI) symbol; other names come back as
/// they are. Rust hashes (`::h0123…`) are dropped.
pub fn demangle(name: &str) -> Cow<'_, str> {
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return Cow::Owned(format!("{rust:#}"));
    }
    if name.starts_with("_Z") {
        if let Ok(symbol) = cpp_demangle::Symbol::new(name) {
            if let Ok(readable) = symbol.demangle(&cpp_demangle::DemangleOptions::default()) {
                return Cow::Owned(readable);
            }
        }
    }
    Cow::Borrowed(name)
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn rust_legacy_without_hash() {
        assert_eq!(demangle("_ZN4core3fmt5write17h0123456789abcdefE"), "core::fmt::write");
    }

    #[test]
    fn rust_v0() {
        assert_eq!(demangle("_RNvCs1234_7mycrate4spin"), "mycrate::spin");
    }

    #[test]
    fn cpp_with_templates() {
        assert_eq!(demangle("_ZN3foo3barIiEEvT_"), "void foo::bar<int>(int)");
    }

    #[test]
    fn c_names_unchanged() {
        assert_eq!(demangle("memcpy"), "memcpy");
        assert_eq!(demangle("_Zgarbage"), "_Zgarbage");
    }
}
