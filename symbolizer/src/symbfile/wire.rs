//! The messages of a symbfile, as protobuf (prost) structs with the field numbers of the
//! format's schema (`symbfile.proto` in the OpenTelemetry eBPF profiler's `symb-proto`), and the
//! framing: `symbfile`, then messages each preceded by two varints, the body's length and the
//! message type.

use prost::Message;

/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"symbfile";

/// Largest message body a reader takes.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Message types (the `MessageType` enum of the schema). Return pads (3) are never written:
/// devfiler refuses a ranges file that holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum MessageType {
    /// The first message; empty.
    Header = 1,
    /// One address range.
    RangeV1 = 2,
    /// A string table that replaces the previous one.
    StringTableV1 = 4,
}

/// One address range `[elf_va, elf_va + length)` of a function or of one inlined instance.
///
/// The schema lets each string be inline (`funcStr`, tags 3, 4, 6) or an index into the
/// current string table (`funcRef`, tags 9, 10, 11); oxeye always writes indices.
#[derive(Clone, PartialEq, Message)]
pub struct RangeV1 {
    /// The start address: a delta from the previous range's start, or absolute.
    #[prost(oneof = "ElfVa", tags = "1, 12")]
    pub elf_va: Option<ElfVa>,
    /// Bytes covered.
    #[prost(uint64, tag = "2")]
    pub length: u64,
    /// The function's (demangled) name, as a string-table index.
    #[prost(uint32, optional, tag = "9")]
    pub func_ref: Option<u32>,
    /// The source file the line table refers to.
    #[prost(uint32, optional, tag = "10")]
    pub file_ref: Option<u32>,
    /// For an inlined instance: the line of its call site in the caller.
    #[prost(uint32, tag = "5")]
    pub call_line: u32,
    /// For an inlined instance: the file of its call site.
    #[prost(uint32, optional, tag = "11")]
    pub call_file_ref: Option<u32>,
    /// 0 for a function, 1 for what is inlined into it, and so on.
    #[prost(uint32, tag = "7")]
    pub depth: u32,
    /// Line numbers by offset.
    #[prost(message, optional, tag = "8")]
    pub line_table: Option<LineTable>,
}

/// How a range's start address is written.
#[derive(Clone, Copy, PartialEq, prost::Oneof)]
pub enum ElfVa {
    /// Relative to the previous range's start.
    #[prost(sint64, tag = "1")]
    Delta(i64),
    /// Absolute.
    #[prost(uint64, tag = "12")]
    Set(u64),
}

/// Line numbers of a range: entry `i` starts at the sum of `offset[..=i]` bytes past the
/// range's start and lasts until the next entry (or the range's end).
#[derive(Clone, PartialEq, Message)]
pub struct LineTable {
    /// Offsets, each relative to the previous entry's (the first to the range's start).
    #[prost(uint32, repeated, tag = "1")]
    pub offset: Vec<u32>,
    /// Line numbers in the range's file.
    #[prost(uint32, repeated, tag = "2")]
    pub line_number: Vec<u32>,
}

/// The string table that later `*Ref` fields index.
#[derive(Clone, PartialEq, Message)]
pub struct StringTableV1 {
    /// The strings.
    #[prost(string, repeated, tag = "1")]
    pub strings: Vec<String>,
}

/// Appends one framed message to `out`.
pub fn frame(out: &mut Vec<u8>, kind: MessageType, body: &impl Message) {
    let length = body.encoded_len();
    prost::encoding::encode_varint(length as u64, out);
    prost::encoding::encode_varint(kind as u64, out);
    body.encode_raw(out);
}
