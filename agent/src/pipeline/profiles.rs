//! The profile pipeline: samples and process events from the `EVENTS` ring buffer into the
//! [`Collector`], OTLP profiles every reporting interval, and the output files at exit.

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{debug_sources::DebugSources, jit::JitFigures, python::PythonFigures};
use crate::{
    bpf::Counters,
    collector::Collector,
    export::{Exporter, Profiles},
    live::{ExportFigures, LiveStats},
    off_cpu::OffCpuCounts,
    otlp::resource::HostInfo,
    output::RunInfo,
    unwind::UnwindStats,
};
use agent_common::counters::Counter;

/// Bytes per unwind row in the kernel.
const ROW_BYTES: u64 = size_of::<agent_common::unwind::UnwindEntry>() as u64;

/// Samples in, profiles out.
pub struct ProfilePipeline {
    ring: AsyncFd<RingBuf<MapData>>,
    collector: Collector,
    exporter: Option<Exporter<Profiles>>,
    host: HostInfo,
    /// Nanoseconds of CPU time one sample stands for.
    period_ns: u64,
}

impl ProfilePipeline {
    /// A pipeline reading `ring` into `collector`, exporting through `exporter` if set.
    pub fn new(ring: RingBuf<MapData>, collector: Collector, exporter: Option<Exporter<Profiles>>, host: HostInfo, period_ns: u64) -> Result<Self> {
        // SAFETY: the ring buffer owns its fd and keeps it open while registered.
        let ring = unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("cannot poll the BPF ring buffer: {e}"))?;
        Ok(ProfilePipeline { ring, collector, exporter, host, period_ns })
    }

    /// Waits until the kernel signals records, and reads them.
    pub async fn readable(&mut self) -> Result<()> {
        let mut guard = self.ring.readable_mut().await.context("polling the BPF ring buffer")?;
        drain(guard.get_inner_mut(), &mut self.collector);
        guard.clear_ready();
        Ok(())
    }

    /// Reads every record waiting (samples are sent without waking user space up).
    pub fn drain(&mut self) {
        drain(self.ring.get_mut(), &mut self.collector);
    }

    /// When execs waiting to settle are due to be read (then [`Self::drain`]).
    pub fn exec_settle_deadline(&self) -> Option<std::time::Instant> {
        self.collector.exec_settle_deadline()
    }

    /// Whether this pipeline exports anything on the reporting interval.
    pub fn exporting(&self) -> bool {
        self.exporter.is_some()
    }

    /// Encodes the samples of the interval that just ended and queues them for the collector.
    pub fn report(&mut self) {
        self.report_interval(false);
    }

    /// As [`Self::report`]; `last` when no interval follows.
    fn report_interval(&mut self, last: bool) {
        let Some(exporter) = &self.exporter else { return };
        let Some((request, samples, dropped)) = self.collector.take_request(&self.host, self.period_ns, last) else { return };
        exporter.stats.add_dropped(dropped);
        if samples > 0 {
            exporter.submit(request, samples);
        }
    }

    /// Sweeps exited processes.
    pub fn expire(&mut self) {
        self.collector.expire();
    }

    /// Whether the `--pid` target has exited.
    pub fn target_exited(&self) -> bool {
        self.collector.target_exited()
    }

    /// What the live view shows, with the kernel's `counters`.
    pub fn live_stats(&self, counters: &Counters, elapsed: std::time::Duration, rate: u64) -> LiveStats<'_> {
        let counts = self.collector.counts();
        LiveStats {
            elapsed,
            rate,
            samples: counts.received,
            lost_in_kernel: counters.lost(),
            dropped_full: counts.dropped_full,
            idle_skipped: counters.get(Counter::IdleSkipped),
            processes: counts.processes,
            stacks: counts.stacks,
            export: self.exporter.as_ref().map(|e| ExportFigures::of(&e.stats, e.queued_bytes() as u64)),
            top: self.collector.top(),
        }
    }

    /// Ages the live view's counts.
    pub fn decay_top(&mut self) {
        self.collector.decay_top();
    }

    /// After the programs are detached: takes the last records, exports them, writes the files
    /// to `output_dir`, and returns the run's closing line.
    pub async fn finish(mut self, counters: &Counters, run: RunInfo, output_dir: &Path, flush_by: tokio::time::Instant) -> Result<String> {
        self.drain();
        self.report_interval(true);
        if let Some(exporter) = self.exporter.take() {
            let stats = exporter.stats.clone();
            exporter.shutdown(flush_by).await;
            eprintln!(
                "oxeye: exported {} samples ({} dropped, {} refused by the collector, {} failed attempts)",
                stats.exported(),
                stats.dropped(),
                stats.rejected(),
                stats.failed_attempts()
            );
        }
        if let Some(unwinder) = self.collector.take_unwinder() {
            let stats = unwinder.stats();
            drop(unwinder);
            eprintln!("oxeye: {}", unwind_summary(&stats));
        }
        let walks = counters.get(Counter::PythonWalks);
        if walks > 0 {
            eprintln!("oxeye: {}", python_summary(walks, counters, &self.collector.python_figures()));
        }
        let jit = self.collector.jit_figures();
        if jit.maps > 0 || jit.refused > 0 || jit.jvm_written + jit.jvm_failed > 0 {
            eprintln!("oxeye: {}", jit_summary(&jit));
        }
        if run.off_cpu {
            eprintln!("oxeye: {}", off_cpu_summary(&self.collector.off_cpu_counts(), counters));
        }
        let written = self.collector.write_outputs(output_dir, run)?;
        let skipped = self.collector.execs_skipped();
        let kernel = self.collector.kernel_file_counts();
        if skipped > 0 || kernel.samples_with_hints > 0 {
            eprintln!(
                "oxeye: processes: {skipped} exited within 10 ms of their exec (their maps were never read); {} samples walked and named from the {} code mappings the kernel recorded ({} missed), {} frames with their files' tables; {} execs of known executables ({} not reachable)",
                kernel.samples_with_hints,
                counters.get(Counter::KernelMappingsRecorded),
                counters.get(Counter::KernelMappingsMissed),
                counters.get(Counter::FileTableFrames),
                kernel.exec_files,
                kernel.exec_files_unreachable,
            );
        }
        let (sources, dwarf) = self.collector.debug_figures();
        if let Some(line) = debug_summary(sources) {
            eprintln!("oxeye: {line}");
        }
        if dwarf.files + dwarf.over_budget > 0 {
            eprintln!("oxeye: dwarf: inlined frames from {} files ({} KiB of indexes; {} files over the memory budget)", dwarf.files, dwarf.bytes / 1024, dwarf.over_budget);
        }
        let counts = self.collector.counts();
        let in_flight = counters.get(Counter::SamplesSent).saturating_sub(counts.received);
        Ok(format!(
            "oxeye: {} samples in {:.1}s ({} lost in kernel, {} dropped when full, {} malformed, {} unaccounted); wrote {}",
            counts.counted,
            run.duration.as_secs_f64(),
            counters.lost(),
            counts.dropped_full,
            counts.malformed,
            in_flight,
            written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        ))
    }
}

