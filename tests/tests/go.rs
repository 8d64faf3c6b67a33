//! End-to-end tests of Go frames named from `.gopclntab`: the Go chain of
//! `tests/workloads/go/chain.go`, built stripped (`-ldflags='-s -w'`, no `.symtab`) by Debian's
//! Go, profiled by the real oxeye; names and inlined calls in the folded stacks, and frame type
//! `go` with function, file and line in OTLP, under devfiler's rules.

use std::{path::PathBuf, process::Command, time::Duration};

use otlp_sink::{devfiler_view::shown_stacks, stacks, Sink, SinkConfig};
use oxeye_tests::{deadline, output_dir, root, run_ok, spawn, Oxeye};

/// A Go build, the workload's run and oxeye's start and stop, with room for a slow CPU.
const LIMIT: Duration = Duration::from_secs(180);

/// `chain.go` built stripped with the default `go` (Debian's 1.19).
fn stripped_chain() -> PathBuf {
    let dir = output_dir("go-build");
    let binary = dir.join("gostripped");
    run_ok(
        Command::new("go")
            .args(["build", "-ldflags=-s -w", "-o"])
            .arg(&binary)
            .arg(root().join("tests/workloads/go/chain.go"))
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GO111MODULE", "off"),
        "go build",
    );
    let symbols = run_ok(Command::new("readelf").arg("-S").arg(&binary), "readelf");
    assert!(!symbols.contains(".symtab") && symbols.contains(".gopclntab"), "the build is not stripped with its .gopclntab:\n{symbols}");
    binary
}

#[test]
fn stripped_go_binary_has_named_frames_with_inlined_calls_in_folded_stacks_and_otlp() {
    let _deadline = deadline(LIMIT);
    let binary = stripped_chain();
    let sink = Sink::start(SinkConfig::devfiler()).expect("start the devfiler-rules receiver");
    let mut chain = spawn(Command::new(&binary).arg("5").stdout(std::process::Stdio::null()), "gostripped");
    let pid = chain.id().to_string();
    let oxeye = Oxeye::start("go-stripped", &["-F", "99", "--pid", &pid, "--collection-agent", &sink.addr().to_string(), "--disable-tls", "--reporter-interval", "1"]);
    assert!(chain.wait().status.success(), "the Go workload failed");
    let finished = oxeye.wait();
    finished.assert_success();
    let folded = finished.folded();
    let total = folded.samples("gostripped");
    assert!(total >= 100, "only {total} samples:\n{}", finished.stderr);
    // Every user frame named: none left as `gostripped+0x…`.
    let unnamed: u64 = folded.process("gostripped").filter(|s| s.user_frames().iter().any(|f| f.starts_with("gostripped+"))).map(|s| s.count).sum();
    assert!(unnamed as f64 <= 0.05 * total as f64, "{unnamed} of {total} samples have unnamed frames:\n{}", folded.dump("gostripped"));
    // The whole chain, from the goroutine's root to wherever in the chain the sample landed:
    // chainOuter is inlined into main.main and chainInlined into chainMiddle, so both come from
    // inline trees; chainMiddle sits between them only if the frameless leaf's caller is kept
    // (pcsp unwinding: frame pointers skip it).
    let chain = ["runtime.goexit", "runtime.main", "main.main", "main.chainOuter", "main.chainMiddle", "main.chainInlined", "main.leafHot"];
    let whole: u64 = folded.process("gostripped").filter(|s| is_chain_prefix(&s.user_frames(), &chain)).map(|s| s.count).sum();
    let in_leaf: u64 = folded.process("gostripped").filter(|s| s.user_frames() == chain).map(|s| s.count).sum();
    eprintln!("go: {total} samples, {unnamed} with unnamed frames, {whole} whole, {in_leaf} of them in main.leafHot");
    assert!(whole as f64 >= 0.95 * total as f64, "{whole} of {total} samples are whole chains {chain:?}:\n{}", folded.dump("gostripped"));
    assert!(in_leaf as f64 >= 0.5 * total as f64, "{in_leaf} of {total} samples in main.leafHot under the whole chain:\n{}", folded.dump("gostripped"));

    // OTLP: frame type go, with the source file and line devfiler shows.
    let refusals = sink.refusals();
    assert!(refusals.is_empty(), "devfiler refuses {} batches, first: {}", refusals.len(), refusals[0]);
    let samples: Vec<_> = sink.requests().iter().flat_map(stacks).collect();
    let typed: u64 = samples.iter().filter(|s| s.frames.iter().zip(&s.frame_types).any(|(f, t)| t == "go" && f.contains("main.leafHot"))).map(|s| s.count).sum();
    assert!(typed as f64 >= 0.9 * total as f64, "{typed} of {total} exported samples have a go-typed main.leafHot frame");
    // What devfiler shows: it keys a non-native frame by file and address and names it by the
    // last name sent for that key, so inlined calls need locations of their own to show.
    let leaf_first: Vec<&str> = chain.iter().rev().copied().filter(|f| f.starts_with("main.")).collect();
    let shown: u64 = shown_stacks(&sink.requests())
        .iter()
        .filter(|s| s.names().filter(|name| name.starts_with("main.")).eq(leaf_first.iter().copied()))
        .map(|s| s.count)
        .sum();
    assert!(shown as f64 >= 0.9 * in_leaf as f64, "devfiler shows {shown} samples as {leaf_first:?}, oxeye counted {in_leaf} in main.leafHot");
}

/// Whether `frames` is `chain` cut after chainMiddle or later: a sample in the chain's own code,
/// with every caller above it.
fn is_chain_prefix(frames: &[&str], chain: &[&str]) -> bool {
    frames.len() >= 5 && chain.starts_with(frames)
}
