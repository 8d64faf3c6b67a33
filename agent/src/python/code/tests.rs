//! `read_code` and `LineTable` against real interpreters, and against objects built in this
//! process's own memory for the cases no interpreter gives on demand.
//!
//! Each interpreter runs a script that prints, per code object, the addresses (`id`) of the
//! object and of the fields the tag covers, its names, `co_lines()` (or `dis.findlinestarts`
//! before 3.10) and `PyCode_Addr2Line` for every instruction, then waits for its stdin to
//! close. The test reads every object from the live process and compares.

use super::*;
use crate::python::versions::{self, StringLayout, Version};
use agent_common::python::{PythonLayout, INSTRUCTION_MASK};
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

const SCRIPT: &str = r#"import ctypes, dis, sys, types

V = sys.version_info[:2]
A2L = ctypes.pythonapi.PyCode_Addr2Line
A2L.argtypes = [ctypes.py_object, ctypes.c_int]
A2L.restype = ctypes.c_int

class Greeter:
    def hello(self, who):
        return "hello " + who

def outer(n):
    def inner(k):
        return k * n
    return inner

square = lambda x: x * x

def größe(a, b):
    return a * b

def функция(items):
    for item in items:
        if item:
            yield item

def 𠀋(x):
    try:
        return 1 / x
    except ZeroDivisionError:
        return None

def generated(name, source, filename):
    space = {}
    exec(compile(source, filename, "exec"), space)
    return space[name]

LONG = ("def long_body(n):\n    total = 0\n    for i in range(n):\n        total += i\n" + "\n" * 300
        + "    while total > 10:\n        total -= 3\n"
        + "".join("    total = total * %d + %d\n" % (i, i) for i in range(150))
        + "    try:\n        total //= n\n    except ZeroDivisionError:\n        total = -1\n"
        + "    with open('/dev/null') as f:\n        f.read()\n    return total\n")
codes = [
    sys._getframe().f_code, Greeter.hello.__code__, outer.__code__, outer(2).__code__, square.__code__,
    größe.__code__, функция.__code__, 𠀋.__code__,
    generated("long_body", LONG, "/tmp/生成/模块.py").__code__,
    generated("far", "\n" * 100000 + "def far(x):\n    return [x for _ in range(3)]\n", "/tmp/𝄞music.py").__code__,
    generated("cut", "def cut():\n    pass\n", "/" + "x" * 2000 + ".py").__code__,
]

def line_ranges(code):
    if V >= (3, 10):
        return list(code.co_lines())
    starts = list(dis.findlinestarts(code))
    ends = [start for start, _ in starts[1:]] + [len(code.co_code)]
    return [(start, end, line) for (start, line), end in zip(starts, ends)]

def instructions(code):
    # f_lasti counts bytes before 3.10, code units after.
    return range(len(code.co_code)) if V < (3, 10) else range(len(code.co_code) // 2)

def addr(i):
    return i if V < (3, 10) else 2 * i

runtime = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
print("RUNTIME", V[1], id(types.CodeType), runtime, flush=True)
for code in codes:
    name = code.co_qualname if V >= (3, 11) else code.co_name
    table = code.co_linetable if V >= (3, 10) else code.co_lnotab
    ranges = ",".join("%d:%d:%s" % (s, e, "n" if l is None else l) for s, e, l in line_ranges(code))
    a2l = ",".join(str(A2L(code, addr(i))) for i in instructions(code))
    print("CODE", id(code), id(code.co_filename), id(name), id(table), code.co_firstlineno,
          name.encode().hex(), code.co_filename.encode().hex(), ranges or "-", a2l or "-", flush=True)
print("READY", flush=True)
sys.stdin.read()
"#;

/// How long an interpreter may take to print its objects.
const DEADLINE: Duration = Duration::from_secs(20);

/// A running interpreter; killed, and its directory removed, when dropped.
struct Interpreter {
    child: Child,
    dir: PathBuf,
    lines: Receiver<String>,
}

impl Drop for Interpreter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Interpreter {
    fn spawn(python: &Path, label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oxeye-code-test-{}-{label}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the script's directory");
        // A non-ASCII file name: a compact, 1-byte, non-ASCII str.
        let script = dir.join("prüfung.py");
        std::fs::write(&script, SCRIPT).expect("write the script");
        let mut child = Command::new(python)
            .arg("-I")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("spawn {}: {error}", python.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        // A thread, so that the test can stop waiting: it ends when the child's stdout closes.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, dir, lines }
    }

    /// The lines printed before `READY`.
    fn output(&self) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut output = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "READY" => return output,
                Ok(line) => output.push(line),
                Err(error) => panic!("the interpreter stopped or stalled before READY ({error:?}); it printed {output:?}"),
            }
        }
    }
}

