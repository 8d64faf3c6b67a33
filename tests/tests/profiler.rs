//! End-to-end tests of the CPU profiler: the real oxeye binary, the real BPF programs, real
//! workloads with known call chains.

use std::{process::Command, time::Duration};

use oxeye_tests::{checks, deadline, output, root, run_workload, start_workload, workload, Finished, Folded, Oxeye};

/// Each test's limit: a few seconds of workload, oxeye's start and stop, with room for a CPU
/// three times slower.
const LIMIT: Duration = Duration::from_secs(120);

/// Runs oxeye at 99 Hz around one run of workload `name` with `args`; returns what it wrote
/// and the CPU seconds the workload used.
fn profile_run(test: &str, name: &str, args: &[&str]) -> (Finished, f64) {
    let binary = workload(name);
    let oxeye = Oxeye::start(test, &["--samples-per-second", "99"]);
    let ran = run_workload(&binary, args);
    let finished = oxeye.stop();
    finished.assert_success();
    (finished, ran.cpu_seconds)
}

#[test]
fn known_call_chain_is_complete_and_split_right() {
    let _deadline = deadline(LIMIT);
    let (finished, cpu) = profile_run("chain", "chain", &["4"]);
    let summary = checks::known_chain(&finished.folded(), "chain", cpu).unwrap_or_else(|why| panic!("{why}"));
    eprintln!("chain with frame pointers: {summary}");
}

#[test]
fn syscall_stacks_have_named_kernel_frames_under_user_frames() {
    let _deadline = deadline(LIMIT);
    let (finished, cpu) = profile_run("syscalls", "syscalls", &["3"]);
    let summary = checks::kernel_frames_named(&finished.folded(), "syscalls", cpu).unwrap_or_else(|why| panic!("{why}"));
    eprintln!("syscalls: {summary}");
}

#[test]
fn sample_rate_matches_frequency() {
    let _deadline = deadline(LIMIT);
    let (finished, cpu) = profile_run("rate", "chain", &["5"]);
    let samples = finished.folded().samples("chain");
    // Samples follow the CPU time the workload had (5 s on an idle machine, less on a busy one).
    let expected = 99.0 * cpu;
    assert!(
        (samples as f64 - expected).abs() <= expected * 0.15,
        "{samples} samples for {cpu:.2} CPU seconds at 99 Hz, expected {expected:.0} ± 15%"
    );
}

#[test]
fn short_lived_process_is_symbolized() {
    let _deadline = deadline(LIMIT);
    let (finished, cpu) = profile_run("short", "chain", &["0.3"]);
    let folded = finished.folded();
    let (whole, _, total) = checks::chain_shares(&folded, "chain");
    let dump = folded.dump("chain");
    checks::enough_samples(total, cpu, 0.5).unwrap_or_else(|why| panic!("a 300 ms busy process: {why}:\n{dump}"));
    assert!(whole >= 0.80, "{:.1}% of {total} samples of the 300 ms process are symbolized to the whole chain:\n{dump}", whole * 100.0);
}

#[test]
fn pid_filter_keeps_only_that_process() {
    let _deadline = deadline(LIMIT);
    let chain = workload("chain");
    let mut target = start_workload(&chain, &["4"]);
    let mut other = start_workload(&workload("syscalls"), &["4"]);
    let pid = target.id().to_string();
    let finished = Oxeye::start("pid", &["--samples-per-second", "99", "--pid", &pid, "--duration", "2"]).wait();
    finished.assert_success();
    target.wait();
    other.wait();
    let folded = finished.folded();
    // 2 s of a busy process at 99 Hz, with room for a machine where it gets half a CPU.
    assert!(folded.samples("chain") >= 90, "only {} samples of the target", folded.samples("chain"));
    let strays: Vec<_> = folded.stacks.iter().filter(|s| s.process != "chain").collect();
    assert!(strays.is_empty(), "samples of other processes with --pid: {strays:?}");
}

/// Names of oxeye's BPF programs currently loaded in the kernel.
fn loaded_oxeye_programs() -> Vec<String> {
    let output = output(Command::new("bpftool").args(["prog", "show"]), "bpftool prog show");
    assert!(output.status.success(), "bpftool prog show failed");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with("oxeye_"))
        .map(str::to_owned)
        .collect()
}

