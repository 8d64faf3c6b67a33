//! End-to-end tests of CPython stacks: the Python workloads of `tests/workloads/python/` under
//! every CPython 3.8–3.13 present (pyenv's shared builds, and the distribution's static one),
//! profiled by the real oxeye. Each native `_PyEval_EvalFrameDefault` frame must give way to
//! the Python frames it runs, named `QUALNAME (FILE:LINE)` (`co_name` before 3.11).
//!
//! Each test runs its scenario for every interpreter, prints one line per interpreter (its
//! figures, or why it failed, with the failing stacks), and fails at the end if any did.
//! `OXEYE_TEST_PYTHONS=3.12,deb3.11` narrows the interpreters (by version or label) when
//! debugging one.

use std::{
    collections::BTreeMap,
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use oxeye_tests::{checks::Check, deadline, root, spawn, Folded, Oxeye, Spawned, Stack};

/// Every test's time for oxeye's start and stop and the workload, per interpreter, with room
/// for a CPU three times slower.
const PER_PYTHON: Duration = Duration::from_secs(60);
/// And once per test.
const BASE: Duration = Duration::from_secs(30);

/// The depth-limit marker: the outermost frame of a walk cut at its limit.
const DEPTH_LIMIT: &str = "[unwind error: depth limit]";
/// The interpreter's native frame that Python frames replace.
const EVAL_FRAME: &str = "_PyEval_EvalFrameDefault";

// ---------------------------------------------------------------------------------------------
// The interpreters.

/// One CPython interpreter on this machine.
#[derive(Debug, Clone)]
struct Python {
    /// `3.11.7` (pyenv) or `deb3.11` (the distribution's, in /usr/bin): names it in messages
    /// and in the process names of whole-system tests.
    label: String,
    major: u32,
    minor: u32,
    /// The interpreter's executable.
    path: PathBuf,
    /// Whether the C functions between Python frames (`builtin_sorted`, `functools_reduce`) have
    /// symbols: pyenv's builds are not stripped; Debian's are.
    static_symbols: bool,
}

impl Python {
    /// `3.11`.
    fn version(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    /// Whether frames are named by `co_qualname` (3.11+) rather than `co_name`.
    fn has_qualnames(&self) -> bool {
        (self.major, self.minor) >= (3, 11)
    }

    /// The process name of the interpreter run directly: its executable's file name.
    fn process_name(&self) -> String {
        self.path.file_name().expect("an interpreter path has a file name").to_string_lossy().into_owned()
    }

    /// Whether `frame` is function `qualname` of `file`: by qualname from 3.11, by the
    /// qualname or its last component before (where frames carry `co_name`).
    fn is(&self, frame: &PyFrame, qualname: &str, file: &str) -> bool {
        frame.file == file && self.names(frame.name, qualname)
    }

    /// Whether a frame's `name` names function `qualname` in this version.
    fn names(&self, name: &str, qualname: &str) -> bool {
        name == qualname || (!self.has_qualnames() && qualname.rsplit('.').next() == Some(name))
    }
}

/// Where pyenv keeps its versions: `$PYENV_ROOT`, `$HOME/.pyenv` or root's.
fn pyenv_versions() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    roots.extend(std::env::var_os("PYENV_ROOT").map(PathBuf::from));
    roots.extend(std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    roots.push(PathBuf::from("/root/.pyenv"));
    roots.into_iter().map(|root| root.join("versions")).collect()
}

/// pyenv's newest CPython `major.minor.N` (no `-dev`, no free-threaded `t` build), if any.
fn pyenv(major: u32, minor: u32) -> Option<Python> {
    let prefix = format!("{major}.{minor}.");
    let mut best: Option<(u32, PathBuf, String)> = None;
    for versions in pyenv_versions() {
        let Ok(entries) = fs::read_dir(&versions) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(patch) = name.strip_prefix(&prefix).and_then(|p| p.parse::<u32>().ok()) else { continue };
            let binary = entry.path().join(format!("bin/python{major}.{minor}"));
            if binary.is_file() && best.as_ref().is_none_or(|(p, _, _)| patch > *p) {
                best = Some((patch, binary, name));
            }
        }
        if best.is_some() {
            break;
        }
    }
    best.map(|(_, path, label)| Python { label, major, minor, path, static_symbols: true })
}

/// The CPython versions oxeye supports.
const SUPPORTED: [(u32, u32); 6] = [(3, 8), (3, 9), (3, 10), (3, 11), (3, 12), (3, 13)];

/// Every supported interpreter present (pyenv's, then /usr/bin's), narrowed by
/// `OXEYE_TEST_PYTHONS`; prints a note for each absent one, panics if none is left.
fn interpreters() -> Vec<Python> {
    let mut found = Vec::new();
    for (major, minor) in SUPPORTED {
        match pyenv(major, minor) {
            Some(python) => found.push(python),
            None => eprintln!("note: no pyenv CPython {major}.{minor} (looked in {:?}): skipped", pyenv_versions()),
        }
    }
    for (major, minor) in SUPPORTED {
        let path = PathBuf::from(format!("/usr/bin/python{major}.{minor}"));
        if path.is_file() {
            found.push(Python { label: format!("deb{major}.{minor}"), major, minor, path, static_symbols: false });
        }
    }
    if let Ok(only) = std::env::var("OXEYE_TEST_PYTHONS") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).filter(|w| !w.is_empty()).collect();
        found.retain(|python| {
            let keep = wanted.iter().any(|w| *w == python.label || *w == python.version());
            if !keep {
                eprintln!("note: CPython {} skipped (OXEYE_TEST_PYTHONS={only})", python.label);
            }
            keep
        });
    }
    assert!(!found.is_empty(), "no CPython 3.8–3.13 to test: none in {:?} nor /usr/bin (or none left by OXEYE_TEST_PYTHONS)", pyenv_versions());
    found
}

/// pyenv's CPython 3.7, 3.6 or 2.7 (the first present): versions oxeye does not support.
fn unsupported_interpreter() -> Option<Python> {
    [(3, 7), (3, 6), (2, 7)].into_iter().find_map(|(major, minor)| pyenv(major, minor))
}

/// Arms the calling test's deadline for `count` interpreters.
fn deadline_for(count: usize) -> oxeye_tests::deadline::Deadline {
    deadline(BASE + PER_PYTHON * count as u32)
}

