//! Python functions as profiles name them: each distinct (name, file, first line) once,
//! whatever process or code object it came from, so a stack frame is two numbers.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

/// Most distinct functions kept; past it new ones are named [`FunctionTable::OVERFLOW`].
const MAX_FUNCTIONS: usize = 1 << 20;

/// Index of a function in the [`FunctionTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionId(u32);

/// A Python function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PythonFunction {
    /// `co_qualname` (3.11+) or `co_name`.
    pub name: Arc<str>,
    /// `co_filename`, as the interpreter has it.
    pub filename: Arc<str>,
    /// `co_firstlineno`.
    pub first_line: u32,
}

impl PythonFunction {
    /// The file's last path component, for short display names.
    pub fn short_filename(&self) -> &str {
        self.filename.rsplit('/').next().unwrap_or(&self.filename)
    }
}

/// Every Python function seen, interned.
#[derive(Debug)]
pub struct FunctionTable {
    functions: Vec<PythonFunction>,
    ids: HashMap<PythonFunction, FunctionId>,
    /// File names, shared by their functions.
    files: HashSet<Arc<str>>,
    /// Bytes of names and file names held.
    text_bytes: usize,
}

impl Default for FunctionTable {
    fn default() -> Self {
        let mut table = FunctionTable { functions: Vec::new(), ids: HashMap::new(), files: HashSet::new(), text_bytes: 0 };
        table.intern("<unknown Python function>", "", 0);
        table.intern("<more Python functions than oxeye keeps>", "", 0);
        table
    }
}

impl FunctionTable {
    /// Stands for a frame whose code object could not be read (the process exited, or the
    /// memory now holds another object): never a guessed name.
    pub const UNKNOWN: FunctionId = FunctionId(0);
    /// Stands for functions past the table's bound.
    pub const OVERFLOW: FunctionId = FunctionId(1);
    /// Entries that stand for no function ([`Self::UNKNOWN`], [`Self::OVERFLOW`]).
    pub const PLACEHOLDERS: usize = 2;

    /// The id of (name, file, first line), added if new.
    pub fn intern(&mut self, name: &str, filename: &str, first_line: u32) -> FunctionId {
        let filename = match self.files.get(filename) {
            Some(known) => Arc::clone(known),
            None => {
                let new: Arc<str> = filename.into();
                self.text_bytes += filename.len();
                self.files.insert(Arc::clone(&new));
                new
            }
        };
        let function = PythonFunction { name: name.into(), filename, first_line };
        if let Some(&id) = self.ids.get(&function) {
            return id;
        }
        if self.functions.len() >= MAX_FUNCTIONS {
            return Self::OVERFLOW;
        }
        let id = FunctionId(self.functions.len() as u32);
        self.text_bytes += name.len();
        self.ids.insert(function.clone(), id);
        self.functions.push(function);
        id
    }

    /// The function `id`.
    pub fn get(&self, id: FunctionId) -> &PythonFunction {
        &self.functions[(id.0 as usize).min(self.functions.len() - 1)]
    }

    /// Functions held (with the two placeholders).
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// An estimate of the memory held: the text, plus each entry in the vector and the map.
    pub fn bytes(&self) -> usize {
        let entry = size_of::<PythonFunction>() + 16;
        self.text_bytes + self.functions.capacity() * size_of::<PythonFunction>() + self.ids.capacity() * (entry + size_of::<FunctionId>()) + self.files.capacity() * 24
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_function_in_two_processes_is_one_entry() {
        let mut table = FunctionTable::default();
        let a = table.intern("Worker.run", "/srv/app/worker.py", 10);
        let b = table.intern("Worker.run", "/srv/app/worker.py", 10);
        let c = table.intern("Worker.run", "/srv/app/other.py", 10);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(table.get(a).short_filename(), "worker.py");
        assert_eq!(table.get(FunctionTable::UNKNOWN).name.as_ref(), "<unknown Python function>");
    }
}
