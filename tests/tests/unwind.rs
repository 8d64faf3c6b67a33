//! End-to-end tests of the `.eh_frame` unwinder: workloads built without frame pointers (C at
//! -O2, C++ with templates, Rust release), deep recursion, and time spent inside libc, all
//! profiled by the real oxeye with its real BPF programs.

use std::time::Duration;

use oxeye_tests::{
    build_workload,
    checks::{self, complete_share, complete_to},
    deadline, profile_workload, Folded,
};

/// Flags of the C and C++ workloads: optimized, no frame pointers.
const NO_FRAME_POINTERS: [&str; 2] = ["-O2", "-fomit-frame-pointer"];

/// Each test's limit: a few seconds of workload, oxeye's start and stop, with room for a CPU
/// three times slower.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn c_without_frame_pointers_has_whole_stacks() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("chain.c", &NO_FRAME_POINTERS);
    let (finished, cpu) = profile_workload("unwind-c", &binary, &["4"], &[]);
    let summary = checks::c_without_frame_pointers(&finished.folded(), "chain", cpu).unwrap_or_else(|why| panic!("{why}"));
    eprintln!("C -O2 chain: {summary}");
}

#[test]
fn cpp_templates_and_virtual_calls_have_whole_stacks() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("chain.cpp", &NO_FRAME_POINTERS);
    let (finished, cpu) = profile_workload("unwind-cpp", &binary, &["4"], &[]);
    let folded = finished.folded();
    let chain = [
        "main",
        "Driver::run()",
        "Stage<3>::process(Leaf&, std::function<unsigned long ()> const&)",
        "Stage<2>::process(Leaf&, std::function<unsigned long ()> const&)",
        "Stage<1>::process(Leaf&, std::function<unsigned long ()> const&)",
        "Stage<0>::process(Leaf&, std::function<unsigned long ()> const&)",
    ];
    let (share, total) = complete_share(&folded, "chain-cpp", &chain, &["Worker<unsigned long>::leaf(unsigned long)"]);
    let dump = folded.dump("chain-cpp");
    checks::enough_samples(total, cpu, 0.63).unwrap_or_else(|why| panic!("{why}:\n{dump}"));
    eprintln!("C++ chain: {:.1}% of {total} samples complete", share * 100.0);
    assert!(share >= 0.95, "{:.1}% of {total} samples carry the whole C++ chain:\n{dump}", share * 100.0);
}

#[test]
fn rust_release_binary_has_whole_stacks() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("chain.rs", &["-O", "-C", "force-frame-pointers=no"]);
    let (finished, cpu) = profile_workload("unwind-rust", &binary, &["4"], &[]);
    let summary = checks::rust_without_frame_pointers(&finished.folded(), "chain-rs", cpu).unwrap_or_else(|why| panic!("{why}"));
    eprintln!("Rust release chain: {summary}");
}

#[test]
fn deep_recursion_yields_at_least_128_frames_in_order() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("recurse.c", &NO_FRAME_POINTERS);
    let (finished, cpu) = profile_workload("unwind-recursion", &binary, &["3"], &[]);
    let folded = finished.folded();
    let total = folded.samples("recurse");
    let dump = folded.dump("recurse");
    let mut deep = 0;
    for stack in folded.process("recurse") {
        let user = stack.user_frames();
        // Innermost first: the leaf, then one `descend` per level, then the error frame that
        // says the walk stopped at the depth limit.
        let walked: Vec<&str> = user.iter().rev().copied().take_while(|f| !f.starts_with("[unwind error")).collect();
        if walked.len() >= 128 && walked[1..].iter().all(|f| *f == "descend") && user.first() == Some(&"[unwind error: depth limit]") {
            deep += stack.count;
        }
    }
    checks::enough_samples(total, cpu, 0.5).unwrap_or_else(|why| panic!("{why}:\n{dump}"));
    let share = deep as f64 / total as f64;
    eprintln!("recursion: {:.1}% of {total} samples have >= 128 frames", share * 100.0);
    assert!(share >= 0.95, "{:.1}% of {total} samples have ≥ 128 frames of descend ending in a depth-limit frame:\n{dump}", share * 100.0);
}

/// main → sort_many → qsort_r (libc) → libc's internal frames → compare_keys.
fn assert_qsort_stacks(folded: &Folded, process: &str, min_share: f64) {
    let total = folded.samples(process);
    let dump = folded.dump(process);
    let mut in_compare = 0;
    let mut through_libc = 0;
    for stack in folded.process(process) {
        let user = stack.user_frames();
        if user.last() != Some(&"compare_keys") {
            continue;
        }
        in_compare += stack.count;
        let Some(sort) = user.iter().position(|f| *f == "sort_many") else { continue };
        let libc = &user[sort + 1..user.len() - 1];
        if complete_to(stack, &["compare_keys"])
            && user[..sort].ends_with(&["main"])
            && libc.first() == Some(&"qsort_r")
            && libc.iter().all(|f| *f == "qsort_r" || f.starts_with("libc.so.6+") || f.starts_with("msort"))
        {
            through_libc += stack.count;
        }
    }
    assert!(in_compare * 2 >= total, "only {in_compare} of {total} samples in compare_keys:\n{dump}");
    let share = through_libc as f64 / in_compare as f64;
    eprintln!("{process}: {:.1}% of {in_compare} compare_keys samples complete through libc", share * 100.0);
    assert!(share >= min_share, "{:.1}% of {in_compare} compare_keys samples go _start→main→sort_many→qsort_r→libc→compare_keys:\n{dump}", share * 100.0);
}

