//! The deadlines themselves: a test that hangs is failed with one line naming it and what it
//! waited for, and what it started is killed. The hanging tests run in a child copy of this
//! test binary (they only hang when `OXEYE_DEADLINE_SELF_TEST` asks them to).

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use oxeye_tests::{deadline, output, spawn};

const SELF_TEST: &str = "OXEYE_DEADLINE_SELF_TEST";

/// Hangs waiting for a process that never exits, under a 2 s deadline, when asked to.
#[test]
fn inner_waits_on_a_process_that_never_exits() {
    if std::env::var_os(SELF_TEST).is_none() {
        return;
    }
    let _deadline = deadline(Duration::from_secs(2));
    let mut sleeper = spawn(Command::new("sleep").arg("600"), "sleep 600");
    println!("sleeper pid {}", sleeper.id());
    sleeper.wait();
}

/// Hangs in its own code, not on a process, when asked to.
#[test]
fn inner_hangs_in_its_own_code() {
    if std::env::var_os(SELF_TEST).is_none() {
        return;
    }
    let _deadline = deadline(Duration::from_secs(2));
    let _sleeper = spawn(Command::new("sleep").arg("600"), "sleep 600");
    loop {
        thread::park();
    }
}

/// Runs one inner test in a child copy of this binary; returns its output and how long it took.
fn run_inner(name: &str) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = output(
        Command::new(std::env::current_exe().expect("own path")).args(["--exact", name, "--test-threads=1", "--nocapture"]).env(SELF_TEST, "1"),
        "the inner test binary",
    );
    (out, started.elapsed())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

#[test]
fn a_test_waiting_on_a_hung_process_fails_with_one_line_and_kills_it() {
    let _deadline = deadline(Duration::from_secs(60));
    let (out, took) = run_inner("inner_waits_on_a_process_that_never_exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the hung test passed:\n{stdout}\n{stderr}");
    assert!(took < Duration::from_secs(15), "the hung test took {took:?} to fail");
    // The watchdog prints the line as the deadline passes, and the test fails with it.
    let mut lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("DEADLINE: ")).collect();
    lines.dedup();
    assert_eq!(lines.len(), 1, "expected one DEADLINE line:\n{stderr}");
    let line = lines[0];
    let pid: u32 = stdout.split("sleeper pid ").nth(1).and_then(|rest| rest.split_whitespace().next()?.parse().ok()).unwrap_or_else(|| panic!("the inner test printed no pid:\n{stdout}"));
    assert!(line.contains("inner_waits_on_a_process_that_never_exits") && line.contains("2s limit"), "{line}");
    assert!(line.contains(&format!("waiting for sleep 600 (pid {pid}) to exit")) && line.contains(&format!("killed sleep 600 (pid {pid})")), "{line}");
    assert!(!alive(pid), "the hung process {pid} is still running");
}

#[test]
fn a_test_stuck_in_its_own_code_is_stopped_with_its_processes_killed() {
    let _deadline = deadline(Duration::from_secs(60));
    let (out, took) = run_inner("inner_hangs_in_its_own_code");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the stuck test passed:\n{stderr}");
    // 2 s to the deadline, 15 s of grace for the test to notice, then the binary stops.
    assert!(took < Duration::from_secs(30), "the stuck test took {took:?} to be stopped");
    let line = stderr.lines().find(|l| l.starts_with("DEADLINE: ")).unwrap_or_else(|| panic!("no DEADLINE line:\n{stderr}"));
    assert!(line.contains("inner_hangs_in_its_own_code") && line.contains("while running its own code") && line.contains("killed sleep 600"), "{line}");
    assert!(stderr.contains("stopping the test binary"), "{stderr}");
}