/// What the interpreter says of one code object.
#[derive(Debug)]
struct Expected {
    code: u64,
    filename: u64,
    name: u64,
    table: u64,
    first_line: u32,
    name_text: String,
    file_text: String,
    /// `(start, end, line)` in bytes, as `co_lines()`.
    ranges: Vec<(u64, u64, Option<u32>)>,
    /// `PyCode_Addr2Line` of each instruction position.
    addr2line: Vec<i64>,
}

fn number<T: std::str::FromStr>(text: &str) -> T {
    text.parse().unwrap_or_else(|_| panic!("not a number: {text:?}"))
}

fn unhex(text: &str) -> String {
    let bytes = (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex from the script")).collect();
    String::from_utf8(bytes).expect("UTF-8 from the script")
}

fn parse_code(line: &str) -> Expected {
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 10, "a CODE line: {line}");
    let list = |text: &str| if text == "-" { Vec::new() } else { text.split(',').map(str::to_owned).collect() };
    let ranges = list(fields[8])
        .iter()
        .map(|range| {
            let parts: Vec<&str> = range.split(':').collect();
            (number(parts[0]), number(parts[1]), (parts[2] != "n").then(|| number(parts[2])))
        })
        .collect();
    Expected {
        code: number(fields[1]),
        filename: number(fields[2]),
        name: number(fields[3]),
        table: number(fields[4]),
        first_line: number(fields[5]),
        name_text: unhex(fields[6]),
        file_text: unhex(fields[7]),
        ranges,
        addr2line: list(fields[9]).iter().map(|value| number(value)).collect(),
    }
}

/// The line an instruction at byte `offset` should get: its range's, or where the range has
/// none, the nearest earlier range's, or the first line.
fn expected_line(expected: &Expected, offset: u64) -> u32 {
    let mut line = expected.first_line;
    for &(start, end, range_line) in &expected.ranges {
        if start > offset {
            break;
        }
        line = range_line.unwrap_or(line);
        if offset < end {
            break;
        }
    }
    line
}

fn layout_of(memory: &ProcessMemory, minor: u8, runtime: u64) -> VersionLayout {
    if minor >= 13 {
        let mut bytes = vec![0u8; 4096];
        memory.read(runtime, &mut bytes).expect("read _PyRuntime's debug offsets");
        versions::from_debug_offsets(&bytes).expect("3.13's debug offsets give a layout")
    } else {
        versions::table(Version { major: 3, minor }).expect("a table layout")
    }
}

/// Runs the checks against one interpreter; false if it is not installed here.
fn check_interpreter(label: &str, python: &Path) -> bool {
    if !python.exists() {
        println!("{label}: {} is not installed, skipped", python.display());
        return false;
    }
    let interpreter = Interpreter::spawn(python, label);
    let output = interpreter.output();
    let runtime: Vec<&str> = output.first().expect("a RUNTIME line").split(' ').collect();
    assert_eq!(runtime[0], "RUNTIME", "{output:?}");
    let (minor, code_type, runtime): (u8, u64, u64) = (number(runtime[1]), number(runtime[2]), number(runtime[3]));
    let memory = ProcessMemory::open(interpreter.child.id()).expect("open the interpreter's memory");
    let layout = layout_of(&memory, minor, runtime);
    let mut instructions = 0;
    let codes: Vec<Expected> = output[1..].iter().map(|line| parse_code(line)).collect();
    for expected in &codes {
        let code = read_code(&memory, &layout, code_type, expected.code)
            .unwrap_or_else(|error| panic!("{label}: reading {}: {error}", expected.name_text));
        let what = format!("{label} {}", expected.name_text);
        assert_eq!(code.name, expected.name_text, "{what}");
        let chars = expected.file_text.chars().count();
        let file: String = if chars > MAX_CHARS {
            expected.file_text.chars().take(MAX_CHARS - 1).chain(['…']).collect()
        } else {
            expected.file_text.clone()
        };
        assert_eq!(code.filename, file, "{what}");
        assert_eq!(code.first_line, expected.first_line, "{what}");
        assert_eq!(code.tag, code_tag(expected.filename, expected.name, expected.table, expected.first_line), "{what}");
        assert_eq!(code.lines.line(INSTRUCTION_MASK), expected.first_line, "{what}: a frame not started");
        for (instruction, &addr2line) in expected.addr2line.iter().enumerate() {
            let offset = if minor <= 9 { instruction as u64 } else { 2 * instruction as u64 };
            let want = expected_line(expected, offset);
            let line = code.lines.line(instruction as u32);
            assert_eq!(line, want, "{what}: instruction {instruction} (ranges {:?})", expected.ranges);
            if addr2line >= 0 {
                assert_eq!(i64::from(line), addr2line, "{what}: instruction {instruction} against PyCode_Addr2Line");
            }
        }
        instructions += expected.addr2line.len();
    }
    check_errors(&memory, &layout, code_type, &codes);
    println!("{label}: 3.{minor}, {} code objects, {instructions} instruction positions: all match", codes.len());
    true
}

