//! The symbol endpoint (`--symbols-listen`): devfiler's symbol protocol, so that a devfiler
//! started with `--symb-endpoint http://ADDR` names the native frames oxeye sends it.
//!
//! devfiler names native frames itself, by (file ID, address), from symbols it fetches per
//! file. oxeye serves, for every executable file a profiled process mapped:
//!
//! - [`catalog`]: which files those are (published by the object registry), and how to read
//!   them again later;
//! - [`ranges`]: a file's symbfile, built from its symbol tables and DWARF, zstd-compressed;
//! - [`server`]: the HTTP routes and what is refused.

pub mod catalog;
pub mod ranges;
pub mod server;

pub use catalog::Catalog;
pub use ranges::RangesBuilder;
