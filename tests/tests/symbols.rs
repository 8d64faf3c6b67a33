//! End-to-end tests of the symbol endpoint (`--symbols-listen`), as devfiler uses it: oxeye
//! profiles real workloads and exports to a receiver with devfiler's rules; the file IDs come
//! from the exported mappings; `metadata.json` and `ranges` are fetched as devfiler builds their
//! URLs; the ranges are decoded by an independent decoder (Python protobuf from the symbfile
//! schema, zstandard from PyPI) and checked against binutils' `nm` and `addr2line`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use otlp_sink::{proto::common::v1::any_value::Value, Sink, SinkConfig};
use oxeye_tests::{
    build_workload, deadline, debug_files, output, output_dir, root, run_ok, run_workload,
    servers::{free_port, get, Connection},
    workload, Oxeye,
};

const LIMIT: Duration = Duration::from_secs(240);
/// Most addresses checked against addr2line per file.
const MAX_CHECKED: usize = 3000;

/// One decoded range.
#[derive(Debug, Clone)]
struct ServedRange {
    start: u64,
    length: u64,
    depth: u32,
    func: String,
    file: Option<String>,
    call_file: Option<String>,
    call_line: u32,
    /// (offset from start, line)
    lines: Vec<(u64, u32)>,
}

impl ServedRange {
    fn contains(&self, address: u64) -> bool {
        address >= self.start && address < self.start + self.length
    }

    fn line_at(&self, address: u64) -> Option<u32> {
        self.lines.iter().rev().find(|(offset, _)| self.start + offset <= address).map(|&(_, line)| line)
    }
}

/// The tests' Python (a venv with zstandard, see `cargo xtask setup --tests`).
fn python() -> PathBuf {
    std::env::var_os("OXEYE_TEST_PYTHON").map_or_else(|| root().join("target/test-python/bin/python3"), PathBuf::from)
}

/// protoc's Python output for the symbfile schema, in a fresh directory.
fn generated_decoder() -> PathBuf {
    let dir = output_dir("symbfile-decoder");
    let schema = root().join("tests/symbfile");
    run_ok(Command::new("protoc").arg(format!("--python_out={}", dir.display())).arg("-I").arg(&schema).arg(schema.join("symbfile.proto")), "protoc");
    dir
}

/// 16 bytes (32 hex digits) as unpadded base64url, as devfiler names files in URLs.
fn base64url(hex: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex file ID")).collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let word = chunk.iter().enumerate().fold(0u32, |w, (i, &b)| w | u32::from(b) << (16 - 8 * i));
        for sextet in 0..=chunk.len() {
            out.push(ALPHABET[(word >> (18 - 6 * sextet) & 63) as usize] as char);
        }
    }
    out
}

/// The path devfiler fetches `document` of file `id` (base64url) from.
fn url_path(id: &str, document: &str) -> String {
    format!("/{}/{}/{id}/{document}", &id[..2], &id[2..4])
}

/// File ID (hex) of every mapping the sink received, by file name.
fn exported_file_ids(sink: &Sink) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for request in sink.requests() {
        let Some(dict) = request.dictionary else { continue };
        for mapping in &dict.mapping_table {
            let name = dict.string_table[mapping.filename_strindex as usize].clone();
            for &index in &mapping.attribute_indices {
                let attribute = &dict.attribute_table[index as usize];
                if dict.string_table[attribute.key_strindex as usize] == "process.executable.build_id.htlhash" {
                    if let Some(Value::StringValue(id)) = attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
                        ids.insert(name.clone(), id.clone());
                    }
                }
            }
        }
    }
    ids
}

