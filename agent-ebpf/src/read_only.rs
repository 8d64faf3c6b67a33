//! Settings user space writes into the object before loading it, read in place.
//!
//! aya's `Global::load` copies the whole value with a volatile read, every field on every use:
//! for the network settings that was about 50 loads and a dozen spills at the top of each
//! socket-hook run. [`ReadOnly::get`] instead hands out a reference whose fields are read as
//! they are used. The value stays in `.rodata`, so the verifier still sees its contents as
//! constants and prunes disabled paths.

use core::mem::MaybeUninit;

/// A value in `.rodata` that the loader overrides by its symbol's name.
#[repr(transparent)]
pub struct ReadOnly<T>(MaybeUninit<T>);

// SAFETY: nothing writes the value once the object is loaded.
unsafe impl<T: Sync> Sync for ReadOnly<T> {}

impl<T> ReadOnly<T> {
    /// The value the object carries until the loader overrides it.
    pub const fn new(value: T) -> Self {
        Self(MaybeUninit::new(value))
    }

    /// The value as loaded.
    #[inline(always)]
    pub fn get(&'static self) -> &'static T {
        // The compiler sees the initializer above and would fold reads of it into constants:
        // the pointer is passed through a volatile read so it cannot see where it points.
        let pointer = self.0.as_ptr();
        // SAFETY: a read of a local.
        let pointer = unsafe { core::ptr::read_volatile(&pointer) };
        // SAFETY: initialized by `new`, overridden whole by the loader, never written after.
        unsafe { &*pointer }
    }
}
