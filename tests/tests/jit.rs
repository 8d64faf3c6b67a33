//! End-to-end tests of JIT code named through perf maps: Node with `--perf-basic-prof` and the
//! JDK with `jcmd PID Compiler.perfmap` (or oxeye asking for it, `--java-perf-map`), walked
//! with the frame pointers both keep, profiled by the real oxeye; and perf maps that must not be read (a symbolic link, another user's file,
//! a 1 GB file), each refused with one log line while profiling goes on.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use otlp_sink::{stacks, Sink, SinkConfig};
use oxeye_tests::{deadline, output_dir, root, run_ok, spawn, Folded, Oxeye, Spawned};

/// Each test's limit: a JVM's or Node's start, several seconds of workload and oxeye's start
/// and stop, with room for a CPU three times slower.
const LIMIT: Duration = Duration::from_secs(180);

/// The JavaScript chain, root first, as oxeye names V8 frames: `function (file:line)`.
const JS_CHAIN: [&str; 3] = ["chainOuter (chain.js:18)", "chainMiddle (chain.js:14)", "leafHot (chain.js:6)"];
/// The Java chain, as oxeye names HotSpot frames (without the return type).
const JAVA_CHAIN: [&str; 3] = ["Chain.chainOuter(int)", "Chain.chainMiddle(int)", "Chain.leafHot(int)"];

fn jit_workload(name: &str) -> PathBuf {
    root().join("tests/workloads/jit").join(name)
}

/// Node running the JavaScript chain for `seconds`, writing its perf map (interpreted frames
/// too, and without inlining, so that each call is its own frame).
fn start_node(seconds: &str, perf_map: bool) -> Spawned {
    let mut command = Command::new("node");
    // Node 18 writes an isolate-*-v8.log beside it with --perf-basic-prof: not in the source tree.
    command.current_dir(output_dir("node"));
    if perf_map {
        command.args(["--perf-basic-prof", "--interpreted-frames-native-stack", "--no-turbo-inlining"]);
    }
    spawn(command.arg(jit_workload("chain.js")).arg(seconds), "node chain.js")
}

/// Share of `process`'s samples whose user stack ends in `chain` (the leaf may be followed by
/// kernel frames), and the samples.
fn chain_share(folded: &Folded, process: &str, chain: &[&str]) -> (f64, u64) {
    let total = folded.samples(process);
    let whole: u64 = folded.process(process).filter(|s| s.user_ends_with(chain)).map(|s| s.count).sum();
    (whole as f64 / total.max(1) as f64, total)
}

#[test]
fn node_perf_map_names_the_javascript_chain_in_folded_stacks_and_otlp() {
    let _deadline = deadline(LIMIT);
    let sink = Sink::start(SinkConfig::devfiler()).expect("start the devfiler-rules receiver");
    let mut node = start_node("6", true);
    let pid = node.id().to_string();
    let oxeye = Oxeye::start("jit-node", &["-F", "99", "--pid", &pid, "--collection-agent", &sink.addr().to_string(), "--disable-tls", "--reporter-interval", "1"]);
    assert!(node.wait().status.success(), "node failed");
    let finished = oxeye.wait();
    finished.assert_success();
    let folded = finished.folded();
    let (share, total) = chain_share(&folded, "node", &JS_CHAIN);
    eprintln!("node: {total} samples, {:.1}% whole and named", share * 100.0);
    assert!(total >= 100, "only {total} samples of node:\n{}", finished.stderr);
    assert!(share >= 0.9, "{:.1}% of node's samples end in {JS_CHAIN:?}:\n{}", share * 100.0, folded.dump("node"));
    assert!(finished.reported("oxeye: jit:", "frames named") > 0, "{}", finished.stderr);

    // In OTLP: frame type v8js with the function's name, as devfiler shows non-native frames.
    let refusals = sink.refusals();
    assert!(refusals.is_empty(), "devfiler refuses {} batches, first: {}", refusals.len(), refusals[0]);
    let samples: Vec<_> = sink.requests().iter().flat_map(stacks).collect();
    let typed = samples
        .iter()
        .filter(|s| s.frames.iter().zip(&s.frame_types).any(|(frame, kind)| kind == "v8js" && frame.starts_with("leafHot")))
        .map(|s| s.count)
        .sum::<u64>();
    assert!(typed as f64 >= 0.9 * total as f64, "{typed} of {total} exported samples have a v8js leafHot frame");
}

/// Runs `jcmd PID Compiler.perfmap` until the map names every function of the chain as
/// compiled code; returns the map's path.
fn java_perf_map(pid: u32) -> PathBuf {
    let path = PathBuf::from(format!("/tmp/perf-{pid}.map"));
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        run_ok(Command::new("jcmd").arg(pid.to_string()).arg("Compiler.perfmap"), "jcmd Compiler.perfmap");
        let map = fs::read_to_string(&path).unwrap_or_default();
        if ["Chain.chainOuter", "Chain.chainMiddle", "Chain.leafHot"].iter().all(|f| map.contains(f)) {
            return path;
        }
        assert!(Instant::now() < until, "the JVM did not compile the chain within 60 s:\n{map}");
        thread::sleep(Duration::from_millis(500));
    }
}

/// `Chain.java` compiled into output directory `classes` and run for `seconds`, with frame
/// pointers, one compiler (C2, so that the compiled code a map names is the code that stays)
/// and no inlining in the chain.
fn start_java(classes: &str, seconds: &str) -> Spawned {
    let classes = output_dir(classes);
    run_ok(Command::new("javac").arg("-d").arg(&classes).arg(jit_workload("Chain.java")), "javac");
    spawn(
        Command::new("java")
            .args(["-XX:+PreserveFramePointer", "-XX:-TieredCompilation", "-XX:CompileCommand=quiet", "-XX:CompileCommand=dontinline,Chain::*", "-cp"])
            .arg(&classes)
            .args(["Chain", seconds]),
        "java Chain",
    )
}