/// Fetches and decodes the ranges of file `id` (base64url).
fn fetch_ranges(port: u16, id: &str, decoder: &Path) -> Vec<ServedRange> {
    let metadata = get(port, &url_path(id, "metadata.json"));
    assert_eq!(metadata.status, 200, "metadata.json of {id}: {}", metadata.body);
    let json: serde_json::Value = serde_json::from_str(&metadata.body).expect("metadata.json is JSON");
    assert_eq!(json["version"], 1, "{}", metadata.body);
    assert_eq!(json["symbolFileReferences"]["dwarfFileID"], id, "{}", metadata.body);
    let ranges = get(port, &url_path(id, "ranges"));
    assert_eq!(ranges.status, 200, "ranges of {id}: {}", ranges.body);
    let file = output_dir("symbfile-ranges").join(format!("{id}.zst"));
    std::fs::write(&file, &ranges.bytes).expect("write ranges");
    let decoded = run_ok(Command::new(python()).arg(root().join("tests/symbfile/decode.py")).arg(decoder).arg(&file), "the symbfile decoder");
    decoded
        .lines()
        .map(|line| {
            let r: serde_json::Value = serde_json::from_str(line).expect("decoder prints JSON");
            let text = |key: &str| r[key].as_str().map(str::to_owned);
            ServedRange {
                start: r["start"].as_u64().expect("start"),
                length: r["length"].as_u64().expect("length"),
                depth: r["depth"].as_u64().expect("depth") as u32,
                func: text("func").expect("func"),
                file: text("file"),
                call_file: text("call_file"),
                call_line: r["call_line"].as_u64().unwrap_or(0) as u32,
                lines: r["lines"].as_array().expect("lines").iter().map(|pair| (pair[0].as_u64().unwrap_or(0), pair[1].as_u64().unwrap_or(0) as u32)).collect(),
            }
        })
        .collect()
}

/// `nm`'s function symbols with a size: address → (size, names there).
fn nm_functions(binary: &Path) -> BTreeMap<u64, (u64, BTreeSet<String>)> {
    let mut functions: BTreeMap<u64, (u64, BTreeSet<String>)> = BTreeMap::new();
    for dynamic in [false, true] {
        let mut nm = Command::new("nm");
        nm.args(["--defined-only", "-S", "-C"]);
        if dynamic {
            nm.arg("-D");
        }
        let out = output(nm.arg(binary), "nm");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut fields = line.splitn(4, ' ');
            let (Some(address), Some(size), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next(), fields.next()) else { continue };
            let (Ok(address), Ok(size)) = (u64::from_str_radix(address, 16), u64::from_str_radix(size, 16)) else { continue };
            if matches!(kind, "T" | "t" | "W" | "w" | "i") && size > 0 && address > 0 {
                let entry = functions.entry(address).or_insert((size, BTreeSet::new()));
                entry.1.insert(name.trim_end_matches("@@GLIBC_2.2.5").split('@').next().unwrap_or(name).to_owned());
            }
        }
    }
    functions
}

/// Every symbol-table range (depth 0, no file) is a function `nm` lists at that address with
/// that size and name; every `nm` function is covered by a depth-0 range.
fn assert_symbol_ranges_match_nm(binary: &Path, ranges: &[ServedRange]) -> usize {
    let functions = nm_functions(binary);
    assert!(!functions.is_empty(), "nm lists no functions in {}", binary.display());
    let mut from_symbols = 0;
    for range in ranges.iter().filter(|r| r.depth == 0 && r.file.is_none() && r.lines.is_empty()) {
        let Some((size, names)) = functions.get(&range.start) else {
            panic!("{}: range {:#x}+{:#x} {} is no nm function", binary.display(), range.start, range.length, range.func);
        };
        assert_eq!(range.length, *size, "{}: size of {} at {:#x}", binary.display(), range.func, range.start);
        // DWARF without lines names a function's split-off part (`f.cold`, `f.part.0`) `f`.
        let same_function = |name: &String| name == &range.func || name.split('.').next() == Some(range.func.as_str());
        assert!(names.iter().any(same_function), "{}: {:?} at {:#x}, nm says {names:?}", binary.display(), range.func, range.start);
        from_symbols += 1;
    }
    for (&address, (_, names)) in &functions {
        assert!(ranges.iter().any(|r| r.depth == 0 && r.contains(address)), "{}: nm's {names:?} at {address:#x} is in no range", binary.display());
    }
    from_symbols
}

