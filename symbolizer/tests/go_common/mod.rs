//! Shared by the Go pclntab tests: building the Go workloads with each installed Go
//! toolchain, in each link mode, into the test's temporary directory.
#![allow(dead_code)]

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use object::{Object, ObjectSection};

/// How a workload is linked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Default build: symbols and DWARF (the ground truth).
    Plain,
    /// `-ldflags='-s -w'`: no symbols, no DWARF; `.gopclntab` stays.
    Stripped,
    /// `-buildmode=pie`, with symbols and DWARF.
    Pie,
    /// `-buildmode=pie -ldflags='-s -w'`.
    PieStripped,
    /// PIE linked by the system linker (gcc), as cgo programs are: the pclntab is merged
    /// into `.data.rel.ro`.
    ExternalPie,
    /// The same, `-s -w`.
    ExternalPieStripped,
}

impl Variant {
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Variant::Plain => &[],
            Variant::Stripped => &["-ldflags=-s -w"],
            Variant::Pie => &["-buildmode=pie"],
            Variant::PieStripped => &["-buildmode=pie", "-ldflags=-s -w"],
            Variant::ExternalPie => &["-buildmode=pie", "-ldflags=-linkmode=external"],
            Variant::ExternalPieStripped => &["-buildmode=pie", "-ldflags=-linkmode=external -s -w"],
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Stripped => "stripped",
            Variant::Pie => "pie",
            Variant::PieStripped => "pie-stripped",
            Variant::ExternalPie => "external-pie",
            Variant::ExternalPieStripped => "external-pie-stripped",
        }
    }

    /// External linking needs cgo (and so gcc, which the test setup installs).
    fn cgo(self) -> &'static str {
        match self {
            Variant::ExternalPie | Variant::ExternalPieStripped => "1",
            _ => "0",
        }
    }
}

/// A Go toolchain: its `go` command and the version it reports (`go1.19.8`).
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub go: PathBuf,
    pub version: String,
}

/// The `go` on PATH (which the test setup installs: its absence fails the tests), then
/// any other Debian `golang-1.N-go` toolchain installed under /usr/lib.
pub fn toolchains() -> Vec<Toolchain> {
    let mut gos = vec![PathBuf::from("go")];
    let mut extra: Vec<PathBuf> = std::fs::read_dir("/usr/lib")
        .map(|dir| dir.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("go-")).map(|e| e.path().join("bin/go")).filter(|p| p.exists()).collect())
        .unwrap_or_default();
    extra.sort();
    gos.extend(extra);
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for go in gos {
        let output = Command::new(&go).arg("env").arg("GOVERSION").output();
        let output = match output {
            Ok(o) if o.status.success() => o,
            _ if go == Path::new("go") => panic!("no working `go` on PATH: install golang-go (cargo xtask setup does)"),
            _ => continue,
        };
        let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !seen.contains(&version) {
            seen.push(version.clone());
            out.push(Toolchain { go, version });
        }
    }
    out
}

/// The Go workload `name` (`tests/workloads/go/NAME.go`).
pub fn workload(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/workloads/go").join(format!("{name}.go"))
}

/// Builds workload `name` with `toolchain` as `variant` for this machine (once per test
/// binary run: later calls reuse the output) and returns the binary's path.
pub fn build(toolchain: &Toolchain, name: &str, variant: Variant) -> PathBuf {
    build_for(toolchain, name, variant, None)
}

/// [`build`] for another architecture (`GOARCH`: `arm64`, `386`), which Go cross-compiles
/// with nothing more installed.
pub fn build_for(toolchain: &Toolchain, name: &str, variant: Variant, goarch: Option<&str>) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-pclntab");
    let arch = goarch.map_or(String::new(), |a| format!("-{a}"));
    let out = tmp.join(format!("{name}-{}-{}{arch}", toolchain.version, variant.suffix()));
    let cache = tmp.join(format!("cache-{}", toolchain.version));
    // Tests run on threads: one build at a time, each once.
    static BUILT: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.get_or_insert_with(HashSet::new).insert(out.clone()) {
        return out;
    }
    let mut command = Command::new(&toolchain.go);
    if let Some(goarch) = goarch {
        command.env("GOARCH", goarch);
    }
    let status = command
        .arg("build")
        .args(variant.flags())
        .arg("-o")
        .arg(&out)
        .arg(workload(name))
        .env("GOCACHE", &cache)
        .env("GOPATH", tmp.join("gopath"))
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .env("CGO_ENABLED", variant.cgo())
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", toolchain.go.display()));
    assert!(status.success(), "{} build {name} {variant:?} {goarch:?} failed", toolchain.version);
    out
}

/// `.text`'s address and bytes: equal for two builds means equal code at equal addresses.
pub fn text(path: &Path) -> (u64, Vec<u8>) {
    let data = std::fs::read(path).expect("read binary");
    let file = object::File::parse(&*data).expect("parse ELF");
    let text = file.section_by_name(".text").expect(".text");
    (text.address(), text.data().expect(".text bytes").to_vec())
}

/// `-s -w` keeps the code where it was: same `.text` address and size (the bytes differ in
/// RIP-relative displacements to data that moved, as the symbol tables no longer sit
/// between `.rodata` and `.gopclntab`; the DWARF comparison itself shows the functions did
/// not move).
pub fn same_code(plain: &Path, stripped: &Path) {
    let ((plain_address, plain_text), (stripped_address, stripped_text)) = (text(plain), text(stripped));
    assert_eq!((plain_address, plain_text.len()), (stripped_address, stripped_text.len()), "-s -w moved the code");
}
