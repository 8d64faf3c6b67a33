//! The layouts of CPython's structures that oxeye reads, per version: a table for 3.8–3.12
//! (measured with `offsetof` against each version's own headers; `offsets.c` beside this file
//! checks them again), and 3.13's `_Py_DebugOffsets`, which the runtime carries itself at
//! the start of `_PyRuntime`.
//!
//! Layouts are the same on x86-64 and arm64 (both LP64, with the same alignment rules).

use agent_common::python::{frames, PythonLayout, CODE_WINDOW, NO_OFFSET};

/// A CPython version, `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// 3.
    pub major: u8,
    /// 8 to 13.
    pub minor: u8,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// How a version lays out `str` objects (PEP 393): the character data follows the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringLayout {
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters start.
    pub ascii_size: u16,
    /// `sizeof(PyCompactUnicodeObject)`: where a compact non-ASCII string's characters start.
    pub compact_size: u16,
    /// `PyASCIIObject.length` (characters).
    pub length: u16,
    /// `PyASCIIObject.state` (a bit field: interned 2 bits, kind 3, compact 1, ascii 1; from
    /// 3.12 interned takes 2 bits too but `statically_allocated` follows ascii).
    pub state: u16,
}

/// Everything oxeye needs to know about one version's structures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionLayout {
    /// The version.
    pub version: Version,
    /// What the BPF walker reads. `pthread_tid` is filled in per process.
    pub walker: PythonLayout,
    /// `_PyRuntime.main_thread`: the main thread's `pthread_t`.
    pub runtime_main_thread: u32,
    /// `str` objects.
    pub strings: StringLayout,
    /// `PyBytesObject.ob_sval`: where a `bytes` object's data starts (`ob_size` is at 16).
    pub bytes_data: u16,
}

const STRINGS_TO_311: StringLayout = StringLayout { ascii_size: 48, compact_size: 72, length: 16, state: 32 };
const STRINGS_FROM_312: StringLayout = StringLayout { ascii_size: 40, compact_size: 56, length: 16, state: 32 };

const fn frame_objects(frame_instruction: u16) -> PythonLayout {
    PythonLayout {
        runtime_interpreter: 40,
        interpreter_threads: 8,
        frames: frames::FRAME_OBJECTS,
        thread_next: 8,
        thread_id: 176,
        pthread_tid: NO_OFFSET,
        thread_frame: 24,
        cframe_current: NO_OFFSET,
        frame_code: 32,
        frame_previous: 24,
        frame_instruction,
        frame_owner: NO_OFFSET,
        frame_is_entry: NO_OFFSET,
        code_bytecode: 0,
        code_filename: 104,
        code_name: 112,
        code_linetable: 120,
        code_firstlineno: 40,
        frame_bytes: frame_instruction + 8,
        reserved: [0; 3],
    }
}

/// The layout of a version oxeye has a table for (3.8 to 3.12); 3.13 and later describe
/// themselves ([`from_debug_offsets`]).
pub fn table(version: Version) -> Option<VersionLayout> {
    let (walker, runtime_main_thread, strings) = match (version.major, version.minor) {
        // f_lasti counts bytes in 3.8 and 3.9, code units in 3.10.
        (3, 8 | 9) => (frame_objects(104), 72, STRINGS_TO_311),
        (3, 10) => (frame_objects(96), 72, STRINGS_TO_311),
        (3, 11) => (
            PythonLayout {
                runtime_interpreter: 48,
                interpreter_threads: 16,
                frames: frames::INTERPRETER_FRAMES_311,
                thread_next: 8,
                thread_id: 160,
                pthread_tid: NO_OFFSET,
                thread_frame: 56,
                cframe_current: 8,
                frame_code: 32,
                frame_previous: 48,
                frame_instruction: 56,
                frame_owner: 69,
                frame_is_entry: 68,
                code_bytecode: 184,
                code_filename: 112,
                code_name: 128,
                code_linetable: 136,
                code_firstlineno: 72,
                frame_bytes: 72,
                reserved: [0; 3],
            },
            80,
            STRINGS_TO_311,
        ),
        (3, 12) => (
            PythonLayout {
                runtime_interpreter: 48,
                interpreter_threads: 72,
                frames: frames::INTERPRETER_FRAMES_312,
                thread_next: 8,
                thread_id: 144,
                pthread_tid: NO_OFFSET,
                thread_frame: 56,
                cframe_current: 0,
                frame_code: 0,
                frame_previous: 8,
                frame_instruction: 56,
                frame_owner: 70,
                frame_is_entry: NO_OFFSET,
                code_bytecode: 192,
                code_filename: 112,
                code_name: 128,
                code_linetable: 136,
                code_firstlineno: 68,
                frame_bytes: 72,
                reserved: [0; 3],
            },
            64,
            STRINGS_FROM_312,
        ),
        _ => return None,
    };
    let layout = VersionLayout { version, walker, runtime_main_thread, strings, bytes_data: 32 };
    layout.fits().then_some(layout)
}