/// The inline stack oxeye serves for `address`, outermost first: (function, file, line).
fn served_stack(ranges: &[ServedRange], address: u64) -> Vec<(String, Option<String>, Option<u32>)> {
    let mut holding: Vec<&ServedRange> = ranges.iter().filter(|r| r.contains(address)).collect();
    holding.sort_by_key(|r| r.depth);
    holding.dedup_by_key(|r| r.depth);
    (0..holding.len())
        .map(|i| match holding.get(i + 1) {
            Some(child) => (holding[i].func.clone(), child.call_file.clone(), Some(child.call_line)),
            None => (holding[i].func.clone(), holding[i].file.clone(), holding[i].line_at(address)),
        })
        .collect()
}

/// Which addr2line answers for a file.
#[derive(Clone, Copy)]
enum Addr2line {
    /// binutils'.
    Binutils,
    /// elfutils' `eu-addr2line`: binutils 2.40 takes some DWARF 5 line tables' files wrongly
    /// (libc's `strfromf.cold` in `strfromf.c`, where the line table, llvm-addr2line and elfutils
    /// all say `strfrom-skeleton.c`).
    Elfutils,
}

/// `addr2line -i`'s stack for each address, outermost first: (function, file, line).
fn addr2line_stacks(binary: &Path, addresses: &[u64], tool: Addr2line) -> Vec<Vec<(String, String, u32)>> {
    let mut command = Command::new(match tool {
        Addr2line::Binutils => "addr2line",
        Addr2line::Elfutils => "eu-addr2line",
    });
    command.args(["-a", "-f", "-i", "-C", "-e"]).arg(binary);
    command.args(addresses.iter().map(|a| format!("{a:#x}")));
    let text = run_ok(&mut command, "addr2line");
    let mut stacks: Vec<Vec<(String, String, u32)>> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("0x") {
            stacks.push(Vec::new());
            continue;
        }
        // elfutils: "inner inlined at FILE:LINE:COL in outer".
        let function = line.split(" inlined at ").next().unwrap_or(line);
        let location = lines.next().unwrap_or_default();
        let location = location.split(" (discriminator").next().unwrap_or(location);
        let (file, number) = location.rsplit_once(':').unwrap_or((location, "0"));
        let (file, number) = match tool {
            // FILE:LINE:COL
            Addr2line::Elfutils => file.rsplit_once(':').filter(|(_, line)| line.parse::<u32>().is_ok()).map_or((file, number), |(f, l)| (f, l)),
            Addr2line::Binutils => (file, number),
        };
        stacks.last_mut().expect("an address first").insert(0, (function.to_owned(), file.to_owned(), number.parse().unwrap_or(0)));
    }
    stacks
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Every DWARF range's start and line-table addresses: the served inline stack (functions,
/// files and lines) is what `addr2line -i` says.
fn assert_dwarf_ranges_match_addr2line(binary: &Path, ranges: &[ServedRange], tool: Addr2line) -> usize {
    let mut addresses: BTreeSet<u64> = BTreeSet::new();
    for range in ranges.iter().filter(|r| r.file.is_some() || r.depth > 0) {
        addresses.insert(range.start);
        addresses.extend(range.lines.iter().map(|(offset, _)| range.start + offset));
    }
    // A spread of at most MAX_CHECKED addresses: addr2line takes seconds per thousand in libc.
    let step = addresses.len().div_ceil(MAX_CHECKED).max(1);
    let addresses: Vec<u64> = addresses.into_iter().step_by(step).collect();
    assert!(addresses.len() >= 10, "only {} DWARF addresses in {}", addresses.len(), binary.display());
    let expected = addr2line_stacks(binary, &addresses, tool);
    assert_eq!(expected.len(), addresses.len(), "addr2line answered {} of {} addresses", expected.len(), addresses.len());
    let mut checked = 0;
    for (address, want) in addresses.iter().zip(&expected) {
        if want.iter().any(|(func, _, line)| func == "??" || *line == 0) {
            continue; // addr2line knows nothing there either
        }
        let got = served_stack(ranges, *address);
        let names = |stack: &[(String, Option<String>, Option<u32>)]| stack.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&got), want.iter().map(|f| f.0.clone()).collect::<Vec<_>>(), "{}: functions at {address:#x}", binary.display());
        for ((func, file, line), (_, want_file, want_line)) in got.iter().zip(want) {
            assert_eq!(file.as_deref().map(basename), Some(basename(want_file)), "{}: file of {func} at {address:#x}", binary.display());
            assert_eq!(*line, Some(*want_line), "{}: line of {func} at {address:#x}", binary.display());
        }
        checked += 1;
    }
    checked
}

