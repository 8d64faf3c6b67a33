//! OTLP profiles: the samples of one reporting interval, and their encoding as an
//! `ExportProfilesServiceRequest` (profiles proto v1development, as devfiler 0.15 speaks it).

mod batch;
mod builder;
pub mod dictionary;
pub mod resource;
pub mod wire;

pub use batch::{BatchSample, SampleBatch};
pub use builder::{build_request, BuildContext};