/// Runs `scenario` for each interpreter (a panic fails that interpreter only), prints one line
/// for each, and panics at the end if any failed.
fn for_each(test: &str, pythons: &[Python], scenario: impl Fn(&Python) -> Check) {
    let mut failed = Vec::new();
    for python in pythons {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| scenario(python))).unwrap_or_else(|payload| {
            let text = payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()));
            Err(format!("panicked: {}", text.unwrap_or_default()))
        });
        match outcome {
            Ok(summary) => eprintln!("{test} CPython {}: {summary}", python.label),
            Err(why) => {
                eprintln!("{test} CPython {}: FAILED: {why}", python.label);
                failed.push(format!("CPython {}: {}", python.label, why.lines().next().unwrap_or_default()));
            }
        }
    }
    assert!(failed.is_empty(), "{test}: {} of {} interpreters failed (details above):\n{}", failed.len(), pythons.len(), failed.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Running the workloads.

/// `tests/workloads/python/NAME`.
fn script(name: &str) -> PathBuf {
    root().join("tests/workloads/python").join(name)
}

/// `exe SCRIPT ARGS`, without the caller's Python environment and without writing bytecode
/// next to the workloads.
fn python_command(exe: &Path, name: &str, args: &[&str]) -> Command {
    let mut command = Command::new(exe);
    command.arg(script(name)).args(args).stdin(Stdio::null());
    for variable in ["PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONOPTIMIZE", "PYTHONINSPECT"] {
        command.env_remove(variable);
    }
    command.env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

fn start_python(exe: &Path, python: &Python, name: &str, args: &[&str]) -> Spawned {
    spawn(&mut python_command(exe, name, args), &format!("{name} under CPython {}", python.label))
}

/// What one profiled run gave.
struct Run {
    folded: Folded,
    /// oxeye's stderr.
    stderr: String,
    /// Where oxeye wrote its outputs.
    out_dir: PathBuf,
    /// The workload's process name in the folded stacks.
    process: String,
    /// CPU seconds the workload used (all its threads).
    cpu_seconds: f64,
}

/// Starts workload `name` with `args`, then oxeye at `rate` Hz on its pid only, and waits for
/// both to end.
fn profile_pid(test: &str, python: &Python, name: &str, args: &[&str], rate: u32) -> Run {
    let mut child = start_python(&python.path, python, name, args);
    let pid = child.id().to_string();
    let rate = rate.to_string();
    let oxeye = Oxeye::start(&format!("{test}-{}", python.label), &["--samples-per-second", &rate, "--pid", &pid]);
    let exited = child.wait();
    assert!(exited.status.success(), "{name} under CPython {} failed: {}", python.label, exited.status);
    let finished = oxeye.wait();
    finished.assert_success();
    Run { folded: finished.folded(), stderr: finished.stderr, out_dir: finished.out_dir, process: python.process_name(), cpu_seconds: exited.cpu_seconds() }
}

/// Starts oxeye on the whole system at `rate` Hz, then workload `name` under a link to the
/// interpreter named `py<label>-<role>` (its process name: unique, like a virtualenv's
/// `python` link), waits for it, and stops oxeye.
fn profile_system(test: &str, python: &Python, role: &str, name: &str, args: &[&str], rate: u32) -> Run {
    let process = format!("py{}-{role}", python.label);
    assert!(process.len() <= 15, "{process} is longer than a process name (15 bytes)");
    let dir = root().join("target/workloads/python");
    fs::create_dir_all(&dir).expect("create target/workloads/python");
    let link = dir.join(&process);
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&python.path, &link).unwrap_or_else(|e| panic!("cannot link {} to {}: {e}", link.display(), python.path.display()));
    let rate = rate.to_string();
    let oxeye = Oxeye::start(&format!("{test}-{}", python.label), &["--samples-per-second", &rate]);
    let mut child = start_python(&link, python, name, args);
    let exited = child.wait();
    assert!(exited.status.success(), "{name} under CPython {} ({}) failed: {}", python.label, link.display(), exited.status);
    let finished = oxeye.stop();
    finished.assert_success();
    Run { folded: finished.folded(), stderr: finished.stderr, out_dir: finished.out_dir, process, cpu_seconds: exited.cpu_seconds() }
}

impl Run {
    /// `check`, naming where oxeye's outputs are when it failed.
    fn outputs(&self, check: Check) -> Check {
        check.map_err(|why| format!("{}\n(oxeye's outputs and log: {})", why.trim_end(), self.out_dir.display()))
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the stacks.

/// One Python frame of a stack: `NAME (FILE:LINE)`.
#[derive(Debug, Clone, Copy)]
struct PyFrame<'a> {
    name: &'a str,
    file: &'a str,
    line: u32,
    /// Where it is among the stack's user frames (root first).
    index: usize,
}

/// `NAME (FILE:LINE)` as a Python frame: FILE ends in `.py` or is `<…>` (frozen modules).
fn parse_python(frame: &str) -> Option<(&str, &str, u32)> {
    let (name, location) = frame.strip_suffix(')')?.rsplit_once(" (")?;
    let (file, line) = location.rsplit_once(':')?;
    let line = line.parse().ok()?;
    (!name.is_empty() && (file.ends_with(".py") || file.starts_with('<'))).then_some((name, file, line))
}

/// A stack's user frames and, among them, its Python frames (both root first).
struct Walked<'a> {
    user: Vec<&'a str>,
    python: Vec<PyFrame<'a>>,
}

impl<'a> Walked<'a> {
    fn of(stack: &'a Stack) -> Self {
        let user = stack.user_frames();
        let python = user
            .iter()
            .enumerate()
            .filter_map(|(index, frame)| parse_python(frame).map(|(name, file, line)| PyFrame { name, file, line, index }))
            .collect();
        Walked { user, python }
    }

    /// The innermost Python frame.
    fn innermost(&self) -> Option<&PyFrame<'a>> {
        self.python.last()
    }

    /// The Python frames' names, root first, for messages: `<module>;main;…`.
    fn python_names(&self) -> String {
        if self.python.is_empty() {
            return "no Python frames".to_owned();
        }
        self.python.iter().map(|f| if f.file.ends_with(".py") && !f.file.starts_with('<') { format!("{} ({})", f.name, f.file) } else { f.name.to_owned() }).collect::<Vec<_>>().join(";")
    }

    /// The native frames strictly between user frames `outer` and `inner`.
    fn native_between(&self, outer: usize, inner: usize) -> &[&'a str] {
        &self.user[outer + 1..inner]
    }

    /// What every Python stack must be: no `_PyEval_EvalFrameDefault` left in place of
    /// Python frames, no unwind error other than the depth limit, and, when `from_start`,
    /// a native walk from `_start`.
    fn sound(&self, from_start: bool) -> Result<(), String> {
        if self.user.iter().any(|f| f.starts_with(EVAL_FRAME)) {
            return Err(format!("{EVAL_FRAME} left in the stack"));
        }
        if let Some(error) = self.user.iter().find(|f| f.starts_with("[unwind error") && **f != DEPTH_LIMIT) {
            return Err(format!("unwind error: {error}"));
        }
        if from_start && self.user.first() != Some(&"_start") {
            return Err(format!("native walk does not reach _start (outermost: {})", self.user.first().unwrap_or(&"nothing")));
        }
        Ok(())
    }
}

/// The lines of each function of a workload, by qualname: `def` line to its last line.
struct Source {
    file: &'static str,
    functions: BTreeMap<String, (u32, u32)>,
}

