//! Processes that live a millisecond, started by the thousand (a build, a shell script): their
//! maps are never read, yet their stacks are whole and named, from the code mappings the
//! kernel side records at exec and mmap and the tables and symbols oxeye keeps by file.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use oxeye_tests::{build_workload, deadline, Oxeye};

/// A few seconds of storm, oxeye's start and stop, with room for a CPU three times slower.
const LIMIT: Duration = Duration::from_secs(150);
/// How long the storm lasts (wall-clock).
const STORM: Duration = Duration::from_secs(4);

/// Runs `binary` again and again on `loops` threads for [`STORM`]; returns how many ran.
fn storm(binary: &Path, loops: usize) -> u64 {
    let until = Instant::now() + STORM;
    let workers: Vec<_> = (0..loops)
        .map(|_| {
            let binary = binary.to_owned();
            thread::spawn(move || {
                let mut ran = 0;
                while Instant::now() < until {
                    let status = Command::new(&binary).status().expect("run the 1 ms workload");
                    assert!(status.success(), "{} failed: {status}", binary.display());
                    ran += 1;
                    deadline::check();
                }
                ran
            })
        })
        .collect();
    workers.into_iter().map(|worker| worker.join().expect("storm thread")).sum()
}

#[test]
fn processes_of_a_millisecond_have_whole_named_stacks() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("burn1ms.c", &["-O2", "-fno-omit-frame-pointer"]);
    let oxeye = Oxeye::start("exec-storm", &["--samples-per-second", "499"]);
    let ran = storm(&binary, 2);
    let finished = oxeye.stop();
    finished.assert_success();
    let never_read = finished.reported("exited within 10 ms", "exited within");
    let folded = finished.folded();
    let dump = folded.dump("burn1ms");
    let chain = ["_start", "__libc_start_main", "__libc_start_call_main", "main", "middle", "leaf"];
    let (mut in_leaf, mut whole) = (0, 0);
    for stack in folded.process("burn1ms") {
        let user = stack.user_frames();
        if user.last() != Some(&"leaf") {
            continue;
        }
        in_leaf += stack.count;
        if user == chain {
            whole += stack.count;
        }
    }
    let total = folded.samples("burn1ms");
    let share = whole as f64 / in_leaf.max(1) as f64;
    eprintln!("exec storm: {ran} processes, {never_read} never read; {total} samples, {in_leaf} in leaf, {:.1}% whole and named", share * 100.0);
    // Each process spins 1 ms: at 499 Hz about one in two gets a sample in leaf.
    assert!(in_leaf as f64 >= ran as f64 * 0.1, "{in_leaf} samples in leaf for {ran} processes of 1 ms:\n{dump}");
    assert!(never_read * 2 >= ran, "only {never_read} of {ran} processes exited before oxeye read them: the test does not test that");
    assert!(share >= 0.9, "{:.1}% of {in_leaf} samples in leaf are {}:\n{dump}", share * 100.0, chain.join(";"));
}