#[test]
fn time_in_libc_shows_libc_frames_and_the_callers_above() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("qsort.c", &NO_FRAME_POINTERS);
    let folded = profile_workload("unwind-qsort", &binary, &["3"], &[]).0.folded();
    assert_qsort_stacks(&folded, "qsort", 0.95);
}

#[test]
fn frame_pointer_code_without_tables_calls_into_libc_and_back() {
    let _deadline = deadline(LIMIT);
    // The program's own functions have frame pointers but no unwind tables; libc has tables
    // but no frame pointers. The walk switches between the two on every frame.
    let flags = ["-O0", "-fno-omit-frame-pointer", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables"];
    let binary = build_workload("qsort.c", &flags);
    let folded = profile_workload("unwind-mixed", &binary, &["3"], &[]).0.folded();
    // In its prologue and at its `ret` the function's frame pointer is still the caller's
    // (libc's, which has none): the walk recognises those instructions. Without that, up to
    // 12% of the samples ended there (28 of 238 on CI).
    assert_qsort_stacks(&folded, "qsort", 0.97);
}

#[test]
fn frame_pointers_only_stops_early_without_them_and_says_why() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("chain.c", &NO_FRAME_POINTERS);
    let (finished, cpu) = profile_workload("unwind-fp-only", &binary, &["2"], &["--frame-pointers-only"]);
    let folded = finished.folded();
    let (share, total) = complete_share(&folded, "chain", &["main", "outer", "middle"], &["leaf_a", "leaf_b"]);
    let dump = folded.dump("chain");
    checks::enough_samples(total, cpu, 0.5).unwrap_or_else(|why| panic!("{why}:\n{dump}"));
    // The same binary the tables unwind completely: frame pointers alone cannot.
    assert!(share <= 0.5, "{:.1}% of {total} samples complete with frame pointers only:\n{dump}", share * 100.0);
    let errors: u64 = folded.process("chain").filter(|s| s.frames.iter().any(|f| f.starts_with("[unwind error"))).map(|s| s.count).sum();
    assert!(errors * 2 >= total, "only {errors} of {total} incomplete stacks say why:\n{dump}");
}

#[test]
fn unwind_tables_are_reported_on_exit() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("chain.c", &NO_FRAME_POINTERS);
    let (finished, _) = profile_workload("unwind-report", &binary, &["1"], &[]);
    let line = finished.stderr.lines().find(|l| l.starts_with("oxeye: unwind tables:")).unwrap_or_else(|| panic!("no unwind line in:\n{}", finished.stderr));
    // chain, libc, ld.so and the vDSO at least.
    let files: u64 = line["oxeye: unwind tables: ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!(files >= 3, "{line}");
}

#[test]
fn signal_handlers_unwind_through_the_signal_frame() {
    let _deadline = deadline(LIMIT);
    // SIGPROF interrupts interrupted() every 10 ms of CPU time; the handler runs about as long.
    let binary = build_workload("signal.c", &NO_FRAME_POINTERS);
    let folded = profile_workload("unwind-signal", &binary, &["3"], &[]).0.folded();
    let total = folded.samples("signal");
    let dump = folded.dump("signal");
    let (mut in_handler, mut through) = (0, 0);
    for stack in folded.process("signal") {
        let user = stack.user_frames();
        if user.last() != Some(&"on_signal") {
            continue;
        }
        in_handler += stack.count;
        // _start … main → interrupted → (the signal frame: libc's __restore_rt) → on_signal.
        let signal_frame = &user[..user.len() - 1];
        if complete_to(stack, &["on_signal"])
            && signal_frame.contains(&"main")
            && signal_frame.last().is_some_and(|f| f.starts_with("__restore_rt") || f.starts_with("libc.so.6+"))
            && signal_frame[signal_frame.len() - 2] == "interrupted"
        {
            through += stack.count;
        }
    }
    assert!(in_handler * 4 >= total, "only {in_handler} of {total} samples in the handler:\n{dump}");
    let share = through as f64 / in_handler as f64;
    eprintln!("signal: {:.1}% of {in_handler} handler samples unwind through the signal frame", share * 100.0);
    assert!(share >= 0.90, "{:.1}% of {in_handler} handler samples go _start→main→interrupted→signal frame→on_signal:\n{dump}", share * 100.0);
}
