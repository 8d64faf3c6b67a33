//! JIT-compiled functions as profiles name them, each distinct (runtime, name, file, line)
//! once, so a frame is one number and outlives the process and its perf map.

use std::{collections::HashMap, sync::Arc};

/// Most distinct functions kept; past it new ones are [`JitFunctions::OVERFLOW`].
const MAX_FUNCTIONS: usize = 1 << 20;

/// Index of a function in the [`JitFunctions`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JitFunctionId(u32);

/// The runtime that compiled the code: it decides the frame's type in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// Node.js (V8).
    V8,
    /// A JVM (HotSpot).
    Jvm,
    /// .NET.
    Dotnet,
    /// Anything else that writes a perf map.
    Other,
}

impl Runtime {
    /// The runtime of a process, from its executable's file name.
    pub fn of_executable(name: &str) -> Runtime {
        match name {
            "node" | "nodejs" => Runtime::V8,
            "java" | "javaw" => Runtime::Jvm,
            "dotnet" => Runtime::Dotnet,
            _ if name.starts_with("node") => Runtime::V8,
            _ => Runtime::Other,
        }
    }
}

/// A JIT-compiled function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JitFunction {
    pub runtime: Runtime,
    /// The function's name.
    pub name: Arc<str>,
    /// Its source file, when the perf map tells it (V8 does), else empty.
    pub file: Arc<str>,
    /// The line the function starts at, when told, else 0.
    pub line: u32,
}

impl JitFunction {
    /// The file's last path component.
    pub fn short_file(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }
}

/// Every JIT function seen, interned.
#[derive(Debug)]
pub struct JitFunctions {
    functions: Vec<JitFunction>,
    ids: HashMap<JitFunction, JitFunctionId>,
    text_bytes: usize,
}

impl Default for JitFunctions {
    fn default() -> Self {
        let mut table = JitFunctions { functions: Vec::new(), ids: HashMap::new(), text_bytes: 0 };
        table.intern(Runtime::Other, "<more JIT functions than oxeye keeps>", "", 0);
        table
    }
}

impl JitFunctions {
    /// Stands for functions past the table's bound.
    pub const OVERFLOW: JitFunctionId = JitFunctionId(0);

    /// The id of the function, added if new.
    pub fn intern(&mut self, runtime: Runtime, name: &str, file: &str, line: u32) -> JitFunctionId {
        let function = JitFunction { runtime, name: name.into(), file: file.into(), line };
        if let Some(&id) = self.ids.get(&function) {
            return id;
        }
        if self.functions.len() >= MAX_FUNCTIONS {
            return Self::OVERFLOW;
        }
        let id = JitFunctionId(self.functions.len() as u32);
        self.text_bytes += name.len() + file.len();
        self.ids.insert(function.clone(), id);
        self.functions.push(function);
        id
    }

    /// The function `id`.
    pub fn get(&self, id: JitFunctionId) -> &JitFunction {
        &self.functions[(id.0 as usize).min(self.functions.len() - 1)]
    }

    /// Functions held (with the placeholder).
    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// An estimate of the memory held.
    pub fn bytes(&self) -> usize {
        let entry = size_of::<JitFunction>();
        self.text_bytes + self.functions.capacity() * entry + self.ids.capacity() * (entry + 4 + 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_interned_and_runtimes_told_by_executable() {
        let mut table = JitFunctions::default();
        let a = table.intern(Runtime::V8, "fib", "/app/fib.js", 3);
        assert_eq!(a, table.intern(Runtime::V8, "fib", "/app/fib.js", 3));
        assert_ne!(a, table.intern(Runtime::V8, "fib", "/app/other.js", 3));
        assert_eq!(table.get(a).short_file(), "fib.js");
        assert_eq!(Runtime::of_executable("node"), Runtime::V8);
        assert_eq!(Runtime::of_executable("java"), Runtime::Jvm);
        assert_eq!(Runtime::of_executable("python3"), Runtime::Other);
    }
}