impl Source {
    /// Reads `tests/workloads/python/FILE`: functions and classes by indentation (the
    /// workloads nest no function in another).
    fn read(file: &'static str) -> Source {
        let text = fs::read_to_string(script(file)).unwrap_or_else(|e| panic!("cannot read {file}: {e}"));
        let mut functions = BTreeMap::new();
        let mut open: Vec<(usize, String, u32)> = Vec::new();
        let mut last = 0;
        for (number, line) in (1..).zip(text.lines()) {
            let code = line.trim_start();
            if code.is_empty() || code.starts_with('#') {
                continue;
            }
            let indent = line.len() - code.len();
            while open.last().is_some_and(|(at, _, _)| *at >= indent) {
                let (_, name, first) = open.pop().expect("checked above");
                functions.insert(name, (first, last));
            }
            last = number;
            let header = code.strip_prefix("async def ").or_else(|| code.strip_prefix("def ")).or_else(|| code.strip_prefix("class "));
            if let Some(header) = header {
                let name = header.split(['(', ':']).next().unwrap_or_default().trim();
                let qualname = open.last().map_or_else(|| name.to_owned(), |(_, outer, _)| format!("{outer}.{name}"));
                open.push((indent, qualname, number));
            }
        }
        for (_, name, first) in open {
            functions.insert(name, (first, last));
        }
        functions.insert("<module>".to_owned(), (1, last));
        Source { file, functions }
    }

    /// Whether each of the workload's frames is at a line of its function.
    fn lines_in_place(&self, python: &Python, walked: &Walked) -> Result<(), String> {
        for frame in walked.python.iter().filter(|f| f.file == self.file) {
            let range = self.functions.iter().find(|(qualname, _)| python.names(frame.name, qualname)).map(|(_, range)| *range);
            match range {
                Some((first, last)) if (first..=last).contains(&frame.line) => {}
                Some((first, last)) => return Err(format!("{} at line {}, outside its lines {first}–{last}", frame.name, frame.line)),
                None => return Err(format!("{} is no function of {}", frame.name, self.file)),
            }
        }
        Ok(())
    }
}

/// Whether the stack's Python frames are exactly `expected` (qualname, file), root first.
fn python_frames_are(python: &Python, walked: &Walked, expected: &[(&str, &str)]) -> Result<(), String> {
    let same = walked.python.len() == expected.len() && walked.python.iter().zip(expected).all(|(frame, (name, file))| python.is(frame, name, file));
    if same {
        Ok(())
    } else {
        Err(format!("Python frames {}", walked.python_names()))
    }
}

/// Samples sorted into those a check looks at, those of them that pass, and why the others
/// failed (by reason, with the stacks).
#[derive(Default)]
struct Tally<'a> {
    considered: u64,
    passed: u64,
    reasons: BTreeMap<String, u64>,
    failing: Vec<&'a Stack>,
}

impl<'a> Tally<'a> {
    fn add(&mut self, stack: &'a Stack, verdict: Result<(), String>) {
        self.considered += stack.count;
        match verdict {
            Ok(()) => self.passed += stack.count,
            Err(reason) => {
                *self.reasons.entry(reason).or_default() += stack.count;
                self.failing.push(stack);
            }
        }
    }

    /// Share of the considered samples that passed.
    fn share(&self) -> f64 {
        self.passed as f64 / self.considered.max(1) as f64
    }

    /// Why samples failed, most common first, and the hottest failing stacks.
    fn explain(&self) -> String {
        let mut reasons: Vec<_> = self.reasons.iter().collect();
        reasons.sort_by_key(|(_, count)| std::cmp::Reverse(**count));
        let mut text: String = reasons.iter().take(10).map(|(reason, count)| format!("  {count:>5} × {reason}\n")).collect();
        text.push_str(&dump(&self.failing, 10));
        text
    }
}

/// Failing stacks for messages, hottest first, repeats folded (`recurse (…) ×127`).
fn dump(stacks: &[&Stack], most: usize) -> String {
    let mut stacks = stacks.to_vec();
    stacks.sort_by_key(|s| std::cmp::Reverse(s.count));
    stacks.iter().take(most).map(|s| format!("{:>5} {}\n", s.count, compact(&s.frames))).collect()
}

/// Frames joined by `;`, with runs of a repeated group of up to 8 frames shown once `×N`.
fn compact(frames: &[String]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    'outer: while i < frames.len() {
        for period in 1..=8 {
            let group = &frames[i..(i + period).min(frames.len())];
            let mut repeats = 1;
            while frames.get(i + repeats * period..i + (repeats + 1) * period) == Some(group) {
                repeats += 1;
            }
            if repeats >= 3 {
                parts.push(format!("[{}] ×{repeats}", group.join(";")));
                i += repeats * period;
                continue 'outer;
            }
        }
        parts.push(frames[i].clone());
        i += 1;
    }
    parts.join(";")
}

fn ensure(condition: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(why())
    }
}

/// At least `share` of the samples `cpu_seconds` of CPU give at `rate` Hz (the workload ran
/// a while before oxeye started on its pid, and a slow machine gives it less CPU).
fn enough_samples(total: u64, cpu_seconds: f64, rate: u32, share: f64) -> Check {
    let expected = rate as f64 * cpu_seconds;
    ensure(total as f64 >= expected * share, || format!("only {total} samples for {cpu_seconds:.2} CPU seconds at {rate} Hz (expected {expected:.0}, at least {:.0})", expected * share))?;
    Ok(format!("{total} samples (expected {expected:.0})"))
}

