//! `cargo xtask test`: unit tests, then end-to-end tests that load the real BPF programs, then
//! the same scenarios on other kernels and on arm64 under qemu (`cargo xtask vm-test`).

use std::{process::Command, time::Duration};

use anyhow::Result;

use crate::{
    build::{self, BuildArgs},
    setup,
    shell::{self, root, root_command, say},
    slow_cpu::SlowCpu,
    vm,
};

/// The longest the end-to-end tests may take together (they take about 10 minutes here).
const E2E_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// Runs every test; `filter` narrows the end-to-end tests (and skips the VMs); `vms` runs the
/// kernel matrix after them; `slow_cpu` runs the end-to-end tests as on a CPU that many times
/// slower.
pub fn run(filter: Option<&str>, vms: bool, slow_cpu: Option<f64>) -> Result<()> {
    setup::ensure_build_tools()?;
    setup::ensure_test_tools()?;
    let python = setup::ensure_test_python()?;
    let binary = build::run(&BuildArgs { release: true, target: None })?;

    say("unit tests");
    shell::run(Command::new(setup::cargo()).current_dir(root()).args(["test", "--release", "--workspace", "--exclude", "oxeye-tests", "--exclude", "agent-ebpf"]))?;

    say("end-to-end tests (real BPF programs, one at a time, as root)");
    let mut e2e = root_command(setup::cargo());
    e2e.current_dir(root()).args(["test", "--release", "--no-fail-fast", "--package", "oxeye-tests", "--tests", "--", "--test-threads=1"]).env("OXEYE_BIN", &binary).env("OXEYE_TEST_PYTHON", &python);
    if let Some(filter) = filter {
        e2e.arg(filter);
    }
    let (slow, mut e2e) = match slow_cpu {
        Some(factor) => {
            // Built at full speed; only running them is slowed down.
            shell::run(Command::new(setup::cargo()).current_dir(root()).args(["test", "--release", "--package", "oxeye-tests", "--tests", "--no-run"]))?;
            let slow = SlowCpu::new(factor)?;
            say(format!("running them with 1/{factor} of this machine's CPU (a cgroup quota)"));
            let wrapped = slow.wrap(&e2e);
            (Some(slow), wrapped)
        }
        None => (None, e2e),
    };
    // Each test has its own deadline (tests/src/deadline.rs); this one catches what those
    // cannot, such as a test binary that never starts its tests.
    shell::run_with_deadline(&mut e2e, "the end-to-end tests", E2E_TIMEOUT * slow_cpu.map_or(1, |f| f.ceil() as u32))?;
    drop(slow);

    if vms && filter.is_none() {
        say("the scenarios on every kernel of the matrix (qemu), and on this one");
        vm::run(&vm::VmTestArgs::default())?;
    }
    Ok(())
}