/// Wrong types and unmapped addresses give errors, not names.
fn check_errors(memory: &ProcessMemory, layout: &VersionLayout, code_type: u64, codes: &[Expected]) {
    let first = codes.first().expect("the script's code objects");
    assert!(matches!(read_code(memory, layout, code_type + 8, first.code), Err(CodeError::NotCode { .. })));
    // The long file name: a str, big enough for the whole window to read.
    let long_name = codes.last().expect("the script's code objects").filename;
    assert!(matches!(read_code(memory, layout, code_type, long_name), Err(CodeError::NotCode { .. })));
    for unmapped in [0, 8, 0xffff_ffff_ffff_fff0, 0x7fff_ffff_ffff_fff8] {
        assert!(matches!(read_code(memory, layout, code_type, unmapped), Err(CodeError::Read { .. })), "{unmapped:#x}");
    }
}

fn pyenv(version: &str) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
    let minor = version.rsplit_once('.').map_or(version, |(minor, _)| minor);
    home.join(".pyenv/versions").join(version).join("bin").join(format!("python{minor}"))
}

#[test]
fn python_3_8() {
    check_interpreter("3.8.18", &pyenv("3.8.18"));
}

#[test]
fn python_3_9() {
    check_interpreter("3.9.18", &pyenv("3.9.18"));
}

#[test]
fn python_3_10() {
    check_interpreter("3.10.13", &pyenv("3.10.13"));
}

#[test]
fn python_3_11() {
    check_interpreter("3.11.7", &pyenv("3.11.7"));
}

#[test]
fn python_3_12() {
    check_interpreter("3.12.1", &pyenv("3.12.1"));
}

#[test]
fn python_3_13() {
    check_interpreter("3.13.0", &pyenv("3.13.0"));
}

#[test]
fn debian_python3() {
    check_interpreter("debian", Path::new("/usr/bin/python3"));
}

#[test]
fn some_interpreter_is_installed() {
    let mut paths: Vec<PathBuf> = ["3.8.18", "3.9.18", "3.10.13", "3.11.7", "3.12.1", "3.13.0"].iter().map(|v| pyenv(v)).collect();
    paths.push(PathBuf::from("/usr/bin/python3"));
    assert!(paths.iter().any(|path| path.exists()), "no Python interpreter to test against: {paths:?}");
}

/// Objects built in this process's memory, for what no interpreter gives on demand.
mod fake {
    use super::*;

    const FAKE_CODE_TYPE: u64 = 0x5ee_c0de;

    /// `PyASCIIObject.state`: kind in bits 2–4, compact 5, ascii 6, ready 7 (≤3.11).
    fn state(kind: u32, compact: bool, ascii: bool, ready: bool) -> u32 {
        kind << 2 | u32::from(compact) << 5 | u32::from(ascii) << 6 | u32::from(ready) << 7
    }

    /// A str of `chars`, `kind` bytes each, with the given state.
    fn string(strings: &StringLayout, chars: &[u32], kind: u32, state: u32) -> Vec<u8> {
        let ascii = state & 1 << 6 != 0;
        let data = usize::from(if ascii { strings.ascii_size } else { strings.compact_size });
        let mut object = vec![0u8; data + chars.len() * kind as usize + 4];
        object[usize::from(strings.length)..][..8].copy_from_slice(&(chars.len() as u64).to_le_bytes());
        object[usize::from(strings.state)..][..4].copy_from_slice(&state.to_le_bytes());
        for (index, &ch) in chars.iter().enumerate() {
            object[data + index * kind as usize..][..kind as usize].copy_from_slice(&ch.to_le_bytes()[..kind as usize]);
        }
        object
    }

    fn bytes_object(layout: &VersionLayout, size: i64, data: &[u8]) -> Vec<u8> {
        let mut object = vec![0u8; usize::from(layout.bytes_data) + data.len() + 1];
        object[16..24].copy_from_slice(&size.to_le_bytes());
        object[usize::from(layout.bytes_data)..][..data.len()].copy_from_slice(data);
        object
    }

    fn code(layout: &VersionLayout, name: &[u8], filename: &[u8], table: &[u8], first_line: u32) -> Vec<u8> {
        let mut object = vec![0u8; CODE_WINDOW];
        let walker = &layout.walker;
        object[8..16].copy_from_slice(&FAKE_CODE_TYPE.to_le_bytes());
        for (offset, target) in [(walker.code_name, name), (walker.code_filename, filename), (walker.code_linetable, table)] {
            object[usize::from(offset)..][..8].copy_from_slice(&(target.as_ptr() as u64).to_le_bytes());
        }
        object[usize::from(walker.code_firstlineno)..][..4].copy_from_slice(&first_line.to_le_bytes());
        object
    }