#[test]
fn served_ranges_agree_with_nm_and_addr2line() {
    let _deadline = deadline(LIMIT);
    let sink = Sink::start(SinkConfig::devfiler()).expect("start the devfiler-rules receiver");
    let port = free_port();
    let symbols = port.to_string();
    let oxeye = Oxeye::start("symbols", &["-F", "99", "--collection-agent", &sink.addr().to_string(), "--disable-tls", "--reporter-interval", "1", "--symbols-listen", &symbols]);
    let inline = build_workload("inline.c", &["-O2", "-g"]);
    let chain = workload("chain");
    let qsort = build_workload("qsort.c", &["-O2", "-fomit-frame-pointer"]);
    let vdso = workload("vdso");
    run_workload(&inline, &["2"]);
    run_workload(&chain, &["1"]);
    run_workload(&qsort, &["1"]);
    run_workload(&vdso, &["1"]);
    assert!(sink.wait_for_requests(2, Duration::from_secs(20)), "no profiles arrived");
    std::thread::sleep(Duration::from_secs(2));
    let ids = exported_file_ids(&sink);
    let decoder = generated_decoder();
    let id_of = |path: &Path| base64url(ids.get(&path.display().to_string()).unwrap_or_else(|| panic!("no exported mapping of {}: {ids:?}", path.display())));

    let inline_ranges = fetch_ranges(port, &id_of(&inline), &decoder);
    let inlined = inline_ranges.iter().filter(|r| r.depth > 0).count();
    assert!(inline_ranges.iter().any(|r| r.func == "mix" && r.depth == 2), "mix inlined into step inlined into outer: {inline_ranges:#?}");
    let checked = assert_dwarf_ranges_match_addr2line(&inline, &inline_ranges, Addr2line::Binutils);
    let from_symbols = assert_symbol_ranges_match_nm(&inline, &inline_ranges);
    eprintln!("inline.c -O2 -g: {} ranges ({inlined} inlined), {checked} addresses agree with addr2line, {from_symbols} symbol ranges with nm", inline_ranges.len());

    for binary in [&chain, &qsort] {
        let ranges = fetch_ranges(port, &id_of(binary), &decoder);
        let matched = assert_symbol_ranges_match_nm(binary, &ranges);
        eprintln!("{}: {matched} ranges agree with nm", binary.display());
    }
    let libc = ids.keys().find(|name| name.contains("/libc.so")).unwrap_or_else(|| panic!("no libc mapping exported: {ids:?}")).clone();
    let libc_ranges = fetch_ranges(port, &base64url(&ids[&libc]), &decoder);
    // Served from libc6-dbg's debug file (the test setup installs it): its DWARF and .symtab.
    let libc_build_id = debug_files::build_id(Path::new(&libc));
    let libc_debug = PathBuf::from(format!("/usr/lib/debug/.build-id/{}/{}.debug", &libc_build_id[..2], &libc_build_id[2..]));
    let matched = assert_symbol_ranges_match_nm(&libc_debug, &libc_ranges);
    let checked = assert_dwarf_ranges_match_addr2line(&libc_debug, &libc_ranges, Addr2line::Elfutils);
    assert!(libc_ranges.iter().any(|r| r.func.ends_with("qsort_r")), "qsort_r in libc's ranges");
    assert!(libc_ranges.iter().any(|r| r.func.starts_with("msort_with_tmp") && r.file.is_some()), "libc's static msort_with_tmp, with its source file, in libc's ranges");
    eprintln!("{libc}: {matched} symbol ranges agree with nm, {checked} DWARF addresses with eu-addr2line, of its debug file");
    let vdso_ranges = fetch_ranges(port, &base64url(&ids["[vdso]"]), &decoder);
    assert!(vdso_ranges.iter().any(|r| r.func.contains("clock_gettime")), "the vDSO's ranges name clock_gettime: {vdso_ranges:?}");

    let finished = oxeye.stop();
    finished.assert_success();
    assert!(sink.refusals().is_empty(), "devfiler would refuse: {:?}", sink.refusals());
}

