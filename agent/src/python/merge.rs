//! Putting a sample's Python frames where the interpreter runs them: each native
//! `_PyEval_EvalFrameDefault` activation stands for the Python frames it runs (up to the
//! frame marked as its entry), so C code called from Python, and Python called back from C,
//! appear in the order they really are.

use agent_common::unwind::StackEnd;

use super::frames::PythonFrame;
use crate::profile::Frame;

/// The native function that runs Python frames, in every supported version.
pub const EVAL_FUNCTION: &str = "_PyEval_EvalFrameDefault";

/// Appends to `out` the native user frames `native` (innermost first) with each
/// interpreter activation (`is_eval`) replaced by its Python frames from `python`.
///
/// `native_end` is how the native walk ended, `python_end` how the Python walk did. Python
/// frames left over once the native activations are used up are outer to all of them: they
/// go after the last activation replaced, or after the native frames if the native walk was
/// cut short. A Python walk cut at its depth limit ends the stack there, with the marker.
pub fn merge(
    native: &[Frame],
    python: &[PythonFrame],
    native_end: StackEnd,
    python_end: StackEnd,
    mut is_eval: impl FnMut(Frame) -> bool,
    out: &mut Vec<Frame>,
) -> StackEnd {
    let mut rest = python;
    let mut last_group_end = None;
    for (index, &frame) in native.iter().enumerate() {
        if rest.is_empty() {
            if python_end == StackEnd::DepthLimit && last_group_end.is_some() {
                return StackEnd::DepthLimit;
            }
            out.extend_from_slice(&native[index..]);
            return native_end;
        }
        if is_eval(frame) {
            // The calls DWARF says were inlined into the interpreter loop at this address are
            // part of the activation the Python frames stand for.
            while out.last().is_some_and(|&inner| inlined_at(inner, frame)) {
                out.pop();
            }
            rest = push_group(rest, out);
            last_group_end = Some(out.len());
        } else {
            out.push(frame);
        }
    }
    if rest.is_empty() {
        return if python_end == StackEnd::DepthLimit && last_group_end.is_some() { StackEnd::DepthLimit } else { native_end };
    }
    // Activations the native walk did not reach (cut short) or did not recognise.
    let at = if native_end == StackEnd::Complete { last_group_end.unwrap_or(out.len()) } else { out.len() };
    let tail: Vec<Frame> = out.drain(at..).collect();
    while !rest.is_empty() {
        rest = push_group(rest, out);
    }
    if python_end == StackEnd::DepthLimit {
        return StackEnd::DepthLimit;
    }
    out.extend(tail);
    native_end
}

/// Whether `inner` is a call inlined at the address of `outer` (both [`Frame::Source`]).
fn inlined_at(inner: Frame, outer: Frame) -> bool {
    match (inner, outer) {
        (Frame::Source { object, file_offset, index }, Frame::Source { object: o, file_offset: f, index: i }) => object == o && file_offset == f && index < i,
        _ => false,
    }
}

/// Pushes one activation's frames (up to and including its entry frame); returns the rest.
fn push_group<'a>(python: &'a [PythonFrame], out: &mut Vec<Frame>) -> &'a [PythonFrame] {
    let end = python.iter().position(|frame| frame.entry).map_or(python.len(), |i| i + 1);
    out.extend(python[..end].iter().filter_map(|frame| frame.function.map(|function| Frame::Python { function, line: frame.line })));
    &python[end..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::functions::FunctionTable;

    fn native(address: u64) -> Frame {
        Frame::Unknown { address }
    }

    const EVAL: u64 = 0xe;

    fn python(table: &mut FunctionTable, name: &str, entry: bool) -> PythonFrame {
        PythonFrame { function: Some(table.intern(name, "t.py", 1)), line: 1, entry }
    }

    fn names(table: &FunctionTable, frames: &[Frame]) -> Vec<String> {
        frames
            .iter()
            .map(|frame| match frame {
                Frame::Python { function, .. } => table.get(*function).name.to_string(),
                Frame::Unknown { address } => format!("{address:#x}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn activations_are_replaced_in_order() {
        let mut t = FunctionTable::default();
        // Python `keyfunc` called from C `sorted`, called from Python `caller` called by `main`.
        let py = [python(&mut t, "keyfunc", true), python(&mut t, "caller", false), python(&mut t, "main", true)];
        let stack = [native(0x1), native(EVAL), native(0x50), native(EVAL), native(0x90)];
        let mut out = Vec::new();
        let end = merge(&stack, &py, StackEnd::Complete, StackEnd::Complete, |f| f == native(EVAL), &mut out);
        assert_eq!(names(&t, &out), ["0x1", "keyfunc", "0x50", "caller", "main", "0x90"]);
        assert_eq!(end, StackEnd::Complete);
    }

    #[test]
    fn empty_activation_marker_keeps_the_others_in_place() {
        let mut t = FunctionTable::default();
        let py = [PythonFrame { function: None, line: 0, entry: true }, python(&mut t, "outer", true)];
        let stack = [native(0x1), native(EVAL), native(0x50), native(EVAL)];
        let mut out = Vec::new();
        merge(&stack, &py, StackEnd::Complete, StackEnd::Complete, |f| f == native(EVAL), &mut out);
        assert_eq!(names(&t, &out), ["0x1", "0x50", "outer"]);
    }

    #[test]
    fn leftovers_follow_a_cut_native_stack_and_depth_limit_ends_it() {
        let mut t = FunctionTable::default();
        let py = [python(&mut t, "a", true), python(&mut t, "b", true), python(&mut t, "c", true)];
        let stack = [native(0x1), native(EVAL)];
        let mut out = Vec::new();
        let end = merge(&stack, &py, StackEnd::DepthLimit, StackEnd::DepthLimit, |f| f == native(EVAL), &mut out);
        assert_eq!(names(&t, &out), ["0x1", "a", "b", "c"]);
        assert_eq!(end, StackEnd::DepthLimit);
    }

    #[test]
    fn python_depth_limit_drops_the_native_frames_it_cannot_place() {
        let mut t = FunctionTable::default();
        let py = [python(&mut t, "recurse", false), python(&mut t, "recurse", false)];
        let stack = [native(EVAL), native(EVAL), native(0x90)];
        let mut out = Vec::new();
        let end = merge(&stack, &py, StackEnd::Complete, StackEnd::DepthLimit, |f| f == native(EVAL), &mut out);
        assert_eq!(names(&t, &out), ["recurse", "recurse"]);
        assert_eq!(end, StackEnd::DepthLimit);
    }

    /// A CPython built with -g: the interpreter loop's address has inlined calls of its own,
    /// which go with the activation.
    #[test]
    fn inlined_calls_in_the_interpreter_loop_go_with_the_activation() {
        let mut t = FunctionTable::default();
        let py = [python(&mut t, "leaf", false), python(&mut t, "main", true)];
        let object = crate::objects::ObjectId(3);
        let at = |index| Frame::Source { object, file_offset: 0x40, index };
        let stack = [native(0x1), at(0), at(1), at(2), native(0x90)];
        let mut out = Vec::new();
        merge(&stack, &py, StackEnd::Complete, StackEnd::Complete, |f| f == at(2), &mut out);
        assert_eq!(names(&t, &out), ["0x1", "leaf", "main", "0x90"]);
    }

    #[test]
    fn no_python_frames_leave_the_native_stack_alone() {
        let stack = [native(0x1), native(EVAL)];
        let mut out = Vec::new();
        merge(&stack, &[], StackEnd::Complete, StackEnd::Complete, |f| f == native(EVAL), &mut out);
        assert_eq!(out, stack);
    }
}
