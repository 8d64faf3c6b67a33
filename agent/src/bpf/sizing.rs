//! Map sizes, decided in one place at load time from the flags and the CPU count, and logged
//! once. The sizes in `agent-ebpf` are placeholders: every map gets its size here.

use agent_common::{
    counters::Counter,
    names::maps,
    net::PayloadRecord,
    sampler::{SampleRecord, MAX_KERNEL_FRAMES, MAX_USER_FRAMES},
    unwind::{tail_call, ExecMapping, UnwindEntry},
};
use aya::EbpfLoader;
use tracing::info;

use super::DRAIN_INTERVAL;

/// How many drain intervals of samples the `EVENTS` ring holds: room for a drain that runs
/// late (the reader is busy, or descheduled) and for bursts of process events.
const RING_HEADROOM: u64 = 4;
/// Smallest ring buffer (covers bursts of process events on an idle machine).
const MIN_RING_BYTES: u64 = 256 << 10;
/// Largest `EVENTS` ring. A ring's pages are mapped into oxeye twice (the kernel's
/// wrap-around mapping), so each MiB here is 2 MiB of oxeye's RSS: this bounds it on hosts
/// with hundreds of CPUs (at 256 CPUs and 99 Hz it still holds two drains of 128-frame
/// samples, and about eight of typical ones, which are sent at their used length).
const MAX_RING_BYTES: u64 = 8 << 20;
/// Ring-buffer record header the kernel adds to each record.
const RING_RECORD_HEADER: u64 = 8;
/// `NET_EVENTS` bytes per CPU: any CPU may copy a payload on every syscall, so more CPUs can
/// carry more traffic; within [`MIN_NET_RING_BYTES`] and [`MAX_NET_RING_BYTES`].
const NET_RING_BYTES_PER_CPU: u64 = 256 << 10;
/// Smallest `NET_EVENTS`: about a thousand full request payloads between two drains.
const MIN_NET_RING_BYTES: u64 = 8 << 20;
/// Largest `NET_EVENTS`. Measured in a 128-CPU guest, 16 MiB (33 MB of RSS, mapped twice
/// like every ring) would put oxeye past its 120 MB budget; the records, not the ring, are
/// what to shrink for more headroom.
const MAX_NET_RING_BYTES: u64 = 8 << 20;
/// The smallest ring the kernel accepts (one page), for a `NET_EVENTS` nobody writes to.
const IDLE_RING_BYTES: u32 = 4096;
/// Descriptors remembered as not TCP sockets (`NOT_SOCKETS`, LRU).
const NOT_SOCKETS: u32 = 32_768;
/// Threads inside a read/write-like syscall on a tracked socket at once (`PENDING_IO`).
const PENDING_IO: u32 = 16_384;
/// The smallest size of a map that is not used (network tracing off): maps need one entry.
const UNUSED: u32 = 1;
/// `EVENTS` with off-CPU sampling on: 100,000 switch-outs a second at `--off-cpu-threshold 1`
/// are about 6 MB per drain.
const OFF_CPU_RING_BYTES: u32 = 16 << 20;
/// Threads off CPU at once whose switch-out was recorded.
const OFF_CPU_STARTS: u32 = 16_384;

/// Bytes for the `EVENTS` ring buffer: samples per second × CPUs × record size × the drain
/// interval × [`RING_HEADROOM`], rounded up to a power of two (the kernel requires a
/// power-of-two number of pages).
pub fn ring_buffer_bytes(samples_per_second: u64, cpus: usize) -> u32 {
    // A whole native stack; Python frames make a record longer, but few stacks are near
    // either limit, so this is still far above the average record.
    let record = SampleRecord::used_bytes(MAX_KERNEL_FRAMES + MAX_USER_FRAMES) as u64 + RING_RECORD_HEADER;
    let per_drain = samples_per_second.saturating_mul(cpus as u64).saturating_mul(record).saturating_mul(DRAIN_INTERVAL.as_millis() as u64) / 1000;
    per_drain.saturating_mul(RING_HEADROOM).clamp(MIN_RING_BYTES, MAX_RING_BYTES).next_power_of_two() as u32
}

/// Bytes for the `NET_EVENTS` ring buffer: [`NET_RING_BYTES_PER_CPU`] per CPU, within its
/// bounds, a power of two.
pub fn net_ring_bytes(cpus: usize) -> u32 {
    const _: () = assert!(size_of::<PayloadRecord>() as u64 <= MIN_NET_RING_BYTES);
    let wanted = NET_RING_BYTES_PER_CPU.saturating_mul(cpus as u64);
    wanted.clamp(MIN_NET_RING_BYTES, MAX_NET_RING_BYTES).next_power_of_two() as u32
}

