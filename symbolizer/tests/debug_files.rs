//! Separate debug files found the ways distributions ship them, for real binaries built here
//! with gcc and binutils, and for the host's libc with Debian's `libc6-dbg`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use symbolizer::{
    debug_file::{DebugDirectories, DebugLink},
    elf::ElfSymbols,
};

/// A C program whose `static` functions exist only in `.symtab`.
const PROGRAM: &str = r#"
static __attribute__((noinline)) int oxeye_hidden_leaf(int x) { return x * 3 + 1; }
static __attribute__((noinline)) int oxeye_hidden_middle(int x) { return oxeye_hidden_leaf(x) + 2; }
int main(int argc, char **argv) { (void)argv; return oxeye_hidden_middle(argc) & 1; }
"#;

const LIBC: &str = "/lib/x86_64-linux-gnu/libc.so.6";

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oxeye-debug-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the program in `dir` with `build_id` (`sha1` or `none`); returns the unstripped binary.
fn build(dir: &Path, build_id: &str) -> PathBuf {
    let source = dir.join("prog.c");
    fs::write(&source, PROGRAM).unwrap();
    let binary = dir.join("prog.full");
    run("gcc", &["-O1", "-g", &format!("-Wl,--build-id={build_id}"), "-o", binary.to_str().unwrap(), source.to_str().unwrap()]);
    binary
}

/// Where `nm` says `name` is in `binary`.
fn address_of(binary: &Path, name: &str) -> u64 {
    let listing = output("nm", &[binary.to_str().unwrap()]);
    let line = listing.lines().find(|l| l.ends_with(&format!(" {name}"))).unwrap_or_else(|| panic!("{name} not in nm's output"));
    u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
}

fn names_hidden_functions(symbols: &ElfSymbols, full: &Path) {
    for name in ["oxeye_hidden_leaf", "oxeye_hidden_middle"] {
        let address = address_of(full, name);
        let found = symbols.symbols().lookup(address + 1).map(|s| s.name.to_owned());
        assert_eq!(found.as_deref(), Some(name), "at {address:#x}");
    }
}

fn stripped_copy(full: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let stripped = full.with_file_name(name);
    let mut args = vec!["--strip-all"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[full.to_str().unwrap(), stripped.to_str().unwrap()]);
    run("objcopy", &args);
    stripped
}

#[test]
fn build_id_directory() {
    let scratch = Scratch::new("build-id");
    let full = build(&scratch.0, "sha1");
    let stripped = stripped_copy(&full, "prog", &[]);
    let mut symbols = ElfSymbols::open(&stripped).unwrap();
    assert!(symbols.symbols().lookup(address_of(&full, "oxeye_hidden_leaf")).is_none(), "the stripped copy names nothing");
    let hex = symbols.build_id().expect("gcc wrote a build ID").to_hex();
    let debug_dir = scratch.0.join("debug");
    let debug_path = debug_dir.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..]));
    fs::create_dir_all(debug_path.parent().unwrap()).unwrap();
    run("objcopy", &["--only-keep-debug", full.to_str().unwrap(), debug_path.to_str().unwrap()]);
    let directories = DebugDirectories::new(vec![scratch.0.join("elsewhere"), debug_dir]);
    let debug = directories.find(symbols.build_id(), symbols.debug_link(), stripped.to_str().unwrap(), Path::new("/")).expect("found by build ID");
    assert_eq!(debug.path, debug_path);
    symbols.merge_debug_file(&debug).unwrap();
    names_hidden_functions(&symbols, &full);
    assert_eq!(symbols.debug_file(), Some(debug_path.as_path()));
}

#[test]
fn a_debug_file_of_another_build_is_refused() {
    let scratch = Scratch::new("mismatch");
    let full = build(&scratch.0, "sha1");
    let stripped = stripped_copy(&full, "prog", &[]);
    let symbols = ElfSymbols::open(&stripped).unwrap();
    let hex = symbols.build_id().unwrap().to_hex();
    let debug_dir = scratch.0.join("debug");
    let planted = debug_dir.join(".build-id").join(&hex[..2]).join(format!("{}.debug", &hex[2..]));
    fs::create_dir_all(planted.parent().unwrap()).unwrap();
    // Another program's debug file at this build ID's path.
    fs::copy("/bin/true", &planted).unwrap();
    assert!(DebugDirectories::new(vec![debug_dir]).find(symbols.build_id(), None, stripped.to_str().unwrap(), Path::new("/")).is_none());
}

