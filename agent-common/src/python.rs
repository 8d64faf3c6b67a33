//! CPython stacks: what the BPF walker needs to find a thread's Python frames, and how it
//! records them in a sample.
//!
//! User space recognises a CPython process (its `libpython3.X.so` or statically linked
//! interpreter), works out the layout of the interpreter's structures for that version
//! ([`PythonLayout`]) and puts a [`PythonProcess`] in the `PYTHON_PROCESSES` map. At sample
//! time, after the native walk, the BPF walker finds the sampled thread's `PyThreadState` in
//! the interpreter's thread list (matching the thread's id) and follows its frame chain,
//! innermost first: `_PyInterpreterFrame` from 3.11 on, `PyFrameObject` before.
//!
//! Each Python frame takes two slots of [`crate::sampler::SampleRecord::frames`], after the
//! native ones: the code object's address, then [`frame_word`]`(tag, instruction, entry)`.
//! The tag ([`code_tag`]) is computed from the fields of the code object that name it, both in
//! BPF at sample time and in user space when it reads the object: a freed code object whose
//! memory now holds another gives a different tag, and so never the old name.

/// Most Python frames walked per sample; past it the Python stack ends in
/// [`crate::unwind::StackEnd::DepthLimit`].
pub const MAX_PYTHON_FRAMES: usize = 128;
/// Bytes of a code object the walker reads to compute its tag: every field [`code_tag`] uses
/// must lie inside (user space checks each layout against it).
pub const CODE_WINDOW: usize = 160;
/// Most entries of an interpreter's thread list searched for the sampled thread.
pub const MAX_PYTHON_THREADS: u32 = 64;
/// An offset that does not exist in this version's layout.
pub const NO_OFFSET: u16 = u16::MAX;

/// Set in a frame's location word when the frame is the first one a native
/// `_PyEval_EvalFrameDefault` activation runs: the native frame of that activation stands for
/// every Python frame up to and including this one.
pub const ENTRY_FRAME: u32 = 1 << 31;
/// The instruction bits of a location word.
pub const INSTRUCTION_MASK: u32 = ENTRY_FRAME - 1;

/// How the interpreter links its frames (`PythonLayout::frames`).
pub mod frames {
    /// 3.8–3.10: a chain of `PyFrameObject` (`f_back`), one per native
    /// `_PyEval_EvalFrameDefault` activation; the instruction is `f_lasti` as stored (bytes
    /// before 3.10, code units from 3.10).
    pub const FRAME_OBJECTS: u16 = 1;
    /// 3.11: `_PyInterpreterFrame` chains; `is_entry` marks an activation's first frame; the
    /// instruction is in code units from the start of the bytecode.
    pub const INTERPRETER_FRAMES_311: u16 = 2;
    /// 3.12 and 3.13: as 3.11, but each activation pushes a shim frame owned by the C stack
    /// (`owner == 3`) below its first frame instead of marking it.
    pub const INTERPRETER_FRAMES_312: u16 = 3;
}

/// `_PyInterpreterFrame.owner` of the shim frame an activation pushes (3.12+).
pub const FRAME_OWNED_BY_CSTACK: u8 = 3;

/// Where the walker finds things in one CPython version; offsets in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonLayout {
    /// `_PyRuntime.interpreters.main` (`.head` from 3.13's debug offsets).
    pub runtime_interpreter: u32,
    /// `PyInterpreterState.tstate_head` / `.threads.head`.
    pub interpreter_threads: u32,
    /// [`frames`]: how frames are linked.
    pub frames: u16,
    /// `PyThreadState.next`.
    pub thread_next: u16,
    /// `PyThreadState.native_thread_id` (3.11+), or `.thread_id` (a `pthread_t`, the address
    /// of the thread's `struct pthread`) when `pthread_tid` is set.
    pub thread_id: u16,
    /// Offset of the kernel thread id in the C library's `struct pthread`, for versions
    /// without `native_thread_id`; [`NO_OFFSET`] otherwise.
    pub pthread_tid: u16,
    /// `PyThreadState.frame` (≤3.10), `.cframe` (3.11, 3.12) or `.current_frame` (3.13).
    pub thread_frame: u16,
    /// `_PyCFrame.current_frame` when `thread_frame` points at a `_PyCFrame`; else
    /// [`NO_OFFSET`].
    pub cframe_current: u16,
    /// The frame's code object: `f_code` / `f_executable`.
    pub frame_code: u16,
    /// The calling frame: `f_back` / `previous`.
    pub frame_previous: u16,
    /// `f_lasti` (a C `int`, ≤3.10), or `prev_instr` / `instr_ptr` (a pointer, 3.11+).
    pub frame_instruction: u16,
    /// `_PyInterpreterFrame.owner` (3.11+); [`NO_OFFSET`] before.
    pub frame_owner: u16,
    /// `_PyInterpreterFrame.is_entry` (3.11 only); [`NO_OFFSET`] otherwise.
    pub frame_is_entry: u16,
    /// `PyCodeObject.co_code_adaptive`: where the bytecode starts (3.11+).
    pub code_bytecode: u16,
    /// `co_filename`, the name (`co_qualname` from 3.11, `co_name` before), `co_linetable`
    /// (`co_lnotab` before 3.10) and `co_firstlineno`: what [`code_tag`] covers, all inside
    /// [`CODE_WINDOW`].
    pub code_filename: u16,
    /// See `code_filename`.
    pub code_name: u16,
    /// See `code_filename`.
    pub code_linetable: u16,
    /// See `code_filename` (a C `int`).
    pub code_firstlineno: u16,
    /// Bytes of a frame the walker reads: every frame field above lies inside (at most 128).
    pub frame_bytes: u16,
    /// Padding to a multiple of 8 bytes.
    pub reserved: [u16; 3],
}
const _: () = assert!(core::mem::size_of::<PythonLayout>() == 48);
crate::impl_pod!(PythonLayout);

