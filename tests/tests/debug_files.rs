//! Frames named from separate debug files, end to end: Debian's `libc6-dbg` for libc's
//! internal functions, and a stripped binary whose debug file sits in a `.build-id` tree given
//! with `--debug-file-directory`.

use std::time::Duration;

use oxeye_tests::{
    build_workload, checks, deadline, debug_files, output_dir, profile_workload, profile_workload_with_env,
    servers::{free_port, DebuginfodServer},
    Folded,
};

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

/// The stripped binary's debug file exists only on a debuginfod server (Debian's own, on
/// loopback): oxeye fetches it into its cache, off the sampling path, and names the frames.
#[test]
fn a_stripped_binary_is_named_through_debuginfod() {
    let _deadline = deadline(LIMIT);
    let built = build_workload("chain.c", &["-O2", "-fomit-frame-pointer", "-g"]);
    let scratch = output_dir("debuginfod-files");
    let split = debug_files::split(&built, &scratch.join("split"));
    let served = scratch.join("served");
    std::fs::create_dir_all(&served).expect("create the served directory");
    std::fs::copy(&split.debug_file, served.join("chain.debug")).expect("copy the debug file");
    let server = DebuginfodServer::start("debuginfod", &served, &split.build_id);
    let cache = scratch.join("cache");
    let (urls, cache_dir) = (server.url(), cache.to_str().expect("a UTF-8 path").to_owned());
    let empty = scratch.join("no-debug-files");
    let env = [("DEBUGINFOD_URLS", urls.as_str()), ("OXEYE_DEBUGINFOD_CACHE", cache_dir.as_str())];
    let extra = ["--debug-file-directory", empty.to_str().expect("a UTF-8 path")];
    let (finished, cpu) = profile_workload_with_env("debuginfod-named", &split.stripped, &["3"], &extra, &env);
    let summary = checks::c_without_frame_pointers(&finished.folded(), "chain", cpu).unwrap_or_else(|why| panic!("{why}\n{}", finished.stderr));
    eprintln!("stripped chain named through debuginfod: {summary}");
    let line = finished.stderr.lines().find(|l| l.starts_with("oxeye: debug files:")).unwrap_or_else(|| panic!("no debug files line:\n{}", finished.stderr));
    eprintln!("{line}");
    assert!(line.contains(", 1 from debuginfod"), "{line}");
    let cached = cache.join(format!("{}.debug", split.build_id));
    assert_eq!(std::fs::read(&cached).ok(), std::fs::read(&split.debug_file).ok(), "{} holds the served debug file", cached.display());
}

/// A debuginfod server that is down: one line says so, the frames keep file and offset, and
/// profiling goes on as without one.
#[test]
fn with_the_debuginfod_server_down_profiling_goes_on_unnamed() {
    let _deadline = deadline(LIMIT);
    let built = build_workload("chain.c", &["-O2", "-fomit-frame-pointer", "-g"]);
    let scratch = output_dir("debuginfod-down");
    let split = debug_files::split(&built, &scratch.join("split"));
    let down = format!("http://127.0.0.1:{}", free_port());
    let cache = scratch.join("cache");
    let env = [("DEBUGINFOD_URLS", down.as_str()), ("OXEYE_DEBUGINFOD_CACHE", cache.to_str().expect("a UTF-8 path"))];
    let (finished, cpu) = profile_workload_with_env("debuginfod-down", &split.stripped, &["2"], &[], &env);
    let folded = finished.folded();
    let dump = folded.dump("chain");
    let total = folded.samples("chain");
    checks::enough_samples(total, cpu, 0.63).unwrap_or_else(|why| panic!("{why}:\n{dump}"));
    let bare = folded.process("chain").filter(|s| s.user_frames().last().is_some_and(|f| f.starts_with("chain+0x"))).map(|s| s.count).sum::<u64>();
    assert!(bare * 10 >= total * 9, "{bare} of {total} samples end in chain+0xOFFSET:\n{dump}");
    let unreachable = finished.stderr.lines().filter(|l| l.contains("unreachable")).count();
    assert_eq!(unreachable, 1, "one line says the server is unreachable:\n{}", finished.stderr);
}

/// Share of `process`'s samples whose user stack goes main → outer → step, then mix or not:
/// step and mix exist only as DWARF's inlined instances inside outer.
fn inlined_share(folded: &Folded, process: &str) -> (f64, u64) {
    let total = folded.samples(process);
    let whole: u64 = folded
        .process(process)
        .filter(|s| s.user_ends_with(&["main", "outer", "step", "mix"]) || s.user_ends_with(&["main", "outer", "step"]))
        .map(|s| s.count)
        .sum();
    (whole as f64 / total.max(1) as f64, total)
}

#[test]
fn inlined_calls_are_frames_from_dwarf_in_the_binary_or_its_debug_file() {
    let _deadline = deadline(LIMIT);
    let built = build_workload("inline.c", &["-O2", "-g"]);
    let (finished, cpu) = profile_workload("dwarf-inline", &built, &["3"], &[]);
    let folded = finished.folded();
    checks::enough_samples(folded.samples("inline"), cpu, 0.63).unwrap_or_else(|why| panic!("{why}:\n{}", folded.dump("inline")));
    let (share, total) = inlined_share(&folded, "inline");
    eprintln!("inline.c -O2 -g: {:.1}% of {total} samples main;outer;step[;mix]", share * 100.0);
    assert!(share >= 0.90, "{:.1}% of {total} samples go main → outer → step (inlined) [→ mix (inlined)]:\n{}", share * 100.0, folded.dump("inline"));

    // Stripped, with its DWARF in a debug file.
    let split = debug_files::split(&built, &output_dir("dwarf-inline-split"));
    let directory = split.debug_directory.to_str().expect("a UTF-8 path");
    let (finished, _) = profile_workload("dwarf-inline-split", &split.stripped, &["2"], &["--debug-file-directory", directory]);
    let folded = finished.folded();
    let (share, total) = inlined_share(&folded, "inline");
    eprintln!("stripped inline.c with its debug file: {:.1}% of {total} samples main;outer;step[;mix]", share * 100.0);
    assert!(share >= 0.90, "{:.1}% of {total} samples of the stripped binary go main → outer → step [→ mix]:\n{}", share * 100.0, folded.dump("inline"));
}
