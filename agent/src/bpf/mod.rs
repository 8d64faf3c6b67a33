//! Loading oxeye's BPF programs, attaching them, and reading their maps.

#[cfg(test)]
mod contract;
mod files;
mod hooks;
pub use hooks::PayloadHookChoice;
mod network;
mod off_cpu;
pub mod sizing;
mod tracefs;

use std::{path::Path, time::Duration};

use agent_common::{
    counters::Counter,
    names::{globals, maps, programs},
    net::NetConfig,
    sampler::SamplerConfig,
    unwind::tail_call,
};
use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{MapData, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        PerfEvent, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use tracing::{debug, info, warn};

use crate::unwind::{registers, UnwindMaps};

/// The BPF object built from `agent-ebpf/` by `build.rs`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oxeye.bpf.o"));

/// The program that samples stacks.
const SAMPLER_PROGRAM: &str = programs::SAMPLE;
/// The user-stack unwinder, tail-called by the sampler and by itself.
const UNWIND_PROGRAM: &str = programs::UNWIND;
/// The CPython frame walker, tail-called by the unwinder and by itself.
const PYTHON_PROGRAM: &str = programs::PYTHON;
/// Tracepoint programs: (program, category, tracepoint).
const TRACEPOINTS: [(&str, &str, &str); 2] =
    [(programs::EXEC, "sched", "sched_process_exec"), (programs::EXIT, "sched", "sched_process_exit")];

/// What to sample.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    /// Samples per second per CPU.
    pub samples_per_second: u64,
    /// Only this process, if set.
    pub target_pid: Option<u32>,
    /// Keep samples of the idle task.
    pub include_idle: bool,
    /// Walk user stacks with `.eh_frame` tables (else frame pointers only).
    pub unwind_tables: bool,
    /// Bytes for unwind rows in the kernel.
    pub unwind_table_bytes: u64,
    /// Trace TCP connections and HTTP payloads.
    pub trace_network: bool,
    /// Most connections tracked at once.
    pub max_connections: u32,
    /// Which hooks may copy HTTP payloads.
    pub payload_hooks: PayloadHookChoice,
    /// `--off-cpu-threshold`: 0 loads no off-CPU program.
    pub off_cpu_threshold: f64,
}

/// What [`Probes::load`] hands back.
pub struct Loaded {
    /// The programs.
    pub probes: Probes,
    /// Samples and process events.
    pub events: RingBuf<MapData>,
    /// The unwinder's maps.
    pub unwind_maps: UnwindMaps,
    /// Connection and payload records, when network tracing runs.
    pub net_events: Option<RingBuf<MapData>>,
}

/// The loaded and attached programs. Dropping it detaches and unloads everything.
pub struct Probes {
    /// The network programs' attachments, detached first and all at once.
    _net_links: Option<network::NetLinks>,
    counters: PerCpuArray<MapData, u64>,
    /// Keeps programs and links alive. Dropped first (fields drop in order), so the sampler
    /// is detached before the tail-call table below is emptied.
    ebpf: Ebpf,
    /// Holds the unwinder in the tail-call table: the kernel empties it when the last
    /// user-space reference to the map goes.
    _unwind_programs: ProgramArray<MapData>,
    /// The same for the off-CPU sampler's, when it runs.
    _off_cpu_programs: Option<ProgramArray<MapData>>,
    samples_per_second: u64,
}

