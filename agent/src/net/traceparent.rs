//! W3C Trace Context: parsing the `traceparent` header, and generating trace and span ids.
//!
//! A `traceparent` seen on a traced request makes oxeye's span a child of the caller's; without
//! one oxeye starts a trace of its own, with ids from [`IdGenerator`].
//! See <https://www.w3.org/TR/trace-context/#traceparent-header>.

use std::io::Read;

/// Length of a version-00 `traceparent`: `vv-` + 32 + `-` + 16 + `-ff`.
const LEN_V00: usize = 55;

/// The fields of a valid `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace's id; never all zeros.
    pub trace_id: [u8; 16],
    /// The id of the caller's span, which becomes the parent of ours; never all zeros.
    pub parent_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`, the others are reserved.
    pub flags: u8,
}

impl TraceContext {
    /// Whether the caller recorded its span (the `sampled` flag).
    #[cfg(test)]
    pub fn sampled(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// Parses a `traceparent` header value, ignoring surrounding whitespace; `None` if it is not
/// valid.
///
/// Version 00 is exactly `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, all hex in
/// lowercase, with neither id all zeros. Version `ff` is forbidden. Later versions, which we do
/// not know, are read as version 00 if they start like one and continue, if at all, with `-`,
/// as the specification asks, so that a new field does not break the trace.
pub fn parse(value: &str) -> Option<TraceContext> {
    let bytes = value.trim().as_bytes();
    if bytes.len() < LEN_V00 {
        return None;
    }
    let version = hex_byte(&bytes[0..2])?;
    let tail_ok = match version {
        0x00 => bytes.len() == LEN_V00,
        0xff => false,
        _ => bytes.len() == LEN_V00 || bytes[LEN_V00] == b'-',
    };
    if !tail_ok || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let trace_id: [u8; 16] = hex_bytes(&bytes[3..35])?;
    let parent_id: [u8; 8] = hex_bytes(&bytes[36..52])?;
    let flags = hex_byte(&bytes[53..55])?;
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceContext { trace_id, parent_id, flags })
}

/// The value of one lowercase hex digit; the specification does not allow uppercase.
fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

/// The byte that two lowercase hex digits spell.
fn hex_byte(digits: &[u8]) -> Option<u8> {
    match digits {
        [high, low] => Some(hex_digit(*high)? << 4 | hex_digit(*low)?),
        _ => None,
    }
}

/// The `N` bytes that `2 * N` lowercase hex digits spell.
fn hex_bytes<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(bytes)
}

/// A fast generator of random trace and span ids: xoshiro256** seeded from `/dev/urandom`.
///
/// Ids need to be unique, not secret, so a small statistical generator is enough and avoids a
/// syscall per span; it is not fit for anything cryptographic.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    state: [u64; 4],
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    /// A generator seeded from `/dev/urandom`, or, should that be unreadable, from the clock,
    /// the process id and an address, which still differ between agents started together.
    pub fn new() -> Self {
        let seed = urandom_seed().unwrap_or_else(fallback_seed);
        // xoshiro's one bad state; splitmix outputs of distinct states are distinct, so at most
        // one fallback word is zero, but urandom might, in theory, give all zeros.
        let state = if seed == [0; 4] { [1, 2, 3, 4] } else { seed };
        IdGenerator { state }
    }

    /// A random trace id, never all zeros (which means "invalid").
    pub fn trace_id(&mut self) -> [u8; 16] {
        loop {
            let id = u128::from(self.next()) << 64 | u128::from(self.next());
            if id != 0 {
                return id.to_be_bytes();
            }
        }
    }

    /// A random span id, never all zeros (which means "invalid").
    pub fn span_id(&mut self) -> [u8; 8] {
        loop {
            let id = self.next();
            if id != 0 {
                return id.to_be_bytes();
            }
        }
    }

    /// The next xoshiro256** output (Blackman and Vigna, <https://prng.di.unimi.it/>).
    fn next(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.state;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }
}

/// 256 bits from the kernel's random pool.
fn urandom_seed() -> Option<[u64; 4]> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").ok()?.read_exact(&mut bytes).ok()?;
    let mut seed = [0u64; 4];
    for (word, chunk) in seed.iter_mut().zip(bytes.chunks_exact(8)) {
        *word = u64::from_ne_bytes(chunk.try_into().ok()?);
    }
    Some(seed)
}

/// A seed from what differs between processes and runs, spread over 256 bits by splitmix64.
fn fallback_seed() -> [u64; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let local = 0u8;
    let address = std::ptr::addr_of!(local) as u64; // Varies with ASLR.
    let mut mix = nanos ^ u64::from(std::process::id()).rotate_left(32) ^ address;
    [(); 4].map(|()| splitmix64(&mut mix))
}

/// One step of splitmix64, the generator xoshiro's authors recommend for seeding.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn spec_example_parses() {
        let context = parse(VALID).expect("valid");
        assert_eq!(
            context.trace_id,
            [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36]
        );
        assert_eq!(context.parent_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(context.flags, 1);
        assert!(context.sampled());
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!unsampled.sampled());
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        assert!(parse(&format!(" \t{VALID} ")).is_some());
    }

    #[test]
    fn later_versions_may_carry_more_fields() {
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-the-future-will-be-like";
        assert_eq!(parse(future).map(|context| context.flags), Some(9));
        assert!(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        assert!(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what").is_none());
    }

    #[test]
    fn invalid_values_are_rejected() {
        for value in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0G",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-010",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7aa-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7é01",
        ] {
            assert_eq!(parse(value), None, "{value}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x1234_5678_9abc_def1u64;
        let alphabet = "0123456789abcdefABCDEF- \té\u{0}";
        let chars: Vec<char> = alphabet.chars().collect();
        for _ in 0..100_000 {
            let len = (splitmix64(&mut state) % 70) as usize;
            let value: String =
                (0..len).map(|_| chars[(splitmix64(&mut state) % chars.len() as u64) as usize]).collect();
            if let Some(context) = parse(&value) {
                assert!(context.trace_id != [0; 16] && context.parent_id != [0; 8]);
            }
        }
    }

    #[test]
    fn generated_ids_are_distinct_and_round_trip() {
        let mut ids = IdGenerator::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let (trace_id, span_id) = (ids.trace_id(), ids.span_id());
            assert!(trace_id != [0; 16] && span_id != [0; 8]);
            assert!(seen.insert(span_id));
            let hex = |bytes: &[u8]| bytes.iter().map(|byte| format!("{byte:02x}")).collect::<String>();
            let header = format!("00-{}-{}-01", hex(&trace_id), hex(&span_id));
            assert_eq!(parse(&header), Some(TraceContext { trace_id, parent_id: span_id, flags: 1 }));
        }
    }

    #[test]
    fn generators_differ() {
        assert_ne!(IdGenerator::new().trace_id(), IdGenerator::new().trace_id());
        assert_ne!(fallback_seed(), [0; 4]);
    }

    #[test]
    fn xoshiro_matches_reference() {
        // First outputs of the reference C implementation for state {1, 2, 3, 4}.
        let mut ids = IdGenerator { state: [1, 2, 3, 4] };
        let outputs: Vec<u64> = (0..3).map(|_| ids.next()).collect();
        assert_eq!(outputs, [11520, 0, 1509978240]);
    }
}
