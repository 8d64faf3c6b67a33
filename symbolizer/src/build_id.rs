//! GNU build IDs: the identity a debugger, a symbol server or a viewer looks a file up by.

use std::fmt;

/// A GNU build ID (the `NT_GNU_BUILD_ID` note), usually 20 bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BuildId(Box<[u8]>);

impl BuildId {
    /// Wraps raw build-ID bytes; `None` for an empty note.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        (!bytes.is_empty()).then(|| BuildId(bytes.into()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex, as `readelf -n` and `file` print it.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_zero_padded() {
        let id = BuildId::new(&[0x0a, 0xff, 0x00]).unwrap();
        assert_eq!(id.to_hex(), "0aff00");
        assert!(BuildId::new(&[]).is_none());
    }
}