impl Probes {
    /// Loads the programs and attaches the process and network hooks, logging which hooks
    /// (`hooks chosen`); [`Probes::start_sampling`] starts the sampler. A kernel that cannot
    /// trace the network still profiles (with a warning).
    pub fn load(config: ProbeConfig) -> Result<Loaded> {
        raise_memlock_limit();
        ensure_tracefs()?;
        let cpus = aya::util::online_cpus().map_err(|(path, error)| anyhow!("cannot read {path}: {error}"))?;
        let sampler_config = SamplerConfig {
            target_pid: config.target_pid.unwrap_or(0),
            include_idle: u32::from(config.include_idle),
            off_cpu_threshold: off_cpu::threshold(config.off_cpu_threshold),
            task_pid: 0,
        };
        // Off unless the kernel's BTF says where a task's thread id is.
        let sampler_config = match config.off_cpu_threshold > 0.0 {
            true => match off_cpu::task_pid_offset() {
                Ok(task_pid) => SamplerConfig { task_pid, ..sampler_config },
                Err(error) => {
                    warn!("off-CPU profiling is off: {error:#}");
                    SamplerConfig { off_cpu_threshold: 0, ..sampler_config }
                }
            },
            false => sampler_config,
        };
        let unwind_config = registers::config(config.unwind_tables)
            .context("oxeye cannot unwind user stacks on this CPU architecture (x86-64 and arm64 only)")?;
        let net_config = if config.trace_network {
            network::config(config.target_pid).inspect_err(|error| warn!("network tracing is off: {error:#}")).ok()
        } else {
            None
        };
        let sizes = sizing::MapSizes::decide(
            config.samples_per_second,
            cpus.len(),
            config.unwind_table_bytes,
            net_config.is_some(),
            config.max_connections,
            config.off_cpu_threshold > 0.0,
        );
        sizes.log();
        let unwind_sizes = sizes.unwind;
        let net_config_value =
            net_config.map_or(NetConfig::DISABLED, |config| NetConfig { wake_bytes: sizing::net_wake_bytes(sizes.net_events, cpus.len()), ..config });
        let file_offsets = files::offsets(unwind_config.regs_ip);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(globals::SAMPLER_CONFIG, &sampler_config, true)
            .override_global(globals::UNWIND_CONFIG, &unwind_config, true)
            .override_global(globals::NET_CONFIG, &net_config_value, true)
            .override_global(globals::FILE_OFFSETS, &file_offsets, true);
        sizes.apply(&mut loader);
        let mut ebpf = loader
            .load(BPF_OBJECT)
            .context("cannot load oxeye's BPF programs (needs Linux 5.15 or later with BTF and BPF ring buffers)")?;

        for (program, category, name) in TRACEPOINTS {
            let tracepoint: &mut TracePoint = program_mut(&mut ebpf, program)?.try_into()?;
            tracepoint.load().with_context(|| format!("the kernel rejected BPF program {program}"))?;
            tracepoint
                .attach(category, name)
                .with_context(|| format!("cannot attach to tracepoint {category}:{name} (is tracefs available?)"))?;
        }

        let mut net_events = None;
        let mut net_links = None;
        let mut hooks = hooks::Hooks::default();
        if net_config.is_some() {
            match network::attach(&mut ebpf, &mut hooks, config.payload_hooks) {
                Ok(links) => {
                    net_links = Some(links);
                    net_events = Some(RingBuf::try_from(take_map(&mut ebpf, maps::NET_EVENTS)?)?);
                }
                Err(error) => warn!("network tracing is off: {error:#}"),
            }
        }
        hooks.log();

        files::attach(&mut ebpf, &file_offsets);
        let off_cpu_programs = if sampler_config.off_cpu_threshold > 0 {
            off_cpu::attach(&mut ebpf).inspect_err(|error| warn!("off-CPU profiling is off: {error:#}")).ok()
        } else {
            None
        };

        let unwinder: &mut PerfEvent = program_mut(&mut ebpf, UNWIND_PROGRAM)?.try_into()?;
        unwinder.load().with_context(|| format!("the kernel rejected BPF program {UNWIND_PROGRAM}"))?;
        let unwinder_fd = unwinder.fd()?.try_clone()?;
        let verified = unwinder.info().ok().and_then(|info| info.verified_instruction_count());
        debug!(verified_instructions = ?verified, "unwinder loaded");
        let mut unwind_programs = ProgramArray::try_from(take_map(&mut ebpf, maps::UNWIND_PROGRAMS)?)?;
        unwind_programs.set(tail_call::UNWIND, &unwinder_fd, 0).context("cannot install the unwinder for tail calls")?;
        let python: &mut PerfEvent = program_mut(&mut ebpf, PYTHON_PROGRAM)?.try_into()?;
        python.load().with_context(|| format!("the kernel rejected BPF program {PYTHON_PROGRAM}"))?;
        let python_fd = python.fd()?.try_clone()?;
        unwind_programs.set(tail_call::PYTHON, &python_fd, 0).context("cannot install the Python walker for tail calls")?;

        let sampler: &mut PerfEvent = program_mut(&mut ebpf, SAMPLER_PROGRAM)?.try_into()?;
        sampler.load().with_context(|| format!("the kernel rejected BPF program {SAMPLER_PROGRAM}"))?;

        let events = RingBuf::try_from(take_map(&mut ebpf, maps::EVENTS)?)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, maps::COUNTERS)?)?;
        let unwind_maps = UnwindMaps::take(&mut ebpf, unwind_sizes)?;
        let probes = Probes {
            _net_links: net_links,
            counters,
            ebpf,
            _unwind_programs: unwind_programs,
            _off_cpu_programs: off_cpu_programs,
            samples_per_second: config.samples_per_second,
        };
        Ok(Loaded { probes, events, unwind_maps, net_events })
    }

    /// Attaches the sampler to the cpu-clock of every online CPU: samples start flowing.
    pub fn start_sampling(&mut self) -> Result<()> {
        let cpus = aya::util::online_cpus().map_err(|(path, error)| anyhow!("cannot read {path}: {error}"))?;
        let period_ns = 1_000_000_000 / self.samples_per_second.max(1);
        let sampler: &mut PerfEvent = program_mut(&mut self.ebpf, SAMPLER_PROGRAM)?.try_into()?;
        for &cpu in &cpus {
            sampler
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Period(period_ns),
                    false,
                )
                .with_context(|| format!("cannot open the cpu-clock perf event on CPU {cpu}"))?;
        }
        debug!(period_ns, "sampler attached");
        Ok(())
    }

    /// The BPF-side counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let mut counters = Counters::default();
        for counter in Counter::ALL {
            let per_cpu = self.counters.get(&(counter as u32), 0).with_context(|| format!("cannot read counter {}", counter.name()))?;
            counters.values[counter as usize] = per_cpu.iter().sum();
        }
        Ok(counters)
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it (harmless on newer ones).
fn raise_memlock_limit() {
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        debug!("cannot raise RLIMIT_MEMLOCK: {}", std::io::Error::last_os_error());
    }
}

/// Tracepoints are found through tracefs; mount it if no one has.
fn ensure_tracefs() -> Result<()> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    if Path::new(TRACEFS).join("events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let (source, target, fstype) = (c"nodev", c"/sys/kernel/tracing", c"tracefs");
    // SAFETY: valid NUL-terminated strings; no data argument.
    if unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) } != 0 {
        bail!("tracefs is not mounted and mounting it at {TRACEFS} failed: {}", std::io::Error::last_os_error());
    }
    info!("mounted tracefs at {TRACEFS}");
    Ok(())
}

fn program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name).with_context(|| format!("BPF object has no program {name}"))
}

/// Takes the map `name` out of the loaded object, to own it.
pub(crate) fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).with_context(|| format!("BPF object has no {name} map"))
}

/// A snapshot of the BPF-side counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    values: [u64; Counter::COUNT as usize],
}

impl Counters {
    /// The value of one counter.
    pub fn get(&self, counter: Counter) -> u64 {
        self.values[counter as usize]
    }

    /// Samples the kernel took but could not deliver (ring buffer full).
    pub fn lost(&self) -> u64 {
        self.get(Counter::SampleRingFull)
    }
}

/// How often user space drains the ring buffer (samples are sent without waking it up).
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);
