//! STUB.
use super::{linetable::LineTable, memory::ProcessMemory, versions::VersionLayout};
/// A code object.
#[derive(Debug, Clone)]
pub struct CodeObject { pub name: String, pub filename: String, pub first_line: u32, pub tag: u32, pub lines: LineTable }
/// Error.
#[derive(Debug, thiserror::Error)]
pub enum CodeError { #[error("not code")] NotCode }
/// Reads.
pub fn read_code(_m: &ProcessMemory, _l: &VersionLayout, _t: u64, _a: u64) -> Result<CodeObject, CodeError> { Err(CodeError::NotCode) }
