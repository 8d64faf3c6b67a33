//! Which HTTP request each server thread is serving, so the CPU sampler can say which
//! request a sample was taken in.
//!
//! A thread serves a request from its receive of the request's first bytes to its send of the
//! response's first bytes, both on the same connection. The rule is per thread, so it holds
//! for thread-per-request servers and worker processes; an event loop that receives a second
//! request before answering the first makes the thread's slot ambiguous, and its samples are
//! linked to no request until its next response empties the slot. Work handed to another
//! thread is not linked. User space checks each link against the span's start and end, so a
//! slot left behind by a request that was never answered links nothing.

use agent_common::net::ServingRequest;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use super::{check_insert, SERVING_REQUESTS};

/// A server thread received a request's first bytes on `sock` at `started_ns` (the request
/// record's timestamp).
#[inline(always)]
pub fn request_received(sock: u64, started_ns: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    match SERVING_REQUESTS.get_ptr_mut(&pid_tgid) {
        // SAFETY: a valid map value pointer; only this thread's programs write it.
        Some(slot) => unsafe {
            if (*slot).sock == 0 {
                *slot = ServingRequest { sock, started_ns, samples: 0, flags: 0 };
            } else {
                (*slot).flags |= ServingRequest::AMBIGUOUS;
            }
        },
        None => check_insert(SERVING_REQUESTS.insert(&pid_tgid, &ServingRequest { sock, started_ns, samples: 0, flags: 0 }, 0)),
    }
}

/// What the sampler saw of a request: its CPU samples, and whether the off-CPU sampler
/// recorded the thread switched out in it.
#[derive(Clone, Copy, Default)]
pub struct Sampled {
    /// CPU samples.
    pub cpu_samples: u32,
    /// Off-CPU events.
    pub off_cpu: bool,
}

/// A server thread sent a response's first bytes on `sock`: what was sampled while it served
/// the request, if the thread served that one request alone (else nothing). Empties the slot.
#[inline(always)]
pub fn response_sent(sock: u64) -> Sampled {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(slot) = SERVING_REQUESTS.get_ptr_mut(&pid_tgid) else { return Sampled::default() };
    // SAFETY: a valid map value pointer; only this thread's programs write it.
    unsafe {
        if (*slot).sock == 0 {
            return Sampled::default();
        }
        // An ambiguous slot ends at any response; another connection's response leaves an
        // unambiguous slot as it is.
        let ambiguous = (*slot).flags & ServingRequest::AMBIGUOUS != 0;
        if !ambiguous && (*slot).sock != sock {
            return Sampled::default();
        }
        let sampled = if ambiguous {
            Sampled::default()
        } else {
            Sampled { cpu_samples: (*slot).samples, off_cpu: (*slot).flags & ServingRequest::OFF_CPU_EVENTS != 0 }
        };
        (*slot).sock = 0;
        (*slot).flags = 0;
        sampled
    }
}

/// The request the current thread is serving, for a sample taken now: `(sock, started_ns)`,
/// or zeros. Counts the sample in the request if it is a CPU sample (`on_cpu`), else marks
/// the request as having off-CPU events.
#[inline(always)]
pub fn sampled(pid_tgid: u64, on_cpu: bool) -> (u64, u64) {
    let Some(slot) = SERVING_REQUESTS.get_ptr_mut(&pid_tgid) else { return (0, 0) };
    // SAFETY: a valid map value pointer. The thread is interrupted by this sample, so its own
    // programs cannot write the slot meanwhile.
    unsafe {
        if (*slot).sock == 0 || (*slot).flags & ServingRequest::AMBIGUOUS != 0 {
            return (0, 0);
        }
        if on_cpu {
            (*slot).samples += 1;
        } else {
            (*slot).flags |= ServingRequest::OFF_CPU_EVENTS;
        }
        ((*slot).sock, (*slot).started_ns)
    }
}
