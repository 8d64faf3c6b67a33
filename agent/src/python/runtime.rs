//! Recognising a CPython runtime in an ELF file: `libpython3.X.so`, or an interpreter linked
//! statically (Debian's `/usr/bin/python3.11`, which has only `.dynsym`). Everything comes
//! from the file: the symbols oxeye needs, the version, and on 3.13+ the runtime's own
//! `_Py_DebugOffsets`, which the file's `.data` initialises.

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

use super::versions::{self, Version, VersionLayout, DEBUG_OFFSETS_COOKIE};

/// Bytes of `_PyRuntime`'s start read for the debug offsets (3.13's struct is 73 words).
const DEBUG_OFFSETS_BYTES: usize = 1024;

/// What a file that holds a CPython runtime says about it.
#[derive(Debug, Clone)]
pub struct RuntimeFile {
    /// The version, when the file says it (`Py_Version`, the debug offsets, or its name).
    pub version: Option<Version>,
    /// The layout, for a version oxeye can walk; `None` means native frames only.
    pub layout: Option<VersionLayout>,
    /// Virtual address (in the file) of `_PyRuntime` (none before 3.7).
    pub runtime: Option<u64>,
    /// Virtual address (in the file) of `PyCode_Type`.
    pub code_type: u64,
    /// The file's loadable segments: (file offset, virtual address), to place the file in a
    /// process from one of its mappings.
    pub segments: Vec<(u64, u64)>,
}

impl RuntimeFile {
    /// The load bias of the file in a process, from one mapping of it (`start` mapped at
    /// `file_offset`).
    pub fn bias(&self, start: u64, file_offset: u64) -> Option<u64> {
        let &(offset, vaddr) = self.segments.iter().filter(|(offset, _)| *offset <= file_offset).max_by_key(|(offset, _)| *offset)?;
        Some(start.wrapping_sub(vaddr.wrapping_add(file_offset - offset)))
    }
}

/// Whether a mapped file's name is one a CPython runtime lives in: `libpython3.X….so…` or
/// `python3…`. Only these files are opened.
pub fn is_candidate(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("libpython") || name.starts_with("python")
}

/// Reads what `data` (a whole ELF file named `path`) says about its CPython runtime; `None`
/// if it holds none (no `PyCode_Type`, which every CPython exports).
pub fn inspect(path: &str, data: &[u8]) -> Option<RuntimeFile> {
    let file = object::File::parse(data).ok()?;
    let mut runtime = None;
    let mut code_type = None;
    let mut py_version = None;
    for symbol in file.dynamic_symbols().chain(file.symbols()).filter(|symbol| symbol.is_definition()) {
        match symbol.name() {
            Ok("_PyRuntime") => runtime = runtime.or(Some(symbol.address())),
            Ok("PyCode_Type") => code_type = code_type.or(Some(symbol.address())),
            Ok("Py_Version") => py_version = py_version.or(Some(symbol.address())),
            _ => {}
        }
    }
    let code_type = code_type?;
    let segments = file.segments().map(|segment| (segment.file_range().0, segment.address())).collect();
    let initial = |address: u64, len: usize| initial_bytes(&file, address, len);
    let debug_offsets = runtime.and_then(|runtime| initial(runtime, DEBUG_OFFSETS_BYTES)).filter(|bytes| bytes.starts_with(DEBUG_OFFSETS_COOKIE));
    let version = match (&debug_offsets, py_version.and_then(|address| initial(address, 4))) {
        (Some(bytes), _) => bytes.get(8..16).map(|hex| hex_version(u64::from_le_bytes(hex.try_into().unwrap_or_default()))),
        (None, Some(bytes)) => bytes.get(..4).map(|hex| hex_version(u32::from_le_bytes(hex.try_into().unwrap_or_default()) as u64)),
        (None, None) => version_from_name(path),
    };
    let layout = match (&debug_offsets, version) {
        _ if runtime.is_none() => None,
        (Some(bytes), _) => versions::from_debug_offsets(bytes),
        (None, Some(version)) => versions::table(version),
        (None, None) => None,
    };
    Some(RuntimeFile { version, layout, runtime, code_type, segments })
}

/// The bytes the file initialises at virtual address `address` (in `.data`, `.rodata`…);
/// `None` for `.bss` or out of range.
fn initial_bytes<'a>(file: &object::File<'a>, address: u64, len: usize) -> Option<&'a [u8]> {
    let section = file.sections().find(|s| s.address() <= address && address < s.address() + s.size())?;
    let data = section.data().ok()?;
    let start = (address - section.address()) as usize;
    data.get(start..start + len.min(data.len().saturating_sub(start))).filter(|bytes| !bytes.is_empty())
}

/// `PY_VERSION_HEX` → major.minor.
fn hex_version(hex: u64) -> Version {
    Version { major: (hex >> 24) as u8, minor: (hex >> 16) as u8 }
}

/// `libpython3.9.so.1.0`, `python3.10`, `libpython3.8d.so` → the version in the name.
fn version_from_name(path: &str) -> Option<Version> {
    let name = path.rsplit('/').next()?;
    let rest = name.strip_prefix("lib").unwrap_or(name).strip_prefix("python")?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some(Version { major: major.parse().ok()?, minor: minor.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names() {
        let v = |major, minor| Some(Version { major, minor });
        assert_eq!(version_from_name("/usr/lib/libpython3.9.so.1.0"), v(3, 9));
        assert_eq!(version_from_name("/x/libpython3.10d.so"), v(3, 10));
        assert_eq!(version_from_name("/usr/bin/python3.8"), v(3, 8));
        assert_eq!(version_from_name("/usr/bin/python2.7"), v(2, 7));
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert_eq!(version_from_name("/usr/bin/pythonista"), None);
    }

    /// Every interpreter on this machine: the file gives its own version and a layout for the
    /// ones oxeye knows.
    #[test]
    fn installed_interpreters_are_recognised() {
        let home = std::env::var("HOME").unwrap_or_default();
        let mut seen = 0;
        for (path, minor, known) in [
            ("/usr/bin/python3.11".to_owned(), 11, true),
            (format!("{home}/.pyenv/versions/2.7.18/lib/libpython2.7.so.1.0"), 7, false),
            (format!("{home}/.pyenv/versions/3.8.18/lib/libpython3.8.so.1.0"), 8, true),
            (format!("{home}/.pyenv/versions/3.10.13/lib/libpython3.10.so.1.0"), 10, true),
            (format!("{home}/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0"), 12, true),
            (format!("{home}/.pyenv/versions/3.13.0/lib/libpython3.13.so.1.0"), 13, true),
            (format!("{home}/.pyenv/versions/3.7.16/lib/libpython3.7m.so.1.0"), 7, false),
        ] {
            let Ok(data) = std::fs::read(&path) else { continue };
            seen += 1;
            let runtime = inspect(&path, &data).unwrap_or_else(|| panic!("{path}: no runtime found"));
            assert_eq!(runtime.version.map(|v| v.minor), Some(minor), "{path}");
            assert_eq!(runtime.layout.is_some(), known, "{path}: {:?}", runtime.layout);
            assert!(runtime.code_type != 0 && runtime.runtime.is_some() == (minor != 7 || path.contains("3.7")), "{path}");
        }
        assert!(seen > 0, "no CPython found on this machine");
    }
}