/// Bytes each CPU writes to a `NET_EVENTS` of `ring_bytes` between two wake-ups of the
/// reader: an eighth of the ring shared among the CPUs, so a saturated machine (about 170 MB/s
/// of records here) wakes it every few milliseconds and the other seven eighths absorb its
/// scheduling delays. At least [`MIN_NET_WAKE_BYTES`], so many CPUs do not wake it every few
/// records (128 of them then leave at most a quarter of the ring unread).
pub fn net_wake_bytes(ring_bytes: u32, cpus: usize) -> u32 {
    (ring_bytes / 8 / cpus.max(1) as u32).max(MIN_NET_WAKE_BYTES)
}

/// The least a CPU writes to `NET_EVENTS` between two wake-ups.
const MIN_NET_WAKE_BYTES: u32 = 16 << 10;

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
    /// `PYTHON_PROCESSES` entries (CPython processes walked at once; 80 bytes each).
    pub python_processes: u32,
    /// `PYTHON_THREADS` entries (threads of CPython processes remembered; about 64 bytes
    /// each with the kernel's overhead).
    pub python_threads: u32,
    /// `FILE_TABLES` entries (files with a table; 56 bytes each plus the kernel's overhead):
    /// far more than the files whose tables fit in the rows array at once.
    pub file_tables: u32,
    /// `KERNEL_MAPPINGS` entries (young processes whose code mappings the kernel side
    /// records, 336 bytes each; least recently used out).
    pub young_processes: u32,
}

impl UnwindSizes {
    /// Sizes for `table_bytes` of unwind rows. Mappings get an eighth of that, at least
    /// 32,768 entries (1 MiB: thousands of processes with a dozen libraries each); up to 8,192
    /// processes are described at once (more for larger tables).
    pub fn for_table_bytes(table_bytes: u64) -> Self {
        let rows = (table_bytes / size_of::<UnwindEntry>() as u64).clamp(1024, u32::MAX as u64 / 2) as u32;
        let mappings = ((table_bytes / 8) / size_of::<ExecMapping>() as u64).clamp(32_768, 1 << 22) as u32;
        let processes = (mappings / 8).max(8192);
        UnwindSizes { rows, rules: 1 << 16, mappings, processes, python_processes: processes.min(4096), python_threads: 16_384, file_tables: 4096, young_processes: 2048 }
    }
}

/// The size of every map: bytes for ring buffers, entries for the others.
#[derive(Debug, Clone, Copy)]
pub struct MapSizes {
    /// CPUs the sizes are for.
    pub cpus: usize,
    /// `EVENTS` bytes.
    pub events: u32,
    /// `NET_EVENTS` bytes.
    pub net_events: u32,
    /// `CONNECTIONS` and `SOCKETS` entries.
    pub connections: u32,
    /// `NOT_SOCKETS` entries.
    pub not_sockets: u32,
    /// `PENDING_IO` entries.
    pub pending_io: u32,
    /// `OFF_CPU_STARTS` entries.
    pub off_cpu_starts: u32,
    /// The unwinder's maps.
    pub unwind: UnwindSizes,
}

impl MapSizes {
    /// Sizes for `cpus` CPUs sampled `samples_per_second` times a second, with `unwind_table_bytes`
    /// of unwind rows, and `max_connections` tracked when `network` is on (else the network maps
    /// get the least the kernel accepts), with room for switch-outs when `off_cpu` is on.
    pub fn decide(samples_per_second: u64, cpus: usize, unwind_table_bytes: u64, network: bool, max_connections: u32, off_cpu: bool) -> Self {
        let on = |size: u32| if network { size } else { UNUSED };
        MapSizes {
            cpus,
            // Switch-outs come at the rate the machine switches, not at the sampling rate.
            events: if off_cpu { OFF_CPU_RING_BYTES } else { ring_buffer_bytes(samples_per_second, cpus) },
            off_cpu_starts: if off_cpu { OFF_CPU_STARTS } else { UNUSED },
            net_events: if network { net_ring_bytes(cpus) } else { IDLE_RING_BYTES },
            connections: on(max_connections.max(1)),
            not_sockets: on(NOT_SOCKETS),
            pending_io: on(PENDING_IO),
            unwind: UnwindSizes::for_table_bytes(unwind_table_bytes),
        }
    }

