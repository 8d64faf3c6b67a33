//! `stacks.folded`: one line per distinct stack, `process;root;…;leaf count`, the input format
//! of flamegraph tools. Kernel frames carry the `_[k]` suffix that flamegraph tools colour.

use std::{collections::HashMap, io::Write};

use anyhow::Result;

use crate::{
    objects::ObjectRegistry,
    profile::{Profile, SampleKey},
    symbolize::FrameNamer,
};

/// Folds the profile into sorted `(stack, count)` lines (threads of one process merge).
pub fn fold<'a>(profile: &Profile, counts: impl Iterator<Item = (&'a SampleKey, u64)>, namer: &mut FrameNamer, objects: &mut ObjectRegistry) -> Vec<(String, u64)> {
    let mut lines: HashMap<String, u64> = HashMap::new();
    for (key, count) in counts {
        let mut line = sanitize(profile.name(key.process));
        // Frames are stored innermost first; folded lines go root first.
        for &frame in profile.stack(key.stack).iter().rev() {
            line.push(';');
            line.push_str(&sanitize(&namer.name(frame, objects)));
            if frame.is_kernel() {
                line.push_str("_[k]");
            }
        }
        *lines.entry(line).or_default() += count;
    }
    let mut lines: Vec<_> = lines.into_iter().collect();
    lines.sort_unstable();
    lines
}

/// Writes folded lines.
pub fn write(lines: &[(String, u64)], out: &mut dyn Write) -> Result<()> {
    for (stack, count) in lines {
        writeln!(out, "{stack} {count}")?;
    }
    Ok(())
}

/// `;` separates frames and a newline ends a line: neither may appear inside a name.
fn sanitize(name: &str) -> String {
    name.replace([';', '\n'], ":")
}
