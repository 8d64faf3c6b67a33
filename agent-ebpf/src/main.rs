//! oxeye's BPF programs.
//!
//! - [`sampler`]: perf_event program sampling kernel and user stacks on every CPU.
//! - [`unwinder`]: walks user stacks with `.eh_frame` tables, tail-calling itself.
//! - [`files`]: which file a frame is in, from the kernel, for processes too brief to read.
//! - [`python`]: walks CPython frames after the native walk, tail-calling itself.
//! - [`process_events`]: tracepoints reporting process exec and exit.
//! - [`net`]: TCP connections and HTTP payloads, from syscall tracepoints, and TCP statistics
//!   at close from fentry, a kprobe or a socket tracepoint.
//!
//! Maps shared by the programs live in [`maps`]; their sizes are set by user space at load time.
#![no_std]
#![no_main]

mod fd_table;
mod files;
mod maps;
mod net;
mod off_cpu;
mod process_events;
mod python;
mod read_only;
mod sampler;
mod unwinder;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // BPF cannot panic; the verifier rejects any path that would reach here.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