/// `_Py_DebugOffsets.cookie`.
pub const DEBUG_OFFSETS_COOKIE: &[u8; 8] = b"xdebugpy";

/// The layout 3.13 gives in its `_Py_DebugOffsets` (`bytes`: the start of `_PyRuntime`, as
/// the file initialises it). `None` if the cookie is missing, the version is not 3.13 (the
/// struct changes between minor versions), or an offset does not fit the walker.
pub fn from_debug_offsets(bytes: &[u8]) -> Option<VersionLayout> {
    if bytes.get(..8)? != DEBUG_OFFSETS_COOKIE {
        return None;
    }
    let field = |index: usize| -> Option<u64> { Some(u64::from_le_bytes(bytes.get(8 * index..8 * index + 8)?.try_into().ok()?)) };
    let hex = field(1)?;
    let version = Version { major: (hex >> 24) as u8, minor: (hex >> 16) as u8 };
    // Free-threaded builds lay frames and threads out differently.
    if version != (Version { major: 3, minor: 13 }) || field(2)? != 0 {
        return None;
    }
    let small = |index: usize| -> Option<u16> { u16::try_from(field(index)?).ok().filter(|&v| v != NO_OFFSET) };
    let large = |index: usize| -> Option<u32> { u32::try_from(field(index)?).ok() };
    // Field indices in 3.13's struct, in u64 words from its start: cookie 0, version 1,
    // free_threaded 2, runtime_state 3..6, interpreter_state 6..19, thread_state 19..28,
    // interpreter_frame 28..34, code_object 34..44, pyobject 44..46, type_object 46..50,
    // tuple 50..53, list 53..56, dict 56..59, float 59..61, long 61..64, bytes 64..67,
    // unicode 67..71 (size, state, length, asciiobject_size).
    let walker = PythonLayout {
        runtime_interpreter: large(5)?,
        interpreter_threads: large(9)?,
        frames: frames::INTERPRETER_FRAMES_312,
        thread_next: small(21)?,
        thread_id: small(25)?,
        pthread_tid: NO_OFFSET,
        thread_frame: small(23)?,
        cframe_current: NO_OFFSET,
        frame_code: small(30)?,
        frame_previous: small(29)?,
        frame_instruction: small(31)?,
        frame_owner: small(33)?,
        frame_is_entry: NO_OFFSET,
        code_bytecode: small(43)?,
        code_filename: small(35)?,
        code_name: small(37)?,
        code_linetable: small(38)?,
        code_firstlineno: small(39)?,
        frame_bytes: 0,
        reserved: [0; 3],
    };
    let frame_end = [walker.frame_code, walker.frame_previous, walker.frame_instruction].into_iter().max()? + 8;
    let walker = PythonLayout { frame_bytes: frame_end.max(walker.frame_owner + 1).next_multiple_of(8), ..walker };
    let strings = StringLayout { ascii_size: small(70)?, compact_size: small(70)? + 16, length: small(69)?, state: small(68)? };
    let layout = VersionLayout { version, walker, runtime_main_thread: 0, strings, bytes_data: small(66)? };
    layout.fits().then_some(layout)
}