#[test]
fn java_perf_map_from_jcmd_names_the_java_chain() {
    let _deadline = deadline(LIMIT);
    let mut java = start_java("jit-java-classes", "12");
    let map = java_perf_map(java.id());
    let oxeye = Oxeye::start("jit-java", &["-F", "99", "--pid", &java.id().to_string(), "--duration", "4"]);
    let finished = oxeye.wait();
    finished.assert_success();
    java.stop();
    let _ = fs::remove_file(map);
    let folded = finished.folded();
    let (share, total) = chain_share(&folded, "java", &JAVA_CHAIN);
    eprintln!("java: {total} samples, {:.1}% whole and named", share * 100.0);
    assert!(total >= 100, "only {total} samples of java:\n{}", finished.stderr);
    assert!(share >= 0.9, "{:.1}% of java's samples end in {JAVA_CHAIN:?}:\n{}", share * 100.0, folded.dump("java"));
}

#[test]
fn java_perf_map_flag_asks_the_jvm_and_names_the_java_chain() {
    let _deadline = deadline(LIMIT);
    let mut java = start_java("jit-java-attach-classes", "14");
    let map = PathBuf::from(format!("/tmp/perf-{}.map", java.id()));
    let _ = fs::remove_file(&map);
    // Time for C2 to compile the chain, so that the first perf map asked for has it.
    thread::sleep(Duration::from_secs(3));
    let oxeye = Oxeye::start("jit-java-attach", &["-F", "99", "--pid", &java.id().to_string(), "--duration", "6", "--java-perf-map"]);
    let finished = oxeye.wait();
    finished.assert_success();
    java.stop();
    let written = fs::read_to_string(&map).unwrap_or_default();
    let _ = fs::remove_file(&map);
    assert!(written.contains("Chain.leafHot"), "oxeye did not get the JVM to write its perf map:\n{}", finished.stderr);
    assert!(finished.stderr.contains("JVMs asked for perf maps:") && !finished.stderr.contains("cannot ask JVM"), "{}", finished.stderr);
    let folded = finished.folded();
    let (share, total) = chain_share(&folded, "java", &JAVA_CHAIN);
    eprintln!("java --java-perf-map: {total} samples, {:.1}% whole and named", share * 100.0);
    assert!(total >= 100, "only {total} samples of java:\n{}", finished.stderr);
    assert!(share >= 0.9, "{:.1}% of java's samples end in {JAVA_CHAIN:?}:\n{}", share * 100.0, folded.dump("java"));
}


/// Makes `path` a perf map that must be refused, in one of three ways.
fn plant(path: &Path, how: &str, scratch: &Path) {
    let _ = fs::remove_file(path);
    match how {
        "symlink" => {
            let target = scratch.join("target.map");
            fs::write(&target, "0 ffffffffffff planted-by-a-symlink\n").expect("write the link's target");
            symlink(&target, path).expect("plant the symbolic link");
        }
        "owner" => {
            fs::write(path, "0 ffffffffffff planted-by-another-user\n").expect("write the map");
            std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown to nobody");
        }
        "size" => {
            let file = fs::File::create(path).expect("create the map");
            file.set_len(1 << 30).expect("make it 1 GB (sparse)");
        }
        other => unreachable!("no way {other}"),
    }
}

#[test]
fn perf_maps_that_are_links_another_users_or_huge_are_refused_with_one_line_each() {
    let _deadline = deadline(LIMIT);
    let scratch = output_dir("jit-refused");
    let oxeye = Oxeye::start("jit-refused", &["-F", "99"]);
    // Node without its own perf map runs JIT code, whose addresses oxeye then looks up in the
    // planted maps.
    let cases = ["symlink", "owner", "size"];
    let mut nodes: Vec<(Spawned, PathBuf, &str)> = cases
        .iter()
        .map(|&how| {
            let node = start_node("5", false);
            let path = PathBuf::from(format!("/tmp/perf-{}.map", node.id()));
            plant(&path, how, &scratch);
            (node, path, how)
        })
        .collect();
    for (node, _, _) in &mut nodes {
        assert!(node.wait().status.success(), "node failed");
    }
    let finished = oxeye.stop();
    finished.assert_success();
    let expected = [("symlink", "symbolic link"), ("owner", "owned by uid 65534"), ("size", "over the")];
    for (node, path, how) in &nodes {
        let _ = fs::remove_file(path);
        let prefix = format!("jit: not reading the perf map of PID {} ", node.id());
        let lines: Vec<&str> = finished.stderr.lines().filter(|l| l.contains(&prefix)).collect();
        let reason = expected.iter().find(|(h, _)| h == how).map(|(_, r)| *r).unwrap_or_default();
        assert_eq!(lines.len(), 1, "{how}: want one refusal line, got {lines:?}:\n{}", finished.stderr);
        assert!(lines[0].contains(reason), "{how}: {:?} does not say {reason:?}", lines[0]);
    }
    let folded = finished.folded();
    let planted = folded.stacks.iter().filter(|s| s.frames.iter().any(|f| f.contains("planted"))).count();
    assert_eq!(planted, 0, "a planted name was used:\n{}", folded.dump("node"));
    assert!(folded.samples("node") >= 50, "profiling did not go on: {} samples of node", folded.samples("node"));
    assert_eq!(finished.reported("oxeye: jit:", "perf maps refused"), 3, "{}", finished.stderr);
}