/// One CPython process, as the walker needs it (the `PYTHON_PROCESSES` map's value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonProcess {
    /// Address of `_PyRuntime` in the process.
    pub runtime: u64,
    /// Address of `PyCode_Type` in the process: a frame whose code object has another type
    /// is skipped.
    pub code_type: u64,
    /// Device of the process's pid namespace (`stat /proc/PID/ns/pid`), when it is not the
    /// initial one: thread ids in the interpreter's state are in that namespace. 0 otherwise.
    pub pid_namespace_dev: u64,
    /// Inode of that namespace; 0 for the initial namespace.
    pub pid_namespace_inode: u64,
    /// The version's layout.
    pub layout: PythonLayout,
}
const _: () = assert!(core::mem::size_of::<PythonProcess>() == 80);
crate::impl_pod!(PythonProcess);

/// A thread's place in the `PYTHON_THREADS` cache: its `PyThreadState`, and when it was
/// looked up (a thread with none is looked up again after a while).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonThread {
    /// Address of the thread's `PyThreadState`; 0 if it had none.
    pub thread_state: u64,
    /// `bpf_ktime_get_ns()` of the lookup.
    pub looked_up_ns: u64,
}
const _: () = assert!(core::mem::size_of::<PythonThread>() == 16);
crate::impl_pod!(PythonThread);

/// The tag of a code object from the fields that name it: the addresses of its file name, its
/// name and its line table, and its first line. Cheap enough for BPF; the same function runs
/// on both sides.
#[inline(always)]
pub const fn code_tag(filename: u64, name: u64, linetable: u64, firstlineno: u32) -> u32 {
    let mut hash = 0x9e37_79b9_7f4a_7c15u64;
    hash = mix(hash ^ filename);
    hash = mix(hash ^ name);
    hash = mix(hash ^ linetable);
    hash = mix(hash ^ firstlineno as u64);
    (hash >> 32) as u32 ^ hash as u32
}

#[inline(always)]
const fn mix(value: u64) -> u64 {
    let value = (value ^ (value >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
    (value ^ (value >> 27)).wrapping_mul(0x81da_def4_bc2d_d44d) ^ (value >> 33)
}

/// The second slot of a recorded Python frame.
#[inline(always)]
pub const fn frame_word(tag: u32, instruction: u32, entry: bool) -> u64 {
    let location = (instruction & INSTRUCTION_MASK) | if entry { ENTRY_FRAME } else { 0 };
    ((tag as u64) << 32) | location as u64
}

/// The parts of a recorded frame's second slot: tag, instruction, entry flag.
#[inline(always)]
pub const fn split_frame_word(word: u64) -> (u32, u32, bool) {
    let location = word as u32;
    ((word >> 32) as u32, location & INSTRUCTION_MASK, location & ENTRY_FRAME != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_word_round_trips() {
        assert_eq!(split_frame_word(frame_word(0xdead_beef, 1234, true)), (0xdead_beef, 1234, true));
        assert_eq!(split_frame_word(frame_word(7, u32::MAX, false)), (7, INSTRUCTION_MASK, false));
    }

    #[test]
    fn tag_depends_on_every_field() {
        let base = code_tag(1, 2, 3, 4);
        assert_ne!(base, code_tag(9, 2, 3, 4));
        assert_ne!(base, code_tag(1, 9, 3, 4));
        assert_ne!(base, code_tag(1, 2, 9, 4));
        assert_ne!(base, code_tag(1, 2, 3, 9));
    }
}
