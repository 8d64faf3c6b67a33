//! One process's perf map: lines `START SIZE NAME` (hexadecimal, with or without `0x`), as
//! `perf` reads them. V8 and .NET append as they compile; code can be freed and its addresses
//! reused, so a later line wins over the earlier ones it overlaps. The JDK's
//! `Compiler.perfmap` instead rewrites the whole file with what is compiled now: a file that
//! shrank or changed its modification time without growing from where it was read is read anew.

use std::{
    collections::BTreeMap,
    io::{Read, Seek, SeekFrom},
};

use super::{
    functions::{JitFunctionId, JitFunctions, Runtime},
    open::{OpenedMap, MAX_PERF_MAP_BYTES},
};

/// Bytes read from the file per refresh, at most (the rest is read at the next one).
const READ_CHUNK: u64 = 8 << 20;

#[derive(Debug, Clone, Copy)]
struct Entry {
    end: u64,
    function: JitFunctionId,
}

/// A perf map read so far.
#[derive(Debug)]
pub struct PerfMap {
    opened: OpenedMap,
    /// Bytes of the file consumed: always at a line's end.
    offset: u64,
    /// The file's modification time when last read (a rewrite changes it).
    modified: Option<std::time::SystemTime>,
    /// Code ranges by start address, non-overlapping.
    entries: BTreeMap<u64, Entry>,
    runtime: Runtime,
    /// Lines that did not parse.
    pub bad_lines: u64,
    /// Whether the file has grown past [`MAX_PERF_MAP_BYTES`] (the rest is not read).
    pub truncated: bool,
}

impl PerfMap {
    /// A map of `runtime`'s code, to be filled by [`PerfMap::refresh`].
    pub fn new(opened: OpenedMap, runtime: Runtime) -> Self {
        PerfMap { opened, offset: 0, modified: None, entries: BTreeMap::new(), runtime, bad_lines: 0, truncated: false }
    }

    /// The function covering `address`.
    pub fn lookup(&self, address: u64) -> Option<JitFunctionId> {
        let (_, entry) = self.entries.range(..=address).next_back()?;
        (address < entry.end).then_some(entry.function)
    }

    /// Code ranges known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Reads the lines appended since the last call (complete lines only); returns how many.
    pub fn refresh(&mut self, functions: &mut JitFunctions) -> std::io::Result<usize> {
        let metadata = self.opened.file.metadata()?;
        let (size, modified) = (metadata.len(), metadata.modified().ok());
        if size < self.offset || (self.runtime == Runtime::Jvm && modified != self.modified) {
            // Rewritten: what was read no longer describes the process.
            self.entries.clear();
            self.offset = 0;
            self.truncated = false;
        }
        self.modified = modified;
        if size <= self.offset || self.truncated {
            return Ok(0);
        }
        let end = size.min(MAX_PERF_MAP_BYTES);
        if end < size {
            self.truncated = true;
        }
        let want = (end - self.offset).min(READ_CHUNK);
        self.opened.file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::with_capacity(want as usize);
        (&mut self.opened.file).take(want).read_to_end(&mut bytes)?;
        // A line still being written is read next time.
        let Some(last_newline) = bytes.iter().rposition(|&b| b == b'\n') else { return Ok(0) };
        self.offset += last_newline as u64 + 1;
        let mut added = 0;
        for line in bytes[..last_newline].split(|&b| b == b'\n') {
            match std::str::from_utf8(line).ok().and_then(parse_line) {
                Some((start, size, text)) => {
                    let (name, file, line) = name_parts(self.runtime, text);
                    let function = functions.intern(self.runtime, name, file, line);
                    self.insert(start, start.saturating_add(size), function);
                    added += 1;
                }
                None if line.is_empty() => {}
                None => self.bad_lines += 1,
            }
        }
        Ok(added)
    }

    /// Adds a range; the ranges it overlaps are earlier code and give way.
    fn insert(&mut self, start: u64, end: u64, function: JitFunctionId) {
        if end <= start {
            return;
        }
        let covered: Vec<u64> = self.entries.range(start..end).map(|(&s, _)| s).collect();
        for s in covered {
            if let Some(old) = self.entries.remove(&s) {
                // The part of a longer old range past the new one still stands.
                if old.end > end {
                    self.entries.insert(end, old);
                }
            }
        }
        if let Some((_, before)) = self.entries.range_mut(..start).next_back() {
            if before.end > start {
                let tail = Entry { end: before.end, function: before.function };
                before.end = start;
                if tail.end > end {
                    self.entries.insert(end, tail);
                }
            }
        }
        self.entries.insert(start, Entry { end, function });
    }

    /// The path inside the process (for logs).
    pub fn path(&self) -> &str {
        &self.opened.path
    }
}

/// `START SIZE NAME`: two hexadecimal numbers, then the rest of the line.
fn parse_line(line: &str) -> Option<(u64, u64, &str)> {
    let line = line.trim_end_matches('\r');
    let (start, rest) = line.split_once(' ')?;
    let (size, name) = rest.split_once(' ')?;
    let hex = |text: &str| u64::from_str_radix(text.strip_prefix("0x").unwrap_or(text), 16).ok();
    let name = name.trim();
    (!name.is_empty()).then_some(())?;
    Some((hex(start)?, hex(size)?, name))
}

