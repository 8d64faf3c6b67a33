//! oxeye against devfiler's rules: a receiver that accepts and refuses exactly what devfiler
//! 0.15 does (`otlp_sink::Peer::Devfiler`: profiles only, every acceptance rule of its
//! collector), fed the mix of stacks a real host gives: the vDSO, kernel frames, stacks cut
//! short, JIT code, processes that live a millisecond and many processes at once.

use std::{collections::BTreeSet, process::Command, time::Duration};

use otlp_sink::{stacks, Sink, SinkConfig};
use oxeye_tests::{build_workload, checks, deadline, output, servers::Nginx, spawn, start_workload, workload, Oxeye};

const LIMIT: Duration = Duration::from_secs(180);

#[test]
fn devfiler_accepts_every_batch_of_a_mixed_host_and_profiles_keep_flowing_without_spans() {
    let _deadline = deadline(LIMIT);
    let sink = Sink::start(SinkConfig::devfiler()).expect("start the devfiler-rules receiver");
    let nginx = Nginx::start("devfiler-nginx");
    let oxeye = Oxeye::start("devfiler-mix", &["-F", "99", "--collection-agent", &sink.addr().to_string(), "--disable-tls", "--reporter-interval", "1"]);

    // All at once, for a few seconds of wall-clock time each.
    let mut running = vec![
        start_workload(&workload("vdso"), &["3"]),
        start_workload(&workload("syscalls"), &["3"]),
        start_workload(&build_workload("recurse.c", &["-O2", "-fomit-frame-pointer"]), &["3", "200"]),
        spawn(Command::new("node").args(["-e", "const end = Date.now() + 3000; let x = 0; while (Date.now() < end) { for (let i = 0; i < 1e5; i++) x += Math.sqrt(x + i); } console.log(x > 0)"]), "node"),
    ];
    let chain = workload("chain");
    running.extend((0..30).map(|_| start_workload(&chain, &["1"])));
    // CPU seconds each workload got, by executable name: what its sample count follows.
    let mut cpu = std::collections::BTreeMap::new();
    for process in &mut running {
        let exited = process.wait();
        assert!(exited.status.success(), "{} failed: {}", process.what(), exited.status);
        let name = process.what().trim_start_matches("workload ").to_owned();
        *cpu.entry(name).or_insert(0.0) += exited.cpu_seconds();
    }
    // Then, alone (so that they get a CPU), processes of about a millisecond each, for 3 s.
    let mut shell = spawn(Command::new("sh").args(["-c", "end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do /bin/true; done"]), "a shell starting /bin/true");
    assert!(shell.wait().status.success(), "the shell loop failed");
    // Spans and metrics, which devfiler does not implement.
    for _ in 0..3 {
        let curl = output(Command::new("curl").args(["-s", "-o", "/dev/null"]).arg(nginx.url()), "curl");
        assert!(curl.status.success(), "curl failed");
    }
    std::thread::sleep(Duration::from_secs(3));
    let finished = oxeye.stop();
    finished.assert_success();

    let refusals = sink.refusals();
    assert!(refusals.is_empty(), "devfiler refuses {} batches, first: {}", refusals.len(), refusals[0]);
    let samples: Vec<_> = sink.requests().iter().flat_map(stacks).collect();
    let of = |name: &'static str| samples.iter().filter(move |s| s.resource.get("process.executable.name").map(String::as_str) == Some(name));
    let count = |name: &'static str, wanted: &dyn Fn(&otlp_sink::DecodedSample) -> bool| of(name).filter(|s| wanted(s)).map(|s| s.count).sum::<u64>();
    let in_vdso = count("vdso", &|s| s.frames.first().is_some_and(|f| f.contains("clock_gettime")));
    let kernel = count("syscalls", &|s| s.frame_types.iter().any(|t| t == "kernel"));
    let cut_short = count("recurse", &|s| s.frame_types.iter().any(|t| t == "abort-marker"));
    let jit = count("node", &|s| s.frame_types.first().is_some_and(|t| t == "native") && s.frames.first().is_some_and(String::is_empty));
    let short_lived: BTreeSet<&String> = of("true").filter_map(|s| s.resource.get("process.pid")).collect();
    let chains: BTreeSet<&String> = of("chain").filter_map(|s| s.resource.get("process.pid")).collect();
    eprintln!(
        "accepted: {} samples; vDSO {in_vdso}, kernel {kernel}, cut short {cut_short}, JIT {jit}; {} short-lived processes, {} chain processes",
        samples.iter().map(|s| s.count).sum::<u64>(),
        short_lived.len(),
        chains.len()
    );
    // The workloads share the CPUs with 30 others: each is checked against the CPU time it got.
    let share = |part: u64, name: &'static str| {
        let total: u64 = of(name).map(|s| s.count).sum();
        checks::enough_samples(total, cpu[name], 0.5).unwrap_or_else(|why| panic!("{name}: {why}"));
        assert!(total >= 5, "only {total} samples of {name}");
        part as f64 / total as f64
    };
    assert!(share(in_vdso, "vdso") >= 0.5, "{in_vdso} samples of vdso in the vDSO's clock_gettime");
    assert!(share(kernel, "syscalls") >= 0.5, "{kernel} samples of syscalls with kernel frames");
    assert!(share(cut_short, "recurse") >= 0.8, "{cut_short} samples of recurse cut short at the depth limit");
    assert!(share(jit, "node") >= 0.2, "{jit} samples of node in its JIT code");
    assert!(short_lived.len() >= 3, "samples of only {} short-lived processes", short_lived.len());
    // Each gets a 15th of a CPU or less: most, not all, are sampled.
    assert!(chains.len() >= 10, "samples of only {} of the 30 chain processes", chains.len());
    // Nothing lost: devfiler got every sample the local profile counted.
    assert_eq!(samples.iter().map(|s| s.count).sum::<u64>(), finished.folded().total(), "exported samples differ from the local profile");
    assert_eq!(finished.reported("exported", "refused"), 0, "{}", finished.stderr);

    // Spans and metrics: one line each, then nothing more is sent; profiles went on.
    for signal in ["traces", "metrics"] {
        let lines: Vec<&str> = finished.stderr.lines().filter(|l| l.contains(&format!("does not accept OTLP {signal}"))).collect();
        assert_eq!(lines.len(), 1, "{signal}:\n{}", finished.stderr);
        assert!(lines[0].contains("UNIMPLEMENTED"), "{}", lines[0]);
    }
    assert!(!finished.stderr.contains("not implemented"), "refusals of unsupported signals keep being logged:\n{}", finished.stderr);
    assert_eq!(sink.stats().spans, 0);
}
