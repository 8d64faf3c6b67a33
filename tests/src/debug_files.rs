//! Binaries split the way distributions split them: a stripped binary to run, and its
//! symbols and DWARF in a separate debug file under a `.build-id` tree.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::run_ok;

/// A stripped copy of a binary and where its debug file is.
#[derive(Debug)]
pub struct SplitBinary {
    /// The stripped binary, under the same file name.
    pub stripped: PathBuf,
    /// A directory holding `.build-id/xx/rest.debug` for it (`--debug-file-directory`).
    pub debug_directory: PathBuf,
    /// The debug file itself.
    pub debug_file: PathBuf,
    /// Its GNU build ID, in hex.
    pub build_id: String,
}

/// The GNU build ID `readelf -n` shows for `binary`.
pub fn build_id(binary: &Path) -> String {
    let notes = run_ok(Command::new("readelf").arg("-n").arg(binary), "readelf");
    let line = notes.lines().find_map(|l| l.trim().strip_prefix("Build ID: ")).unwrap_or_else(|| panic!("{} has no build ID", binary.display()));
    line.trim().to_owned()
}

/// Splits `binary` (built with `-g`) into `dir/bin/NAME` (stripped) and
/// `dir/debug/.build-id/xx/rest.debug`.
pub fn split(binary: &Path, dir: &Path) -> SplitBinary {
    let _ = fs::remove_dir_all(dir);
    let build_id = build_id(binary);
    let debug_directory = dir.join("debug");
    let debug_file = debug_directory.join(".build-id").join(&build_id[..2]).join(format!("{}.debug", &build_id[2..]));
    fs::create_dir_all(debug_file.parent().expect("a parent")).expect("create the debug directory");
    fs::create_dir_all(dir.join("bin")).expect("create the bin directory");
    let stripped = dir.join("bin").join(binary.file_name().expect("a file name"));
    run_ok(Command::new("objcopy").arg("--only-keep-debug").arg(binary).arg(&debug_file), "objcopy --only-keep-debug");
    run_ok(Command::new("objcopy").arg("--strip-all").arg(binary).arg(&stripped), "objcopy --strip-all");
    let symbols = run_ok(Command::new("readelf").arg("-S").arg(&stripped), "readelf -S");
    assert!(!symbols.contains(".symtab") && !symbols.contains(".debug_info"), "{} is not stripped", stripped.display());
    SplitBinary { stripped, debug_directory, debug_file, build_id }
}