    fn layout(minor: u8) -> VersionLayout {
        versions::table(Version { major: 3, minor }).expect("a table layout")
    }

    fn read(layout: &VersionLayout, name: &[u8], filename: &[u8], table: &[u8]) -> Result<CodeObject, CodeError> {
        let memory = ProcessMemory::open(std::process::id()).expect("open own memory");
        let object = code(layout, name, filename, table, 10);
        read_code(&memory, layout, FAKE_CODE_TYPE, object.as_ptr() as u64)
    }

    #[test]
    fn kinds_surrogates_and_cuts() {
        for minor in [11, 12] {
            let layout = layout(minor);
            let s = &layout.strings;
            let name = string(s, &[0x3bb, 0xd800, 0x3c2], 2, state(2, true, false, true));
            let long: Vec<u32> = std::iter::repeat_n(0x1_d11e, 3000).collect();
            let filename = string(s, &long, 4, state(4, true, false, true));
            let table = bytes_object(&layout, 3, &[0x80 | 11 << 3, 0, 0]);
            let code = read(&layout, &name, &filename, &table).expect("a well-formed fake code object");
            assert_eq!(code.name, "λ\u{fffd}ς");
            assert_eq!(code.filename.chars().count(), MAX_CHARS);
            assert!(code.filename.starts_with("𝄞𝄞") && code.filename.ends_with("𝄞…"));
            assert_eq!((code.first_line, code.lines.line(0)), (10, 11));
        }
    }

    #[test]
    fn odd_strings_are_errors() {
        let layout = layout(11);
        let s = &layout.strings;
        let good = string(s, &[b'f' as u32], 1, state(1, true, true, true));
        let table = bytes_object(&layout, 0, &[]);
        let odd = [
            ("not compact", string(s, &[b'f' as u32], 1, state(1, false, true, true))),
            ("not ready", string(s, &[b'f' as u32], 1, state(1, true, true, false))),
            ("unknown kind", string(s, &[b'f' as u32], 1, state(3, true, false, true))),
            ("unknown kind", string(s, &[b'f' as u32], 2, state(2, true, true, true))),
            ("characters out of range", string(s, &[0xe9], 1, state(1, true, true, true))),
            ("characters out of range", string(s, &[0x11_0000], 4, state(4, true, false, true))),
        ];
        for (reason, name) in &odd {
            match read(&layout, name, &good, &table) {
                Err(CodeError::BadString { reason: found, .. }) => assert_eq!(found, *reason),
                other => panic!("{reason}: {other:?}"),
            }
        }
        let mut negative = good.clone();
        negative[16..24].copy_from_slice(&(-1i64).to_le_bytes());
        assert!(matches!(read(&layout, &negative, &good, &table), Err(CodeError::BadString { reason: "negative length", .. })));
    }

    #[test]
    fn line_tables_bad_and_big() {
        let layout = layout(12);
        let name = string(&layout.strings, &[b'f' as u32], 1, state(1, true, true, false));
        let negative = bytes_object(&layout, -5, &[]);
        assert!(matches!(read(&layout, &name, &name, &negative), Err(CodeError::BadLineTable { size: -5, .. })));
        // Past 64 KiB only the prefix is read: one unit per entry, a line each.
        let entries = MAX_TABLE_BYTES / 3 + 100;
        let data: Vec<u8> = std::iter::repeat_n([0x80 | 11 << 3, 0, 0], entries).flatten().collect();
        let big = bytes_object(&layout, data.len() as i64, &data);
        let code = read(&layout, &name, &name, &big).expect("a big table");
        // 21,845 whole entries, and the head of one more: a one-line form needs no more.
        let read_entries = MAX_TABLE_BYTES.div_ceil(3) as u32;
        assert_eq!(code.lines.line(read_entries - 1), 10 + read_entries);
        assert_eq!(code.lines.line(read_entries + 50), 10 + read_entries);
    }

    #[test]
    fn a_layout_outside_the_window_is_an_error() {
        let good = layout(12);
        let name = string(&good.strings, &[b'f' as u32], 1, state(1, true, true, false));
        let table = bytes_object(&good, 0, &[]);
        let object = code(&good, &name, &name, &table, 1);
        let bad = VersionLayout { walker: PythonLayout { code_name: CODE_WINDOW as u16 - 4, ..good.walker }, ..good };
        let memory = ProcessMemory::open(std::process::id()).expect("open own memory");
        assert!(matches!(read_code(&memory, &bad, FAKE_CODE_TYPE, object.as_ptr() as u64), Err(CodeError::Layout { .. })));
    }
}