fn python_summary(walks: u64, counters: &Counters, figures: &PythonFigures) -> String {
    format!(
        "python: {walks} samples walked ({} on threads without Python state, {} cut by a failed read, {} walker calls failed); {} functions named ({} KiB), {} code objects read ({} cached), {} frames unnamed; {} processes attached at the end",
        counters.get(Counter::PythonThreadNotFound),
        counters.get(Counter::PythonReadFailed),
        counters.get(Counter::PythonTailCallFailed),
        figures.functions,
        figures.function_bytes / 1024,
        figures.code_reads,
        figures.cached_code_objects,
        figures.unnamed_frames,
        figures.processes,
    )
}

fn debug_summary(sources: &DebugSources) -> Option<String> {
    let figures = sources.figures();
    let Some(stats) = sources.debuginfod_stats() else {
        return (figures.local > 0).then(|| format!("debug files: {} files completed from debug files on this host", figures.local));
    };
    let mean_ms = stats.fetch_latency_total.as_secs_f64() * 1000.0 / stats.fetch_count.max(1) as f64;
    Some(format!(
        "debug files: {} files completed from debug files on this host, {} from debuginfod ({} still waiting); debuginfod: {} fetched (mean {mean_ms:.0} ms), {} not found, {} failed, {} too large, {} dropped; cache {} files, {} KiB",
        figures.local,
        figures.fetched,
        figures.waiting,
        stats.fetched,
        stats.not_found,
        stats.failed,
        stats.too_large,
        stats.dropped,
        stats.cache_files,
        stats.cache_bytes / 1024
    ))
}

fn off_cpu_summary(counts: &OffCpuCounts, counters: &Counters) -> String {
    format!(
        "off-CPU: {} switch-outs recorded, {} paired with their ends ({:.3} s off CPU); {} not recorded (map full), {} ends lost (ring full), {} ends unmatched, {} given up waiting, {} of threads that exited off CPU",
        counters.get(Counter::OffCpuRecorded),
        counts.events,
        counts.nanoseconds as f64 / 1e9,
        counters.get(Counter::OffCpuMapFull),
        counters.get(Counter::OffCpuEndRingFull),
        counts.unmatched_ends,
        counts.given_up,
        counters.get(Counter::OffCpuStale)
    )
}

fn jit_summary(figures: &JitFigures) -> String {
    let asked = match figures.jvm_written + figures.jvm_failed {
        0 => String::new(),
        _ => format!("; JVMs asked for perf maps: {} written, {} failed", figures.jvm_written, figures.jvm_failed),
    };
    format!(
        "jit: {} frames named from {} perf maps ({} code ranges, {} functions, {} KiB); {} perf maps refused{asked}",
        figures.named_frames, figures.maps, figures.ranges, figures.functions, figures.function_bytes / 1024, figures.refused
    )
}

fn unwind_summary(stats: &UnwindStats) -> String {
    let tables = &stats.tables;
    format!(
        "unwind tables: {} files, {} rows ({:.1} of {:.0} MiB), {} rules, {} processes, {} mappings; {} compiled, {} evicted, {} without room, {} without unwind info; slowest process {:.0} ms",
        tables.tables,
        tables.rows,
        (tables.rows * ROW_BYTES) as f64 / (1 << 20) as f64,
        (tables.capacity * ROW_BYTES) as f64 / (1 << 20) as f64,
        tables.rules,
        stats.processes,
        stats.mappings,
        tables.compiled,
        tables.evicted,
        tables.no_room,
        tables.without_info,
        stats.slowest_describe.as_secs_f64() * 1e3,
    )
}

/// Reads every record waiting in the ring buffer.
fn drain(ring: &mut RingBuf<MapData>, collector: &mut Collector) {
    while let Some(item) = ring.next() {
        collector.handle(&item);
    }
    collector.end_of_batch();
}
