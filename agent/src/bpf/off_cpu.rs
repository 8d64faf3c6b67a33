//! Loading the off-CPU sampler (`--off-cpu-threshold`): its raw-tracepoint copies of the
//! unwinder and the Python walker go into `OFF_CPU_PROGRAMS`, then it is attached to the raw
//! tracepoint `sched_switch`.

use agent_common::{
    names::{maps, programs},
    tracepoints::sched_switch,
    unwind::tail_call,
};
use anyhow::{Context, Result};
use aya::{
    maps::{MapData, ProgramArray},
    programs::RawTracePoint,
    Ebpf,
};
use symbolizer::btf::Btf;
use tracing::debug;

use super::{program_mut, take_map};

/// The off-CPU programs, all raw tracepoint programs.
pub const PROGRAMS: [&str; 3] = [programs::OFF_CPU, programs::OFF_CPU_UNWIND, programs::OFF_CPU_PYTHON];

/// The sampler's threshold for a probability: a switch-out is recorded when a random `u32`
/// is below it.
pub fn threshold(probability: f64) -> u32 {
    (probability.clamp(0.0, 1.0) * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

/// Where the thread id is in `struct task_struct`, from the kernel's BTF: without it the
/// off-CPU sampler cannot tell a thread from the one that had its `task_struct` before.
pub fn task_pid_offset() -> Result<u32> {
    let btf = Btf::from_sys_fs().context("off-CPU profiling needs kernel BTF (/sys/kernel/btf/vmlinux)")?;
    btf.member_offset("task_struct", "pid").context("the kernel's BTF has no task_struct.pid")
}

/// Loads and attaches the off-CPU sampler; the returned table must live as long as it runs.
pub fn attach(ebpf: &mut Ebpf) -> Result<ProgramArray<MapData>> {
    let [sampler_program, unwind_program, python_program] = PROGRAMS;
    let mut table = ProgramArray::try_from(take_map(ebpf, maps::OFF_CPU_PROGRAMS)?)?;
    for (index, program) in [(tail_call::UNWIND, unwind_program), (tail_call::PYTHON, python_program)] {
        let walker: &mut RawTracePoint = program_mut(ebpf, program)?.try_into()?;
        walker.load().with_context(|| format!("the kernel rejected BPF program {program}"))?;
        let fd = walker.fd()?.try_clone()?;
        table.set(index, &fd, 0).with_context(|| format!("cannot install {program} for tail calls"))?;
    }
    let sampler: &mut RawTracePoint = program_mut(ebpf, sampler_program)?.try_into()?;
    sampler.load().with_context(|| format!("the kernel rejected BPF program {sampler_program}"))?;
    sampler.attach(sched_switch::NAME).with_context(|| format!("cannot attach to raw tracepoint {}", sched_switch::NAME))?;
    debug!("off-CPU sampler attached");
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_become_thresholds() {
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(1.0), u32::MAX);
        assert_eq!(threshold(0.5), 1 << 31);
        assert_eq!(threshold(0.01), 42_949_672);
    }
}
