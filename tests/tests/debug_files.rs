//! Frames named from separate debug files, end to end: Debian's `libc6-dbg` for libc's
//! internal functions, and a stripped binary whose debug file sits in a `.build-id` tree given
//! with `--debug-file-directory`.

use std::time::Duration;

use oxeye_tests::{build_workload, checks, deadline, debug_files, output_dir, profile_workload, Folded};

/// Each test's limit: two short profiles, with room for a CPU three times slower.
const LIMIT: Duration = Duration::from_secs(180);

/// Of `process`'s samples in `compare_keys`, the share whose caller is `caller`.
fn compare_called_from(folded: &Folded, process: &str, caller: impl Fn(&str) -> bool) -> (f64, u64) {
    let mut in_compare = 0;
    let mut matched = 0;
    for stack in folded.process(process) {
        let user = stack.user_frames();
        if user.last() != Some(&"compare_keys") {
            continue;
        }
        in_compare += stack.count;
        if user.len() >= 2 && caller(user[user.len() - 2]) && user.contains(&"qsort_r") {
            matched += stack.count;
        }
    }
    (matched as f64 / in_compare.max(1) as f64, in_compare)
}

/// glibc's qsort sorts with `msort_with_tmp`, a static function only libc6-dbg's `.symtab`
/// names; Debian's libc.so.6 itself keeps only `.dynsym`.
#[test]
fn libc_internal_functions_are_named_with_libc6_dbg() {
    let _deadline = deadline(LIMIT);
    let binary = build_workload("qsort.c", &["-O2", "-fomit-frame-pointer"]);
    let folded = profile_workload("debug-libc", &binary, &["3"], &[]).0.folded();
    let (share, total) = compare_called_from(&folded, "qsort", |f| f.starts_with("msort_with_tmp"));
    let dump = folded.dump("qsort");
    eprintln!("libc6-dbg: {:.1}% of {total} compare_keys samples called from msort_with_tmp", share * 100.0);
    assert!(total >= 50, "only {total} compare_keys samples:\n{dump}");
    assert!(share >= 0.90, "{:.1}% of {total} compare_keys samples are called from a named msort_with_tmp (is libc6-dbg installed?):\n{dump}", share * 100.0);

    // Without the debug directory the same frames are bare offsets: the names came from it.
    let empty = output_dir("debug-libc-none");
    let empty = empty.to_str().expect("a UTF-8 path");
    let folded = profile_workload("debug-libc-none", &binary, &["2"], &["--debug-file-directory", empty]).0.folded();
    let (share, total) = compare_called_from(&folded, "qsort", |f| f.starts_with("libc.so.6+"));
    assert!(share >= 0.90, "without libc6-dbg, {:.1}% of {total} compare_keys samples are called from libc.so.6+offset:\n{}", share * 100.0, folded.dump("qsort"));
}

#[test]
fn a_stripped_binary_is_named_from_its_debug_file_directory() {
    let _deadline = deadline(LIMIT);
    let built = build_workload("chain.c", &["-O2", "-fomit-frame-pointer", "-g"]);
    let split = debug_files::split(&built, &output_dir("debug-split-files"));
    let directory = split.debug_directory.to_str().expect("a UTF-8 path");
    let (finished, cpu) = profile_workload("debug-split", &split.stripped, &["3"], &["--debug-file-directory", directory]);
    let summary = checks::c_without_frame_pointers(&finished.folded(), "chain", cpu).unwrap_or_else(|why| panic!("{why}"));
    eprintln!("stripped chain with its debug file: {summary}");

    // The stripped binary alone names none of its functions.
    let (finished, _) = profile_workload("debug-split-none", &split.stripped, &["1"], &[]);
    let folded = finished.folded();
    let named = folded.process("chain").filter(|s| s.user_frames().contains(&"middle")).map(|s| s.count).sum::<u64>();
    assert_eq!(named, 0, "the stripped binary named middle without its debug file:\n{}", folded.dump("chain"));
}
