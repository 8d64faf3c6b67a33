//! `stacks.folded`, as oxeye writes it: one line per distinct stack, `process;frame;…;frame
//! count`, root first, kernel frames suffixed `_[k]`.
//!
//! Only the standard library: `cargo xtask vm-test` compiles this file too (`#[path]`), to check
//! what oxeye wrote inside a VM with the same code as the host tests.

use std::{collections::BTreeMap, fs, path::Path};

/// One line of `stacks.folded`.
#[derive(Debug, Clone)]
pub struct Stack {
    /// The process name.
    pub process: String,
    /// Frames, root first; kernel frames end in `_[k]`.
    pub frames: Vec<String>,
    /// Samples.
    pub count: u64,
}

impl Stack {
    /// The user frames (root first), without kernel frames.
    pub fn user_frames(&self) -> Vec<&str> {
        self.frames.iter().map(String::as_str).filter(|f| !f.ends_with("_[k]")).collect()
    }

    /// The kernel frames (outermost first), without their `_[k]` suffix.
    pub fn kernel_frames(&self) -> Vec<&str> {
        self.frames.iter().filter_map(|f| f.strip_suffix("_[k]")).collect()
    }

    /// Whether the user stack ends (innermost) with exactly `chain`, given root first.
    pub fn user_ends_with(&self, chain: &[&str]) -> bool {
        self.user_frames().ends_with(chain)
    }
}

/// The contents of `stacks.folded`.
#[derive(Debug)]
pub struct Folded {
    /// Every line.
    pub stacks: Vec<Stack>,
}

impl Folded {
    /// Parses a folded file, checking its format on the way.
    pub fn read(path: &Path) -> Folded {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        Folded::read_str(&text)
    }

    /// Parses folded text, checking its format on the way.
    pub fn read_str(text: &str) -> Folded {
        let stacks = text
            .lines()
            .map(|line| {
                let (stack, count) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no count in folded line {line:?}"));
                let count = count.parse().unwrap_or_else(|_| panic!("bad count in folded line {line:?}"));
                let mut parts = stack.split(';').map(str::to_owned);
                let process = parts.next().expect("split yields at least one part");
                Stack { process, frames: parts.collect(), count }
            })
            .collect();
        Folded { stacks }
    }

    /// Lines of one process.
    pub fn process<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Stack> + 'a {
        self.stacks.iter().filter(move |s| s.process == name)
    }

    /// Samples of one process.
    pub fn samples(&self, name: &str) -> u64 {
        self.process(name).map(|s| s.count).sum()
    }

    /// Samples in the whole file.
    pub fn total(&self) -> u64 {
        self.stacks.iter().map(|s| s.count).sum()
    }

    /// Samples per line text (`process;frames…`), for comparing with another reader.
    pub fn by_line(&self) -> BTreeMap<String, u64> {
        let mut lines = BTreeMap::new();
        for stack in &self.stacks {
            let mut key = stack.process.clone();
            for frame in &stack.frames {
                key.push(';');
                key.push_str(frame);
            }
            *lines.entry(key).or_default() += stack.count;
        }
        lines
    }

    /// A readable dump of the hottest lines of a process, for failure messages.
    pub fn dump(&self, name: &str) -> String {
        let mut lines: Vec<_> = self.process(name).collect();
        lines.sort_by_key(|s| std::cmp::Reverse(s.count));
        lines.iter().take(15).map(|s| format!("{:>5} {}\n", s.count, s.frames.join(";"))).collect()
    }
}
