//! Types shared by oxeye's BPF programs (`agent-ebpf`) and its user-space agent.
//!
//! Everything here is `#[repr(C)]`, has no implicit padding and no `bool`, so both sides
//! agree on the layout byte for byte. The `user` feature adds `aya::Pod` impls.
#![no_std]
#![deny(missing_docs)]

pub mod counters;
pub mod files;
pub mod names;
pub mod net;
pub mod python;
pub mod records;
pub mod sampler;
pub mod tracepoints;
pub mod unwind;

/// Implements `aya::Pod` for plain-data types when built for user space.
macro_rules! impl_pod {
    ($($ty:ty),* $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: the type is `#[repr(C)]`, `Copy`, and has no padding or invalid bit patterns.
            unsafe impl aya::Pod for $ty {}
        )*
    };
}
pub(crate) use impl_pod;