    /// Every map's size, by name.
    pub fn all(&self) -> [(&'static str, u32); 24] {
        [
            (maps::EVENTS, self.events),
            (maps::COUNTERS, Counter::COUNT),
            // One sample, or one payload, being built per CPU (per-CPU arrays).
            (maps::SCRATCH, 1),
            (maps::UNWIND_ROWS, self.unwind.rows),
            (maps::UNWIND_RULES, self.unwind.rules),
            (maps::EXEC_MAPPINGS, self.unwind.mappings),
            (maps::PROCESS_MAPPINGS, self.unwind.processes),
            (maps::PYTHON_PROCESSES, self.unwind.python_processes),
            (maps::PYTHON_THREADS, self.unwind.python_threads),
            (maps::UNWIND_PROGRAMS, tail_call::COUNT),
            (maps::OFF_CPU_PROGRAMS, tail_call::COUNT),
            (maps::OFF_CPU_STARTS, self.off_cpu_starts),
            (maps::NET_EVENTS, self.net_events),
            (maps::CONNECTIONS, self.connections),
            (maps::NOT_SOCKETS, self.not_sockets),
            (maps::SOCKETS, self.connections),
            (maps::PENDING_IO, self.pending_io),
            // A thread in a send, or serving a request, at once: as PENDING_IO.
            (maps::SEND_STARTS, self.pending_io),
            (maps::SERVING_REQUESTS, self.pending_io),
            // A count per CPU (per-CPU array).
            (maps::WAKE_PENDING, 1),
            (maps::PAYLOAD_SCRATCH, 1),
            (maps::FILE_TABLES, self.unwind.file_tables),
            (maps::KERNEL_MAPPINGS, self.unwind.young_processes),
            // Threads inside an mmap of code at once.
            (maps::PENDING_MMAPS, 1024),
        ]
    }

    /// Sets every map's size on `loader`.
    pub fn apply(&self, loader: &mut EbpfLoader<'_>) {
        for (name, size) in self.all() {
            loader.map_max_entries(name, size);
        }
    }

    /// Logs the sizes: one line, once, at start.
    pub fn log(&self) {
        info!(
            cpus = self.cpus,
            events_kib = self.events / 1024,
            net_events_kib = self.net_events / 1024,
            connections = self.connections,
            not_sockets = self.not_sockets,
            pending_io = self.pending_io,
            off_cpu_starts = self.off_cpu_starts,
            unwind_rows = self.unwind.rows,
            unwind_rules = self.unwind.rules,
            exec_mappings = self.unwind.mappings,
            processes = self.unwind.processes,
            python_processes = self.unwind.python_processes,
            "map sizes"
        );
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
        // 99 Hz on 64 CPUs: 634 records of 1,608 bytes per 100 ms drain, four drains' worth
        // (4.1 MB), rounded up to a power of two.
        assert_eq!(ring_buffer_bytes(99, 64), 4 << 20);
        // From 128 CPUs on, the ceiling.
        assert_eq!(ring_buffer_bytes(99, 128), 8 << 20);
        assert_eq!(ring_buffer_bytes(99, 256), 8 << 20);
        // A small host gets the floor.
        assert_eq!(ring_buffer_bytes(99, 2), 256 << 10);
        assert_eq!(ring_buffer_bytes(10_000, 1024), 8 << 20);
    }

    #[test]
    fn network_ring_is_bounded() {
        // Bounded for memory: 8 MiB on every host for now.
        assert_eq!(net_ring_bytes(1), 8 << 20);
        assert_eq!(net_ring_bytes(32), 8 << 20);
        assert_eq!(net_ring_bytes(1024), 8 << 20);
    }

    #[test]
    fn network_maps_are_minimal_when_off() {
        // That every map is sized is checked against the object by `contract`.
        let off = MapSizes::decide(99, 2, 32 << 20, false, 10_000, false);
        assert!(off.all().iter().all(|&(_, size)| size >= 1));
        assert_eq!((off.net_events, off.connections, off.not_sockets, off.pending_io), (4096, 1, 1, 1));
        let on = MapSizes::decide(99, 2, 32 << 20, true, 10_000, true);
        assert_eq!((on.net_events, on.connections, on.not_sockets, on.pending_io), (8 << 20, 10_000, 32_768, 16_384));
    }
}
