//! Map sizes, decided in one place at load time.

use agent_common::sampler::SampleRecord;

/// Seconds of samples the ring buffer holds if user space stops reading.
const RING_SLACK_SECONDS: u64 = 2;
/// Smallest ring buffer (covers bursts of process events on an idle machine).
const MIN_RING_BYTES: u64 = 256 << 10;
/// Largest ring buffer: bounds kernel memory on hosts with hundreds of CPUs.
const MAX_RING_BYTES: u64 = 64 << 20;
/// Ring-buffer record header the kernel adds to each record.
const RING_RECORD_HEADER: u64 = 8;

/// Bytes for the `EVENTS` ring buffer: samples per second × CPUs × record size × slack,
/// rounded up to a power of two (the kernel requires a power-of-two number of pages).
pub fn ring_buffer_bytes(samples_per_second: u64, cpus: usize) -> u32 {
    let record = size_of::<SampleRecord>() as u64 + RING_RECORD_HEADER;
    let wanted = samples_per_second.saturating_mul(cpus as u64).saturating_mul(record).saturating_mul(RING_SLACK_SECONDS);
    wanted.clamp(MIN_RING_BYTES, MAX_RING_BYTES).next_power_of_two() as u32
}

/// Sizes of the unwinder's maps.
#[derive(Debug, Clone, Copy)]
pub struct UnwindSizes {
    /// `UNWIND_ROWS` entries (8 bytes each).
    pub rows: u32,
    /// `UNWIND_RULES` entries (16 bytes each).
    pub rules: u32,
    /// `EXEC_MAPPINGS` entries (32 bytes each).
    pub mappings: u32,
    /// `PROCESS_MAPPINGS` entries (processes described at once).
    pub processes: u32,
}

impl UnwindSizes {
    /// Sizes for `table_bytes` of unwind rows. Mappings get an eighth of that, at least
    /// 32,768 entries (1 MiB: thousands of processes with a dozen libraries each); up to 8,192
    /// processes are described at once (more for larger tables).
    pub fn for_table_bytes(table_bytes: u64) -> Self {
        let rows = (table_bytes / size_of::<agent_common::unwind::UnwindEntry>() as u64).clamp(1024, u32::MAX as u64 / 2) as u32;
        let mappings = ((table_bytes / 8) / size_of::<agent_common::unwind::ExecMapping>() as u64).clamp(32_768, 1 << 22) as u32;
        UnwindSizes { rows, rules: 1 << 16, mappings, processes: (mappings / 8).max(8192) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_two_within_bounds() {
        for (rate, cpus) in [(1, 1), (20, 2), (99, 2), (99, 128), (10_000, 1024)] {
            let bytes = ring_buffer_bytes(rate, cpus) as u64;
            assert!(bytes.is_power_of_two() && (MIN_RING_BYTES..=MAX_RING_BYTES).contains(&bytes), "{rate} Hz × {cpus}: {bytes}");
        }
        // 99 Hz on 128 CPUs needs about 40 MB for two seconds.
        assert_eq!(ring_buffer_bytes(99, 128), 64 << 20);
    }
}
