//! Turning the Python frames of a sample (code object address, tag, instruction) into named
//! frames, while the process is alive: each code object is read from the process once, and
//! only a read whose tag matches the sample's names it.

use std::{collections::HashMap, sync::Arc};

use agent_common::python::split_frame_word;

use super::{
    code::{read_code, CodeObject},
    functions::{FunctionId, FunctionTable},
    registry::{AttachedProcess, PythonProcesses},
};

/// Code objects remembered before the cache starts over (bounds memory; a cleared cache only
/// costs reads).
const MAX_CODE_OBJECTS: usize = 1 << 16;
/// Lines remembered per code object (most frames run a handful of lines).
const MAX_LINES_PER_CODE: usize = 16;

/// One Python frame of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PythonFrame {
    /// The function, `None` for the marker of an activation that runs no Python frame yet.
    pub function: Option<FunctionId>,
    /// The line it is at.
    pub line: u32,
    /// Whether it is the first frame its native activation runs.
    pub entry: bool,
}

/// A code object as read, by (pid, address, tag).
#[derive(Debug)]
struct KnownCode {
    function: FunctionId,
    code: Option<CodeObject>,
    lines: Vec<(u32, u32)>,
}

/// What the reader did, for reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaderStats {
    /// Code objects read from processes.
    pub code_reads: u64,
    /// Frames left unnamed: the code object was gone or had become another.
    pub unnamed: u64,
}

/// Names Python frames, with a cache of code objects.
#[derive(Debug)]
pub struct PythonFrameReader {
    processes: Arc<PythonProcesses>,
    codes: HashMap<(u32, u64, u32), KnownCode>,
    last_process: Option<(u32, Arc<AttachedProcess>)>,
    /// What was done.
    pub stats: ReaderStats,
}

impl PythonFrameReader {
    /// A reader of the processes attached in `processes`.
    pub fn new(processes: Arc<PythonProcesses>) -> Self {
        PythonFrameReader { processes, codes: HashMap::new(), last_process: None, stats: ReaderStats::default() }
    }

    /// Processes attached.
    pub fn attached(&self) -> usize {
        self.processes.len()
    }

    /// Code objects cached.
    pub fn cached(&self) -> usize {
        self.codes.len()
    }

    /// Names the recorded frames `slots` (two per frame) of process `pid` into `out`,
    /// innermost first.
    pub fn read(&mut self, pid: u32, slots: &[u64], functions: &mut FunctionTable, out: &mut Vec<PythonFrame>) {
        out.clear();
        let process = self.process(pid);
        for pair in slots.chunks_exact(2) {
            let (address, (tag, instruction, entry)) = (pair[0], split_frame_word(pair[1]));
            if address == 0 {
                out.push(PythonFrame { function: None, line: 0, entry });
                continue;
            }
            let (function, line) = match &process {
                Some(process) => self.name(pid, process, address, tag, instruction, functions),
                None => (FunctionTable::UNKNOWN, 0),
            };
            if function == FunctionTable::UNKNOWN {
                self.stats.unnamed += 1;
            }
            out.push(PythonFrame { function: Some(function), line, entry });
        }
    }

    fn process(&mut self, pid: u32) -> Option<Arc<AttachedProcess>> {
        if let Some((last, process)) = &self.last_process {
            if *last == pid {
                return Some(Arc::clone(process));
            }
        }
        let process = self.processes.get(pid)?;
        self.last_process = Some((pid, Arc::clone(&process)));
        Some(process)
    }

    fn name(&mut self, pid: u32, process: &AttachedProcess, address: u64, tag: u32, instruction: u32, functions: &mut FunctionTable) -> (FunctionId, u32) {
        let key = (pid, address, tag);
        if !self.codes.contains_key(&key) {
            if self.codes.len() >= MAX_CODE_OBJECTS {
                self.codes.clear();
            }
            self.stats.code_reads += 1;
            // A code object read with another tag is not the one sampled: unnamed.
            let code = read_code(&process.memory, &process.layout, process.code_type, address).ok().filter(|code| code.tag == tag);
            let function = code.as_ref().map_or(FunctionTable::UNKNOWN, |code| functions.intern(&code.name, &code.filename, code.first_line));
            self.codes.insert(key, KnownCode { function, code, lines: Vec::new() });
        }
        let Some(known) = self.codes.get_mut(&key) else { return (FunctionTable::UNKNOWN, 0) };
        let Some(code) = &known.code else { return (known.function, 0) };
        if let Some(&(_, line)) = known.lines.iter().find(|(at, _)| *at == instruction) {
            return (known.function, line);
        }
        let line = code.lines.line(instruction);
        if known.lines.len() < MAX_LINES_PER_CODE {
            known.lines.push((instruction, line));
        }
        (known.function, line)
    }
}