fn percent(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

/// The hottest stacks of a process, for failures that concern all of them.
fn process_dump(folded: &Folded, process: &str) -> String {
    dump(&folded.process(process).collect::<Vec<_>>(), 12)
}

/// oxeye warned about no interpreter version: it supports this one.
fn no_unsupported_warning(stderr: &str) -> Result<(), String> {
    match stderr.lines().find(|line| line.contains("is not supported")) {
        Some(line) => Err(format!("oxeye says a supported interpreter is not: {line}")),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// The checks: each reads one run's stacks (tested on hand-written stacks below).

/// How strict [`check_chain`] is.
struct ChainExpectations {
    rate: u32,
    /// Least share of the process's samples in a leaf.
    in_leaf: f64,
    /// Least share of leaf samples with the whole chain.
    whole: f64,
    /// Check leaf_hot's share (needs thousands of samples).
    split: bool,
}

/// `chain.py`: the samples in a leaf carry `<module> → main → outer → middle → inner →
/// Worker.leaf_*` as their Python frames, each at a line of its function, under native frames
/// from `_start` and with no `_PyEval_EvalFrameDefault` left; leaf_hot has 75% ± 5 of them.
fn check_chain(python: &Python, run: &Run, expect: &ChainExpectations) -> Check {
    let source = Source::read("chain.py");
    let (folded, process) = (&run.folded, run.process.as_str());
    let total = folded.samples(process);
    let counted = enough_samples(total, run.cpu_seconds, expect.rate, 0.5).map_err(|why| format!("{why}:\n{}", process_dump(folded, process)))?;
    no_unsupported_warning(&run.stderr)?;
    let mut tally = Tally::default();
    let mut hot = 0;
    for stack in folded.process(process) {
        let walked = Walked::of(stack);
        let leaf = walked.python.iter().find(|f| python.is(f, "Worker.leaf_hot", "chain.py") || python.is(f, "Worker.leaf_cold", "chain.py"));
        let Some(leaf) = leaf else { continue };
        let leaf_name = if python.is(leaf, "Worker.leaf_hot", "chain.py") { "Worker.leaf_hot" } else { "Worker.leaf_cold" };
        if leaf_name == "Worker.leaf_hot" {
            hot += stack.count;
        }
        let expected = [("<module>", "chain.py"), ("main", "chain.py"), ("outer", "chain.py"), ("middle", "chain.py"), ("inner", "chain.py"), (leaf_name, "chain.py")];
        let verdict = python_frames_are(python, &walked, &expected).and_then(|()| source.lines_in_place(python, &walked)).and_then(|()| walked.sound(true));
        tally.add(stack, verdict);
    }
    let leaf_share = percent(tally.considered, total);
    let hot_share = percent(hot, tally.considered);
    let summary = format!("{counted}, {leaf_share:.1}% in a leaf, {:.1}% of those with the whole chain, leaf_hot {hot_share:.1}%", tally.share() * 100.0);
    ensure(leaf_share >= expect.in_leaf * 100.0, || {
        format!("{summary}: only {leaf_share:.1}% of {total} samples have a Worker.leaf_hot/leaf_cold (chain.py) frame, expected {:.0}%:\n{}", expect.in_leaf * 100.0, process_dump(folded, process))
    })?;
    ensure(tally.share() >= expect.whole, || {
        format!("{summary}: {:.1}% of {} leaf samples carry <module>→main→outer→middle→inner→leaf from _start, expected {:.0}%:\n{}", tally.share() * 100.0, tally.considered, expect.whole * 100.0, tally.explain())
    })?;
    if expect.split {
        ensure((hot_share - 75.0).abs() <= 5.0, || format!("{summary}: leaf_hot has {hot_share:.1}% of {} leaf samples, expected 75 ± 5:\n{}", tally.considered, process_dump(folded, process)))?;
    }
    Ok(summary)
}

/// `threads.py`: no stack mixes two threads' chains; each thread has a fair share of the leaf
/// samples, and 90% of them carry `Thread._bootstrap → _bootstrap_inner → run →
/// chain_X_outer → chain_X_middle → chain_X_leaf`.
fn check_threads(python: &Python, run: &Run, rate: u32) -> Check {
    let (folded, process) = (&run.folded, run.process.as_str());
    let source = Source::read("threads.py");
    let total = folded.samples(process);
    let counted = enough_samples(total, run.cpu_seconds, rate, 0.5).map_err(|why| format!("{why}:\n{}", process_dump(folded, process)))?;
    no_unsupported_warning(&run.stderr)?;
    let mut tally = Tally::default();
    let mut mixed: Vec<&Stack> = Vec::new();
    let mut per_thread: BTreeMap<char, u64> = BTreeMap::new();
    for stack in folded.process(process) {
        let walked = Walked::of(stack);
        let letters: Vec<char> =
            walked.python.iter().filter(|f| f.file == "threads.py").filter_map(|f| f.name.strip_prefix("chain_").and_then(|rest| rest.chars().next())).collect();
        let Some(&letter) = letters.first() else { continue };
        if letters.iter().any(|l| *l != letter) {
            mixed.push(stack);
            continue;
        }
        let leaf = format!("chain_{letter}_leaf");
        if !walked.python.iter().any(|f| python.is(f, &leaf, "threads.py")) {
            continue;
        }
        *per_thread.entry(letter).or_default() += stack.count;
        let (outer, middle) = (format!("chain_{letter}_outer"), format!("chain_{letter}_middle"));
        let expected = [
            ("Thread._bootstrap", "threading.py"),
            ("Thread._bootstrap_inner", "threading.py"),
            ("Thread.run", "threading.py"),
            (outer.as_str(), "threads.py"),
            (middle.as_str(), "threads.py"),
            (leaf.as_str(), "threads.py"),
        ];
        let verdict = python_frames_are(python, &walked, &expected).and_then(|()| source.lines_in_place(python, &walked)).and_then(|()| walked.sound(false));
        tally.add(stack, verdict);
    }
    let thread_share = |letter: char| percent(per_thread.get(&letter).copied().unwrap_or(0), tally.considered);
    let shares: Vec<String> = ['a', 'b', 'c'].iter().map(|&l| format!("{l} {:.1}%", thread_share(l))).collect();
    let mixed_samples: u64 = mixed.iter().map(|s| s.count).sum();
    let summary = format!(
        "{counted}, {:.1}% in a leaf, {:.1}% of those with their whole chain, threads {}, {mixed_samples} mixed",
        percent(tally.considered, total),
        tally.share() * 100.0,
        shares.join(" ")
    );
    // Never another thread's frames: that would be a walk of the wrong thread's state.
    ensure(mixed.is_empty(), || format!("{summary}: stacks mix two threads' chains:\n{}", dump(&mixed, 10)))?;
    ensure(percent(tally.considered, total) >= 70.0, || format!("{summary}: too few samples in a chain_*_leaf:\n{}", process_dump(folded, process)))?;
    for letter in ['a', 'b', 'c'] {
        // A third each when the GIL is fair; measured 31–35%.
        ensure(thread_share(letter) >= 15.0, || format!("{summary}: thread {letter} has {:.1}% of the leaf samples, expected about 33%:\n{}", thread_share(letter), process_dump(folded, process)))?;
    }
    ensure(tally.share() >= 0.90, || {
        format!(
            "{summary}: {:.1}% of {} leaf samples carry Thread._bootstrap→_bootstrap_inner→run→chain_X_outer→chain_X_middle→chain_X_leaf:\n{}",
            tally.share() * 100.0,
            tally.considered,
            tally.explain()
        )
    })?;
    Ok(summary)
}

/// `callbacks.py`: the samples in keyfunc (reducer) go `<module> → main → caller →` native
/// frames (naming sorted's (reduce's) C code where the interpreter has their symbols) `→
/// keyfunc` (`reducer`), 90% of them; each callback has at least 20% of the samples.
fn check_callbacks(python: &Python, run: &Run, rate: u32) -> Check {
    let (folded, process) = (&run.folded, run.process.as_str());
    let source = Source::read("callbacks.py");
    let total = folded.samples(process);
    let mut summary = enough_samples(total, run.cpu_seconds, rate, 0.5).map_err(|why| format!("{why}:\n{}", process_dump(folded, process)))?;
    no_unsupported_warning(&run.stderr)?;
    for (callback, c_code) in [("keyfunc", "sort"), ("reducer", "reduce")] {
        let mut tally = Tally::default();
        let mut natives: BTreeMap<String, u64> = BTreeMap::new();
        for stack in folded.process(process) {
            let walked = Walked::of(stack);
            if !walked.innermost().is_some_and(|f| python.is(f, callback, "callbacks.py")) {
                continue;
            }
            let expected = [("<module>", "callbacks.py"), ("main", "callbacks.py"), ("caller", "callbacks.py"), (callback, "callbacks.py")];
            let verdict = python_frames_are(python, &walked, &expected).and_then(|()| {
                let between = walked.native_between(walked.python[2].index, walked.python[3].index);
                *natives.entry(between.join(";")).or_default() += stack.count;
                ensure(!between.is_empty(), || format!("no native frame between caller and {callback}"))?;
                ensure(!python.static_symbols || between.iter().any(|f| f.contains(c_code)), || format!("no native frame naming {c_code:?} between caller and {callback}: {}", between.join(";")))?;
                source.lines_in_place(python, &walked)?;
                walked.sound(true)
            });
            tally.add(stack, verdict);
        }
        let through = natives.iter().max_by_key(|(_, count)| **count).map_or("-", |(natives, _)| natives.as_str()).to_owned();
        let share = percent(tally.considered, total);
        summary = format!("{summary}, {callback} {share:.1}% ({:.1}% caller→C→{callback}, mostly through {through})", tally.share() * 100.0);
        // Measured: about half the time in each callback.
        ensure(share >= 20.0, || format!("{summary}: only {share:.1}% of {total} samples have {callback} as their innermost Python frame:\n{}", process_dump(folded, process)))?;
        ensure(tally.share() >= 0.90, || format!("{summary}: {:.1}% of {} {callback} samples go <module>→main→caller→native C→{callback}:\n{}", tally.share() * 100.0, tally.considered, tally.explain()))?;
    }
    Ok(summary)
}

/// `generators.py`: the samples in produce go `<module> → main → consume → produce`; those in
/// compute go `<module> → main →` asyncio's frames `→ Handle._run →` native (the C task step)
/// `→ handler → compute`; 90% of each, and each has at least 20% of the samples.
fn check_generators(python: &Python, run: &Run, rate: u32) -> Check {
    let (folded, process) = (&run.folded, run.process.as_str());
    let source = Source::read("generators.py");
    let total = folded.samples(process);
    let counted = enough_samples(total, run.cpu_seconds, rate, 0.5).map_err(|why| format!("{why}:\n{}", process_dump(folded, process)))?;
    no_unsupported_warning(&run.stderr)?;
    let (mut generator, mut coroutine) = (Tally::default(), Tally::default());
    for stack in folded.process(process) {
        let walked = Walked::of(stack);
        let Some(innermost) = walked.innermost() else { continue };
        if python.is(innermost, "produce", "generators.py") {
            let expected = [("<module>", "generators.py"), ("main", "generators.py"), ("consume", "generators.py"), ("produce", "generators.py")];
            generator.add(stack, python_frames_are(python, &walked, &expected).and_then(|()| source.lines_in_place(python, &walked)).and_then(|()| walked.sound(true)));
        } else if python.is(innermost, "compute", "generators.py") {
            coroutine.add(stack, coroutine_stack(python, &walked).and_then(|()| source.lines_in_place(python, &walked)).and_then(|()| walked.sound(true)));
        }
    }
    let summary = format!(
        "{counted}, produce {:.1}% ({:.1}% under consume), compute {:.1}% ({:.1}% under handler under the event loop)",
        percent(generator.considered, total),
        generator.share() * 100.0,
        percent(coroutine.considered, total),
        coroutine.share() * 100.0
    );
    for (what, tally, path) in [("produce", &generator, "<module>→main→consume→produce"), ("compute", &coroutine, "<module>→main→asyncio…→Handle._run→C→handler→compute")] {
        // Measured: the two kinds of round take about the same time.
        ensure(percent(tally.considered, total) >= 20.0, || format!("{summary}: too few samples with {what} as their innermost Python frame:\n{}", process_dump(folded, process)))?;
        ensure(tally.share() >= 0.90, || format!("{summary}: {:.1}% of {} {what} samples go {path}:\n{}", tally.share() * 100.0, tally.considered, tally.explain()))?;
    }
    Ok(summary)
}

/// The Python frames of a sample in `compute`: `<module>`, `main`, only asyncio's frames down
/// to `Handle._run` (events.py), then `handler`, `compute`, with native frames (the C task
/// step) between `Handle._run` and `handler`.
fn coroutine_stack(python: &Python, walked: &Walked) -> Result<(), String> {
    let frames = &walked.python;
    let wrong = || format!("Python frames {}", walked.python_names());
    let n = frames.len();
    ensure(n >= 5, wrong)?;
    ensure(python.is(&frames[0], "<module>", "generators.py") && python.is(&frames[1], "main", "generators.py"), wrong)?;
    ensure(python.is(&frames[n - 1], "compute", "generators.py") && python.is(&frames[n - 2], "handler", "generators.py"), wrong)?;
    ensure(python.is(&frames[n - 3], "Handle._run", "events.py"), wrong)?;
    ensure(frames[2..n - 2].iter().all(|f| f.file != "generators.py"), wrong)?;
    ensure(!walked.native_between(frames[n - 3].index, frames[n - 2].index).is_empty(), || "no native frame (the C task step) between Handle._run and handler".to_owned())
}

/// `recursion.py` (500 Python frames deep): the samples in bottom have 128 Python frames
/// (3.11+), bottom under recurse, and one depth-limit marker outer of them all; 90% of them,
/// and 80% of the samples are in bottom. Before 3.11 each Python call is also 4–5 native
/// frames, so the native walk reaches its own 128-frame limit first and uses most of the
/// kernel's tail-call budget: the Python walk then gets at least 40 frames.
const MIN_PYTHON_FRAMES_AFTER_DEEP_NATIVE: usize = 40;
fn check_recursion(python: &Python, run: &Run, rate: u32) -> Check {
    let (folded, process) = (&run.folded, run.process.as_str());
    let source = Source::read("recursion.py");
    let total = folded.samples(process);
    let counted = enough_samples(total, run.cpu_seconds, rate, 0.5).map_err(|why| format!("{why}:\n{}", process_dump(folded, process)))?;
    no_unsupported_warning(&run.stderr)?;
    let mut tally = Tally::default();
    for stack in folded.process(process) {
        let walked = Walked::of(stack);
        if !walked.innermost().is_some_and(|f| python.is(f, "bottom", "recursion.py")) {
            continue;
        }
        let verdict = (|| {
            let frames = &walked.python;
            let n = frames.len();
            let enough = if python.minor >= 11 { n == 128 } else { (MIN_PYTHON_FRAMES_AFTER_DEEP_NATIVE..=128).contains(&n) };
            ensure(enough, || format!("{n} Python frames"))?;
            ensure(frames[..n - 1].iter().all(|f| python.is(f, "recurse", "recursion.py")), || format!("Python frames {}", walked.python_names()))?;
            let markers: Vec<usize> = walked.user.iter().enumerate().filter(|(_, f)| **f == DEPTH_LIMIT).map(|(i, _)| i).collect();
            ensure(markers.len() == 1 && markers[0] < frames[0].index, || {
                format!("{} {DEPTH_LIMIT} frames, the first at user frame {:?} (the outermost Python frame at {})", markers.len(), markers.first(), frames[0].index)
            })?;
            source.lines_in_place(python, &walked)?;
            walked.sound(false)
        })();
        tally.add(stack, verdict);
    }
    let share = percent(tally.considered, total);
    let summary = format!("{counted}, {share:.1}% in bottom, {:.1}% of those with the Python frames up to the limit and the depth marker", tally.share() * 100.0);
    ensure(share >= 80.0, || format!("{summary}: too few samples with bottom as their innermost Python frame:\n{}", process_dump(folded, process)))?;
    ensure(tally.share() >= 0.90, || format!("{summary}: {:.1}% of {} bottom samples have recurse … → bottom up to the limit, under {DEPTH_LIMIT}:\n{}", tally.share() * 100.0, tally.considered, tally.explain()))?;
    Ok(summary)
}

/// `short.py` (300 ms): 60% of its samples carry `<module> → short_lived_leaf` from `_start`.
fn check_short(python: &Python, run: &Run, rate: u32) -> Check {
    let (folded, process) = (&run.folded, run.process.as_str());
    let source = Source::read("short.py");
    let total = folded.samples(process);
    let counted = enough_samples(total, run.cpu_seconds, rate, 0.5).map_err(|why| format!("{process}: {why}:\n{}", process_dump(folded, process)))?;
    no_unsupported_warning(&run.stderr)?;
    let mut tally = Tally::default();
    for stack in folded.process(process) {
        let walked = Walked::of(stack);
        let expected = [("<module>", "short.py"), ("short_lived_leaf", "short.py")];
        tally.add(stack, python_frames_are(python, &walked, &expected).and_then(|()| source.lines_in_place(python, &walked)).and_then(|()| walked.sound(true)));
    }
    let summary = format!("{counted}, {:.1}% <module>→short_lived_leaf", tally.share() * 100.0);
    // The interpreter's start-up (a tenth of the process on a slow CPU) has no Python frames
    // yet, nor has the time before oxeye knows the interpreter.
    ensure(tally.share() >= 0.60, || format!("{summary}: {:.1}% of {total} samples of the 300 ms process carry <module>→short_lived_leaf:\n{}", tally.share() * 100.0, tally.explain()))?;
    Ok(summary)
}

/// An unsupported interpreter running `chain.py`: no Python frame anywhere, the interpreter's
/// native eval function in half the samples, and one line of oxeye's saying the version is
/// not supported.
fn check_unsupported(python: &Python, run: &Run, rate: u32) -> Check {
    let (folded, process) = (&run.folded, run.process.as_str());
    let total = folded.samples(process);
    let counted = enough_samples(total, run.cpu_seconds, rate, 0.5).map_err(|why| format!("{why}:\n{}", process_dump(folded, process)))?;
    let eval = if python.major == 2 { "PyEval_EvalFrameEx" } else { EVAL_FRAME };
    let python_like: Vec<&Stack> = folded.stacks.iter().filter(|s| s.frames.iter().any(|f| parse_python(f).is_some())).collect();
    let in_eval: u64 = folded.process(process).filter(|s| s.user_frames().iter().any(|f| f.starts_with(eval))).map(|s| s.count).sum();
    let warnings: Vec<&str> = run.stderr.lines().filter(|line| line.contains("is not supported")).collect();
    let summary = format!("{counted}, {} stacks with Python frames, {:.1}% in {eval}, warning {:?}", python_like.len(), percent(in_eval, total), warnings.first().unwrap_or(&""));
    ensure(python_like.is_empty(), || format!("{summary}: Python frames from an unsupported interpreter:\n{}", dump(&python_like, 10)))?;
    ensure(percent(in_eval, total) >= 50.0, || format!("{summary}: the interpreter's native {eval} frames are missing:\n{}", process_dump(folded, process)))?;
    let version = format!("CPython {}", python.version());
    ensure(warnings.len() == 1 && warnings[0].contains(&version), || format!("{summary}: expected one line saying {version} is not supported:\n{}", run.stderr))?;
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn python_chain_is_whole_and_split_75_25() {
    let pythons = interpreters();
    let _deadline = deadline_for(pythons.len());
    for_each("python chain", &pythons, |python| {
        // 499 Hz: over a thousand leaf samples even on a slow CPU, so 75/25 ± 5 is several
        // standard deviations wide.
        let rate = 499;
        let run = profile_pid("python-chain", python, "chain.py", &["5"], rate);
        run.outputs(check_chain(python, &run, &ChainExpectations { rate, in_leaf: 0.90, whole: 0.95, split: true }))
    });
}

#[test]
fn python_threads_each_show_their_own_chain() {
    let pythons = interpreters();
    let _deadline = deadline_for(pythons.len());
    for_each("python threads", &pythons, |python| {
        let rate = 199;
        let run = profile_pid("python-threads", python, "threads.py", &["5"], rate);
        run.outputs(check_threads(python, &run, rate))
    });
}

#[test]
fn python_callbacks_show_python_under_c_under_python() {
    let pythons = interpreters();
    let _deadline = deadline_for(pythons.len());
    for_each("python callbacks", &pythons, |python| {
        let rate = 199;
        let run = profile_pid("python-callbacks", python, "callbacks.py", &["4"], rate);
        run.outputs(check_callbacks(python, &run, rate))
    });
}

#[test]
fn python_generators_and_coroutines_sit_under_their_callers() {
    let pythons = interpreters();
    let _deadline = deadline_for(pythons.len());
    for_each("python generators", &pythons, |python| {
        let rate = 199;
        let run = profile_pid("python-generators", python, "generators.py", &["4"], rate);
        run.outputs(check_generators(python, &run, rate))
    });
}

#[test]
fn python_deep_recursion_is_cut_at_128_frames_with_the_depth_marker() {
    let pythons = interpreters();
    let _deadline = deadline_for(pythons.len());
    for_each("python recursion", &pythons, |python| {
        let rate = 99;
        let run = profile_pid("python-recursion", python, "recursion.py", &["4"], rate);
        run.outputs(check_recursion(python, &run, rate))
    });
}

#[test]
fn python_process_started_after_oxeye_has_python_frames() {
    let pythons = interpreters();
    let _deadline = deadline_for(pythons.len());
    for_each("python started after oxeye", &pythons, |python| {
        // The whole system: oxeye learns of the interpreter when it starts.
        let rate = 199;
        let run = profile_system("python-after", python, "after", "chain.py", &["3"], rate);
        // Its first moments may pass before oxeye knows the interpreter: a little less strict.
        run.outputs(check_chain(python, &run, &ChainExpectations { rate, in_leaf: 0.80, whole: 0.90, split: false }))
    });
}

#[test]
fn python_300ms_process_has_python_frames() {
    let pythons = interpreters();
    let _deadline = deadline_for(pythons.len());
    for_each("python 300 ms process", &pythons, |python| {
        // 499 Hz: 150 samples in 300 ms of CPU.
        let rate = 499;
        let run = profile_system("python-short", python, "short", "short.py", &["0.3"], rate);
        run.outputs(check_short(python, &run, rate))
    });
}

#[test]
fn python_unsupported_version_gets_native_frames_and_one_warning() {
    let Some(python) = unsupported_interpreter() else {
        eprintln!("note: no pyenv CPython 3.7, 3.6 or 2.7 (looked in {:?}): the unsupported-version test is skipped", pyenv_versions());
        return;
    };
    let _deadline = deadline_for(1);
    for_each("python unsupported version", std::slice::from_ref(&python), |python| {
        let rate = 99;
        let run = profile_pid("python-unsupported", python, "chain.py", &["3"], rate);
        run.outputs(check_unsupported(python, &run, rate))
    });
}
// ---------------------------------------------------------------------------------------------
// The readers above, on stacks written by hand.

#[cfg(test)]
mod readers {
    use super::*;

    fn python(minor: u32) -> Python {
        Python { label: format!("3.{minor}.0"), major: 3, minor, path: PathBuf::from(format!("/x/python3.{minor}")), static_symbols: true }
    }

    /// A run of `process` that gave folded `text`, with `cpu_seconds` of CPU.
    fn run(text: &str, process: &str, cpu_seconds: f64) -> Run {
        Run { folded: Folded::read_str(text), stderr: String::new(), out_dir: PathBuf::new(), process: process.to_owned(), cpu_seconds }
    }

    /// The line of `file` (a workload) holding `text`, the `nth` such (from 0).
    fn line_of(file: &str, text: &str, nth: usize) -> u32 {
        let source = fs::read_to_string(script(file)).unwrap();
        (1..).zip(source.lines()).filter(|(_, l)| l.contains(text)).map(|(n, _)| n).nth(nth).unwrap_or_else(|| panic!("{text:?} not in {file}"))
    }

    #[test]
    fn python_frames_parse_and_native_ones_do_not() {
        assert_eq!(parse_python("Worker.leaf_hot (chain.py:12)"), Some(("Worker.leaf_hot", "chain.py", 12)));
        assert_eq!(parse_python("_find_and_load (<frozen importlib._bootstrap>:1176)"), Some(("_find_and_load", "<frozen importlib._bootstrap>", 1176)));
        for native in ["main", "Stage<3>::process(Leaf&, std::function<unsigned long ()> const&)", "libc.so.6+0x1234", "[unwind error: depth limit]", "f (x.c:3)"] {
            assert_eq!(parse_python(native), None, "{native}");
        }
    }

    #[test]
    fn names_match_by_qualname_from_3_11_and_by_name_before() {
        let frame = |name| PyFrame { name, file: "chain.py", line: 1, index: 0 };
        assert!(python(11).is(&frame("Worker.leaf_hot"), "Worker.leaf_hot", "chain.py"));
        assert!(!python(11).is(&frame("leaf_hot"), "Worker.leaf_hot", "chain.py"));
        assert!(python(10).is(&frame("leaf_hot"), "Worker.leaf_hot", "chain.py"));
        assert!(python(10).is(&frame("Worker.leaf_hot"), "Worker.leaf_hot", "chain.py"));
        assert!(!python(10).is(&frame("leaf_hot"), "Worker.leaf_hot", "other.py"));
    }

    #[test]
    fn workload_sources_give_each_function_its_lines() {
        let source = Source::read("chain.py");
        let (first, last) = source.functions["Worker.leaf_hot"];
        assert!(first < last && source.functions["Worker.leaf_cold"].0 > last, "{:?}", source.functions);
        assert!(source.functions.contains_key("main") && source.functions.contains_key("Worker"));
        for file in ["threads.py", "callbacks.py", "generators.py", "recursion.py", "short.py"] {
            assert!(Source::read(file).functions.len() >= 2, "{file}");
        }
        assert!(Source::read("generators.py").functions.contains_key("handler"));
    }

    #[test]
    fn the_chain_check_takes_whole_stacks_and_rejects_others() {
        let line = |text| line_of("chain.py", text, 0);
        let (module, main, outer, middle) = (line("main(float(sys.argv[1]))"), line("outer(worker, ROUND)"), line("    middle(worker, n)"), line("    inner(worker, n)"));
        let (hot_call, cold_call) = (line("worker.leaf_hot(3 * n)"), line("worker.leaf_cold(n)"));
        let (hot, cold) = (line_of("chain.py", "x = (x * 1103515245", 0), line_of("chain.py", "x = (x * 1103515245", 1));
        let prefix = format!("_start;__libc_start_main;main;Py_RunMain;<module> (chain.py:{module});PyObject_Call;main (chain.py:{main});outer (chain.py:{outer});middle (chain.py:{middle})");
        let text = format!(
            "python3.12;{prefix};inner (chain.py:{hot_call});Worker.leaf_hot (chain.py:{hot});long_mul 1500\n\
             python3.12;{prefix};inner (chain.py:{cold_call});Worker.leaf_cold (chain.py:{cold}) 500\n\
             python3.12;_start;main;Py_RunMain;_PyEval_EvalFrameDefault 20\n"
        );
        let expect = ChainExpectations { rate: 499, in_leaf: 0.90, whole: 0.95, split: true };
        let result = check_chain(&python(12), &run(&text, "python3.12", 4.0), &expect);
        assert!(result.is_ok(), "{result:?}");
        assert!(check_chain(&python(12), &run(&text, "python3.12", 10.0), &expect).is_err(), "too few samples for 10 CPU seconds");
        // Before 3.11, the method is named leaf_hot.
        let old = text.replace("Worker.leaf_", "leaf_").replace("python3.12", "python3.10");
        assert!(check_chain(&python(10), &run(&old, "python3.10", 4.0), &expect).is_ok());
        assert!(check_chain(&python(12), &run(&old.replace("python3.10", "python3.12"), "python3.12", 4.0), &expect).is_err(), "3.12 names it Worker.leaf_hot");
        // An eval frame left in place, the wrong order, a line outside the function, a walk
        // that stops early, a skewed split: all fail.
        for wrong in [
            text.replace("middle (chain.py", "_PyEval_EvalFrameDefault;middle (chain.py"),
            text.replace(&format!("outer (chain.py:{outer});middle (chain.py:{middle})"), &format!("middle (chain.py:{middle});outer (chain.py:{outer})")),
            text.replace(&format!("Worker.leaf_hot (chain.py:{hot})"), "Worker.leaf_hot (chain.py:2)"),
            text.replace("_start;__libc_start_main;", "[unwind error: stack read failed];"),
            text.replace(" 500\n", " 1500\n"),
        ] {
            assert!(check_chain(&python(12), &run(&wrong, "python3.12", 4.0), &expect).is_err(), "{wrong}");
        }
    }

    #[test]
    fn the_threads_check_rejects_a_thread_shown_with_another_s_chain() {
        let line = |text: &str| line_of("threads.py", text, 0);
        let stack = |l: char| {
            format!(
                "python3.12;clone3;start_thread;Thread._bootstrap (threading.py:1030);Thread._bootstrap_inner (threading.py:1073);Thread.run (threading.py:1010);\
                 chain_{l}_outer (threads.py:{});chain_{l}_middle (threads.py:{});chain_{l}_leaf (threads.py:{}) 300\n",
                line(&format!("    return chain_{l}_middle(end)")),
                line(&format!("    return chain_{l}_leaf(end)")),
                line_of("threads.py", "x = (x * 1103515245", (l as u8 - b'a') as usize),
            )
        };
        let text = format!("{}{}{}", stack('a'), stack('b'), stack('c'));
        let result = check_threads(&python(12), &run(&text, "python3.12", 4.0), 199);
        assert!(result.is_ok(), "{result:?}");
        let mixed = format!("{text}{}", stack('a').replace("chain_a_leaf", "chain_b_leaf").replace(" 300", " 1"));
        assert!(check_threads(&python(12), &run(&mixed, "python3.12", 4.0), 199).is_err());
    }

    #[test]
    fn the_recursion_check_wants_128_python_frames_under_the_marker() {
        let recurse = format!("recurse (recursion.py:{})", line_of("recursion.py", "return recurse(level - 1, end)", 0));
        let bottom = format!("bottom (recursion.py:{})", line_of("recursion.py", "x = (x * 1103515245", 0));
        // 3.11+: the Python frames of one activation, in a row.
        let frames = |n: usize| vec![recurse.as_str(); n].join(";");
        let text = format!("python3.12;{DEPTH_LIMIT};{};{bottom} 400\n", frames(127));
        let result = check_recursion(&python(12), &run(&text, "python3.12", 4.0), 99);
        assert!(result.is_ok(), "{result:?}");
        // Before 3.11: native frames between each Python frame.
        let interleaved = vec![recurse.as_str(); 127].join(";_PyFunction_Vectorcall;");
        let old = format!("python3.10;{DEPTH_LIMIT};{interleaved};_PyFunction_Vectorcall;{bottom} 400\n");
        assert!(check_recursion(&python(10), &run(&old, "python3.10", 4.0), 99).is_ok());
        for wrong in [format!("python3.12;{};{bottom} 400\n", frames(127)), format!("python3.12;{DEPTH_LIMIT};{};{bottom} 400\n", frames(100)), format!("python3.12;{};{DEPTH_LIMIT};{bottom} 400\n", frames(127))] {
            assert!(check_recursion(&python(12), &run(&wrong, "python3.12", 4.0), 99).is_err(), "{wrong}");
        }
    }

    #[test]
    fn the_callback_and_coroutine_checks_want_native_frames_between() {
        let line = |text| line_of("callbacks.py", text, 0);
        let top = format!("_start;main;Py_RunMain;<module> (callbacks.py:{});main (callbacks.py:{})", line("main(float(sys.argv[1]))"), line("        caller(DATA)"));
        let text = format!(
            "python3.12;{top};caller (callbacks.py:{});builtin_sorted;list_sort_impl;keyfunc (callbacks.py:{}) 200\n\
             python3.12;{top};caller (callbacks.py:{});functools_reduce;reducer (callbacks.py:{}) 200\n",
            line("ordered = sorted("),
            line_of("callbacks.py", "x = (x * 1103515245", 0),
            line("return functools.reduce("),
            line_of("callbacks.py", "x = (x * 1103515245", 1),
        );
        let result = check_callbacks(&python(12), &run(&text, "python3.12", 2.0), 199);
        assert!(result.is_ok(), "{result:?}");
        assert!(check_callbacks(&python(12), &run(&text.replace("builtin_sorted;list_sort_impl;", ""), "python3.12", 2.0), 199).is_err());

        let line = |text| line_of("generators.py", text, 0);
        let top = format!("_start;main;<module> (generators.py:{});main (generators.py:{})", line("main(float(sys.argv[1]))"), line("        consume(CHUNKS)"));
        let asyncio = "run (runners.py:194);Runner.run (runners.py:118);BaseEventLoop.run_until_complete (base_events.py:671);Handle._run (events.py:84)";
        let text = format!(
            "python3.12;{top};consume (generators.py:{});produce (generators.py:{}) 200\n\
             python3.12;{top};{asyncio};context_run;task_step;handler (generators.py:{});compute (generators.py:{}) 200\n",
            line("for value in produce(chunks)"),
            line_of("generators.py", "x = (x * 1103515245", 0),
            line("return await compute(chunks)"),
            line_of("generators.py", "x = (x * 1103515245", 1),
        );
        let result = check_generators(&python(12), &run(&text, "python3.12", 2.0), 199);
        assert!(result.is_ok(), "{result:?}");
        assert!(check_generators(&python(12), &run(&text.replace("context_run;task_step;", ""), "python3.12", 2.0), 199).is_err());
        assert!(check_generators(&python(12), &run(&text.replace("consume (generators.py", "handler (generators.py"), "python3.12", 2.0), 199).is_err());
    }

    #[test]
    fn the_unsupported_check_wants_native_frames_and_one_warning() {
        let mut unsupported = run("python3.7;_start;main;_PyEval_EvalFrameDefault;long_mul 300\n", "python3.7", 3.0);
        let old = Python { label: "3.7.16".into(), major: 3, minor: 7, path: PathBuf::from("/x/python3.7"), static_symbols: true };
        assert!(check_unsupported(&old, &unsupported, 99).is_err(), "no warning");
        unsupported.stderr = "oxeye: sampling\noxeye: pid 12: CPython 3.7 is not supported (3.8 to 3.13 are); native frames only\n".into();
        let result = check_unsupported(&old, &unsupported, 99);
        assert!(result.is_ok(), "{result:?}");
        unsupported.folded = Folded::read_str("python3.7;_start;main;chain_leaf (chain.py:3) 300\n");
        assert!(check_unsupported(&old, &unsupported, 99).is_err(), "Python frames");
    }

    #[test]
    fn compact_folds_repeated_groups() {
        let frames: Vec<String> = ["a", "r", "x", "r", "x", "r", "x", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(compact(&frames), "a;[r;x] ×3;b");
        let same: Vec<String> = std::iter::repeat_n("recurse (r.py:3)".to_owned(), 127).collect();
        assert_eq!(compact(&same), "[recurse (r.py:3)] ×127");
    }
}