fn assert_clean_exit(signal: i32) {
    let oxeye = Oxeye::start("cleanup", &[]);
    let programs = loaded_oxeye_programs();
    for wanted in ["oxeye_sample", "oxeye_unwind", "oxeye_exec", "oxeye_exit"] {
        assert!(programs.iter().any(|p| p == wanted), "{wanted} not loaded while oxeye runs: {programs:?}");
    }
    let finished = oxeye.stop_with(signal);
    finished.assert_success();
    for output in ["stacks.folded", "flamegraph.svg", "profile.pb.gz"] {
        assert!(finished.out_dir.join(output).exists(), "{output} not written after signal {signal}");
    }
    // The kernel frees programs asynchronously (the unwinder once its tail-call map is
    // freed, from a work queue): give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut left = loaded_oxeye_programs();
    while !left.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = loaded_oxeye_programs();
    }
    assert!(left.is_empty(), "BPF programs left in the kernel 3 s after signal {signal}: {left:?}");
}

#[test]
fn ctrl_c_detaches_everything() {
    let _deadline = deadline(LIMIT);
    assert_clean_exit(libc::SIGINT);
}

#[test]
fn sigterm_detaches_everything() {
    let _deadline = deadline(LIMIT);
    assert_clean_exit(libc::SIGTERM);
}

#[test]
fn pprof_output_is_read_back_by_pprof_schema_and_matches_folded() {
    let _deadline = deadline(LIMIT);
    let (finished, _) = profile_run("pprof", "chain", &["2"]);
    let folded = finished.folded();
    let dir = &finished.out_dir;
    // Debian's Python, which has Debian's python3-protobuf.
    let output = output(
        Command::new("/usr/bin/python3")
            .arg(root().join("tests/pprof_to_folded.py"))
            .arg(dir.join("profile.pb.gz"))
            .arg("/usr/share/gocode/src/github.com/google/pprof/proto")
            .arg(dir),
        "the pprof reader (python3)",
    );
    assert!(output.status.success(), "the pprof reader failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let from_pprof = Folded::read_str(&String::from_utf8_lossy(&output.stdout));
    assert!(folded.samples("chain") >= 100, "only {} samples of chain", folded.samples("chain"));
    assert_eq!(from_pprof.total(), folded.total(), "total samples differ between profile.pb.gz and stacks.folded");
    assert_eq!(from_pprof.by_line(), folded.by_line(), "stacks differ between profile.pb.gz and stacks.folded");
}

#[test]
fn duration_flag_stops_by_itself() {
    let _deadline = deadline(LIMIT);
    let started = std::time::Instant::now();
    let finished = Oxeye::start("duration", &["--duration", "1.5"]).wait();
    finished.assert_success();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(15), "--duration 1.5 ran for {elapsed:?}");
    assert!(finished.stderr.contains("samples in 1."), "final summary missing:\n{}", finished.stderr);
}

#[test]
fn unprivileged_run_fails_with_one_clear_line() {
    let _deadline = deadline(LIMIT);
    let output = output(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
            .arg(oxeye_tests::oxeye_bin())
            .args(["--duration", "1", "--output-dir", "/tmp"]),
        "unprivileged oxeye (setpriv)",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "unprivileged oxeye should exit 1:\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "expected one line:\n{stderr}");
    assert!(stderr.contains("CAP_BPF") && stderr.contains("sudo"), "the line should name the capability and how to run:\n{stderr}");
}

#[test]
fn bad_flags_get_clap_errors() {
    let _deadline = deadline(LIMIT);
    for args in [&["--samples-per-second", "0"][..], &["--duration", "-3"], &["--no-such-flag"]] {
        let output = output(Command::new(oxeye_tests::oxeye_bin()).args(args), "oxeye with bad flags");
        assert_eq!(output.status.code(), Some(2), "{args:?} should be a usage error");
        assert!(String::from_utf8_lossy(&output.stderr).contains("error:"), "{args:?}");
    }
}

#[test]
fn missing_pid_is_a_clear_error() {
    let _deadline = deadline(LIMIT);
    let output = output(Command::new(oxeye_tests::oxeye_bin()).args(["--pid", "999999999"]), "oxeye --pid 999999999");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim(), "oxeye: process 999999999 does not exist");
}