#[test]
fn gnu_debuglink_with_its_crc() {
    let scratch = Scratch::new("debuglink");
    let full = build(&scratch.0, "none");
    let debug = scratch.0.join("prog.debug");
    run("objcopy", &["--only-keep-debug", full.to_str().unwrap(), debug.to_str().unwrap()]);
    let stripped = stripped_copy(&full, "prog", &[&format!("--add-gnu-debuglink={}", debug.display())]);
    let mut symbols = ElfSymbols::open(&stripped).unwrap();
    assert!(symbols.build_id().is_none());
    let link = symbols.debug_link().cloned().expect("objcopy added a debug link");
    assert_eq!(link.name, "prog.debug");
    // In the binary's own directory, as the process saw it.
    let found = DebugDirectories::default().find(None, Some(&link), stripped.to_str().unwrap(), Path::new("/")).expect("found next to the binary");
    symbols.merge_debug_file(&found).unwrap();
    names_hidden_functions(&symbols, &full);
    // The same name with other bytes has another CRC.
    let wrong = DebugLink { name: link.name.clone(), crc: link.crc ^ 1 };
    assert!(DebugDirectories::default().find(None, Some(&wrong), stripped.to_str().unwrap(), Path::new("/")).is_none());
    // In `DIR/<the binary's directory>/`, and through a process root.
    let root = scratch.0.join("root");
    let seen = "/opt/app/prog";
    fs::create_dir_all(root.join("opt/app")).unwrap();
    fs::copy(&stripped, root.join("opt/app/prog")).unwrap();
    let debug_dir = scratch.0.join("dbg");
    fs::create_dir_all(debug_dir.join("opt/app")).unwrap();
    fs::copy(&debug, debug_dir.join("opt/app/prog.debug")).unwrap();
    let found = DebugDirectories::new(vec![debug_dir.clone()]).find(None, Some(&link), seen, &root).expect("found under the debug directory");
    assert_eq!(found.path, debug_dir.join("opt/app/prog.debug"));
}

#[test]
fn mini_debug_info_names_local_functions() {
    let scratch = Scratch::new("minidebuginfo");
    let full = build(&scratch.0, "sha1");
    let dir = &scratch.0;
    let path = |name: &str| dir.join(name).display().to_string();
    // The recipe of GDB's manual ("MiniDebugInfo"), as Fedora's build does it.
    let dynamic = output("nm", &["-D", &full.display().to_string(), "--format=posix", "--defined-only"]);
    let functions = output("nm", &[&full.display().to_string(), "--format=posix", "--defined-only"]);
    let dynamic: Vec<&str> = dynamic.lines().filter_map(|l| l.split_whitespace().next()).collect();
    let keep: Vec<&str> = functions
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (name, kind) = (fields.next()?, fields.next()?);
            (matches!(kind, "T" | "t") && !dynamic.contains(&name)).then_some(name)
        })
        .collect();
    assert!(keep.contains(&"oxeye_hidden_leaf"), "{keep:?}");
    fs::write(dir.join("keep"), keep.join("\n")).unwrap();
    run("objcopy", &["--only-keep-debug", &full.display().to_string(), &path("debug")]);
    run("objcopy", &["-S", "--remove-section", ".gdb_index", "--remove-section", ".comment", &format!("--keep-symbols={}", path("keep")), &path("debug"), &path("mini")]);
    run("xz", &["-k", &path("mini")]);
    let stripped = stripped_copy(&full, "prog", &["-R", ".comment"]);
    run("objcopy", &["--add-section", &format!(".gnu_debugdata={}", path("mini.xz")), &stripped.display().to_string()]);
    let symbols = ElfSymbols::open(&stripped).unwrap();
    names_hidden_functions(&symbols, &full);
}

#[test]
fn a_corrupt_mini_debug_info_is_ignored() {
    let scratch = Scratch::new("bad-minidebuginfo");
    let full = build(&scratch.0, "sha1");
    let garbage = scratch.0.join("garbage.xz");
    // An xz header followed by junk.
    fs::write(&garbage, b"\xfd7zXZ\x00\x00\x04\xe6\xd6\xb4\x46 and then nothing sensible").unwrap();
    let stripped = stripped_copy(&full, "prog", &[]);
    run("objcopy", &["--add-section", &format!(".gnu_debugdata={}", garbage.display()), &stripped.display().to_string()]);
    let symbols = ElfSymbols::open(&stripped).unwrap();
    assert!(symbols.symbols().lookup(address_of(&full, "oxeye_hidden_leaf")).is_none());
}

/// Debian's libc is stripped to `.dynsym`; `libc6-dbg` (installed by the test setup) holds
/// the rest under `/usr/lib/debug/.build-id`.
#[test]
fn host_libc_with_libc6_dbg() {
    let mut libc = ElfSymbols::open(LIBC).unwrap();
    let before = libc.symbols().len();
    let debug = DebugDirectories::default()
        .find(libc.build_id(), libc.debug_link(), LIBC, Path::new("/"))
        .expect("libc's debug file (is libc6-dbg installed? `cargo xtask setup --tests` installs it)");
    let after = libc.merge_debug_file(&debug).unwrap();
    assert!(after > before + 1000, "{before} symbols before, {after} after");
    // A local function .dynsym lacks, where the debug file's .symtab puts it.
    let listing = output("nm", &[debug.path.to_str().unwrap()]);
    let (address, name) = listing
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (address, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            (kind == "t" && name == "__libc_start_call_main").then(|| (u64::from_str_radix(address, 16).ok(), name))
        })
        .next()
        .expect("__libc_start_call_main is a local function of libc");
    assert_eq!(libc.symbols().lookup(address.unwrap() + 4).map(|s| s.name), Some(name));
}