/// The function, file and line in a perf map name. V8 writes `JS:*fib /app/fib.js:3:20`
/// (`*` optimised, `~` interpreted, `^` baseline); older versions `LazyCompile:*fib file:3`.
/// Other runtimes' names are kept whole.
fn name_parts(runtime: Runtime, text: &str) -> (&str, &str, u32) {
    if runtime == Runtime::Jvm {
        // HotSpot writes `double Chain.leaf(int)`: the return type goes.
        return match (text.find(' '), text.find('(')) {
            (Some(space), Some(paren)) if space < paren => (&text[space + 1..], "", 0),
            _ => (text, "", 0),
        };
    }
    if runtime != Runtime::V8 {
        return (text, "", 0);
    }
    let Some(rest) = ["JS:", "LazyCompile:", "Function:", "Script:"].iter().find_map(|prefix| text.strip_prefix(prefix)) else {
        return (text, "", 0);
    };
    let rest = rest.trim_start_matches(['*', '~', '^', '+', '-']);
    let (name, location) = match rest.rsplit_once(' ') {
        Some((name, location)) => (name, location),
        None if rest.contains(':') && !rest.contains('(') => ("", rest),
        None => return (rest, "", 0),
    };
    let name = if name.is_empty() { "(anonymous)" } else { name };
    // `file:line:column` or `file:line`; a file may be a `file://` URL with colons of its own.
    let mut parts = location.rsplitn(3, ':');
    let (last, middle) = (parts.next(), parts.next());
    let numbers = |s: Option<&str>| s.and_then(|s| s.parse::<u32>().ok());
    match (numbers(last), numbers(middle), parts.next()) {
        (Some(_), Some(line), Some(file)) => (name, file, line),
        (Some(line), _, _) => (name, location.rsplit_once(':').map_or(location, |(file, _)| file), line),
        _ => (name, location, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_and_without_prefix() {
        assert_eq!(parse_line("7f714dfc61c0 28c JS:*leafHot /tmp/jit/fib.js:1:17"), Some((0x7f714dfc61c0, 0x28c, "JS:*leafHot /tmp/jit/fib.js:1:17")));
        assert_eq!(parse_line("0x7f00 0x20 void Chain.leaf()"), Some((0x7f00, 0x20, "void Chain.leaf()")));
        assert_eq!(parse_line("zz 10 f"), None);
        assert_eq!(parse_line("1000 10 "), None);
        assert_eq!(parse_line("garbage"), None);
    }

    #[test]
    fn later_lines_win_over_the_ranges_they_overlap() {
        let dir = std::env::temp_dir().join(format!("oxeye-perf-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf-1.map");
        std::fs::write(&path, "1000 100 old\n1080 10 inner\n2000 10 partial-line").unwrap();
        let opened = OpenedMap { file: std::fs::File::open(&path).unwrap(), path: String::new(), bytes: 0 };
        let mut functions = JitFunctions::default();
        let mut map = PerfMap::new(opened, Runtime::Other);
        assert_eq!(map.refresh(&mut functions).unwrap(), 2);
        let name = |map: &PerfMap, functions: &JitFunctions, address| map.lookup(address).map(|id| functions.get(id).name.to_string());
        assert_eq!(name(&map, &functions, 0x1000).as_deref(), Some("old"));
        assert_eq!(name(&map, &functions, 0x1085).as_deref(), Some("inner"));
        assert_eq!(name(&map, &functions, 0x1095).as_deref(), Some("old"));
        assert_eq!(name(&map, &functions, 0x2000), None);
        // The partial line is finished, and new code replaces the old at the same place.
        std::fs::write(&path, "1000 100 old\n1080 10 inner\n2000 10 partial-line\n1000 200 new\nnot a line\n").unwrap();
        assert_eq!(map.refresh(&mut functions).unwrap(), 2);
        assert_eq!(name(&map, &functions, 0x2005).as_deref(), Some("partial-line"));
        assert_eq!(name(&map, &functions, 0x1085).as_deref(), Some("new"));
        assert_eq!(name(&map, &functions, 0x11ff).as_deref(), Some("new"));
        assert_eq!(name(&map, &functions, 0x1200), None);
        assert_eq!((map.len(), map.bad_lines), (2, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn v8_names_split_into_function_file_and_line() {
        assert_eq!(name_parts(Runtime::V8, "JS:*leafHot /tmp/jit/fib.js:1:17"), ("leafHot", "/tmp/jit/fib.js", 1));
        assert_eq!(name_parts(Runtime::V8, "JS:~ file:///srv/app.mjs:40:3"), ("(anonymous)", "file:///srv/app.mjs", 40));
        assert_eq!(name_parts(Runtime::V8, "LazyCompile:*fib /app/fib.js:3"), ("fib", "/app/fib.js", 3));
        assert_eq!(name_parts(Runtime::V8, "Builtin:InterpreterEntryTrampoline"), ("Builtin:InterpreterEntryTrampoline", "", 0));
        assert_eq!(name_parts(Runtime::Other, "JS:*x y:1:2"), ("JS:*x y:1:2", "", 0));
        assert_eq!(name_parts(Runtime::Jvm, "double Chain.leafHot(int)"), ("Chain.leafHot(int)", "", 0));
        assert_eq!(name_parts(Runtime::Jvm, "Interpreter"), ("Interpreter", "", 0));
    }
}