#[test]
fn the_endpoint_serves_only_profiled_files_and_refuses_bad_requests() {
    let _deadline = deadline(LIMIT);
    let sink = Sink::start(SinkConfig::devfiler()).expect("start the devfiler-rules receiver");
    let port = free_port();
    let symbols = format!(":{port}");
    let oxeye = Oxeye::start("symbols-bad", &["-F", "99", "--collection-agent", &sink.addr().to_string(), "--disable-tls", "--reporter-interval", "1", "--symbols-listen", &symbols]);
    run_workload(&workload("chain"), &["1"]);
    assert!(sink.wait_for_requests(1, Duration::from_secs(20)), "no profiles arrived");

    // A bare :PORT binds loopback only.
    let listening = String::from_utf8_lossy(&output(Command::new("ss").args(["-Hltn", &format!("sport = :{port}")]), "ss").stdout).into_owned();
    assert!(listening.contains(&format!("127.0.0.1:{port}")) && listening.lines().count() == 1, "{listening}");

    // A real file no profiled process mapped executable: its ID is unknown.
    let passwd_id = run_ok(Command::new("python3").args(["-c", "import hashlib,sys;d=open('/etc/passwd','rb').read();h=hashlib.sha256(d[:4096]+d[-4096:]+len(d).to_bytes(8,'big')).digest()[:16];print(h.hex())"]), "python3");
    let passwd = base64url(passwd_id.trim());
    for document in ["metadata.json", "ranges"] {
        assert_eq!(get(port, &url_path(&passwd, document)).status, 404, "{document} of /etc/passwd");
    }
    assert_eq!(get(port, &url_path("AAAAAAAAAAAAAAAAAAAAAA", "metadata.json")).status, 404, "an unknown ID");
    for malformed in ["/", "/etc/passwd", "/AA/AA/AAAAAAAAAAAAAAAAAAAAAA/../../../etc/passwd", "/AA/AB/AAAAAAAAAAAAAAAAAAAAAA/ranges", "/AA/AA/AAAAAAAAAAAAAAAAAAAAAB/ranges", "/AA/AA/AAAAAAAAAAAAAAAAAAAAAA/symbols"] {
        assert_eq!(get(port, malformed).status, 400, "{malformed}");
    }
    assert_eq!(get(port, &format!("/{}", "A".repeat(4000))).status, 414, "a long path");
    // A request head past 8 KiB is refused, and the server goes on.
    let mut huge = Connection::open(port);
    huge.send(&["/AA/AA/AAAAAAAAAAAAAAAAAAAAAA/ranges"], &format!("X-Padding: {}\r\n", "p".repeat(64 * 1024)));
    let status = huge.try_receive().map(|r| r.status);
    assert!(matches!(status, None | Some(431) | Some(400)), "a 64 KiB head got {status:?}");
    let mut post = Connection::open(port);
    post.send_raw(b"POST /AA/AA/AAAAAAAAAAAAAAAAAAAAAA/ranges HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post.receive().status, 405);
    // Garbage on the socket does not stop it.
    let mut garbage = Connection::open(port);
    garbage.send_raw(b"\x00\xff\xfe\x01 not http\r\n\r\n");
    let _ = garbage.try_receive();
    let chain_id = exported_file_ids(&sink).get(&workload("chain").display().to_string()).cloned().expect("chain's mapping was exported");
    assert_eq!(get(port, &url_path(&base64url(&chain_id), "metadata.json")).status, 200, "still serving after bad requests");

    let finished = oxeye.stop();
    finished.assert_success();
}