impl VersionLayout {
    /// Whether the BPF walker can use this layout: every field inside the windows it reads.
    fn fits(&self) -> bool {
        let w = &self.walker;
        let code_fields = [w.code_filename, w.code_name, w.code_linetable];
        let frame_fields = [w.frame_code, w.frame_previous, w.frame_instruction];
        code_fields.iter().all(|&offset| offset % 8 == 0 && offset as usize + 8 <= CODE_WINDOW)
            && w.code_firstlineno as usize + 4 <= CODE_WINDOW
            && frame_fields.iter().all(|&offset| offset % 8 == 0 && offset + 8 <= w.frame_bytes || offset == w.frame_instruction && offset + 4 <= w.frame_bytes)
            && w.frame_bytes <= 128
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, process::Command};

    use super::*;

    /// The offsets `offsets.c` prints for one installed version, by field name.
    fn measured(prefix: &str, minor: u8) -> Option<HashMap<String, u64>> {
        let include = format!("{prefix}/include/python3.{minor}");
        std::fs::metadata(&include).ok()?;
        let binary = std::env::temp_dir().join(format!("oxeye-offsets-3.{minor}-{}", std::process::id()));
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/src/python/offsets.c");
        let status = Command::new("gcc").args(["-w", "-I", &include, "-I", &format!("{include}/internal"), source, "-o"]).arg(&binary).status().ok()?;
        assert!(status.success(), "gcc failed on offsets.c for 3.{minor}");
        let output = Command::new(&binary).output().expect("run offsets");
        let _ = std::fs::remove_file(&binary);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        Some(text.lines().filter_map(|line| line.split_once('=')).filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?))).collect())
    }

    /// The table agrees with `offsetof` against each installed version's own headers.
    #[test]
    fn table_matches_the_headers_of_installed_versions() {
        let home = std::env::var("HOME").unwrap_or_default();
        let mut checked = 0;
        for (minor, patch) in [(8, "3.8.18"), (9, "3.9.18"), (10, "3.10.13"), (11, "3.11.7"), (12, "3.12.1")] {
            let Some(m) = measured(&format!("{home}/.pyenv/versions/{patch}"), minor) else { continue };
            let layout = table(Version { major: 3, minor }).expect("a table entry");
            let w = layout.walker;
            let thread_id = if minor >= 11 { "tstate_native_thread_id" } else { "tstate_thread_id" };
            let pairs: [(&str, u64); 12] = [
                ("runtime_interpreters_main", w.runtime_interpreter as u64),
                ("interp_threads_head", w.interpreter_threads as u64),
                ("tstate_next", w.thread_next as u64),
                (thread_id, w.thread_id as u64),
                ("tstate_frame", w.thread_frame as u64),
                ("frame_code", w.frame_code as u64),
                ("frame_previous", w.frame_previous as u64),
                ("frame_instr", w.frame_instruction as u64),
                ("code_filename", w.code_filename as u64),
                ("code_linetable", w.code_linetable as u64),
                ("code_firstlineno", w.code_firstlineno as u64),
                ("runtime_main_thread", layout.runtime_main_thread as u64),
            ];
            for (name, ours) in pairs {
                assert_eq!(m.get(name).copied(), Some(ours), "3.{minor}: {name}");
            }
            let name = if minor >= 11 { "code_qualname" } else { "code_name" };
            assert_eq!(m.get(name).copied(), Some(w.code_name as u64), "3.{minor}: {name}");
            if minor >= 11 {
                assert_eq!(m.get("frame_owner").copied(), Some(w.frame_owner as u64), "3.{minor}: owner");
                assert_eq!(m.get("code_adaptive").copied(), Some(w.code_bytecode as u64), "3.{minor}: bytecode");
                assert_eq!(m.get("cframe_current_frame").copied(), Some(w.cframe_current as u64), "3.{minor}: cframe");
            }
            if minor == 11 {
                assert_eq!(m.get("frame_is_entry").copied(), Some(w.frame_is_entry as u64), "3.11: is_entry");
            }
            assert_eq!(m.get("unicode_ascii_size").copied(), Some(layout.strings.ascii_size as u64), "3.{minor}: str");
            checked += 1;
        }
        assert!(checked > 0, "no CPython headers under ~/.pyenv/versions");
    }
}
