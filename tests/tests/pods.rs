//! Pod metadata on every signal: a container run the way a kubelet runs it, by a real
//! containerd (Debian's, started by the test on a socket of its own): namespace `k8s.io`, a
//! cgroup under `kubepods/besteffort/pod<UID>/<ID>` and the kubelet's `io.kubernetes.*` labels.
//! Its Python HTTP server's profiles, spans and metrics carry `k8s.pod.name`, `k8s.pod.uid`,
//! `k8s.namespace.name`, `k8s.container.name` and `k8s.node.name` beside `container.id`; with
//! the runtime gone, they carry `container.id` and the pod UID from the cgroup, and oxeye
//! goes on. podman's containers, alone and in a podman pod, carry their own IDs.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use otlp_sink::{stacks, Sink, SinkConfig};
use oxeye_tests::{
    deadline::{self, output, spawn, Spawned},
    output_dir,
    podman::Podman,
    run_ok,
    servers::{free_port, get, wait_for_port, COMPUTING_SERVER},
    Oxeye,
};

/// containerd's start, the container's, 20 requests and oxeye's stop, with room for a slow CPU.
const LIMIT: Duration = Duration::from_secs(180);
/// `SpanKind::Server`.
const SERVER: i32 = 2;
const REQUESTS: usize = 20;
const POD_UID: &str = "5f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f";

/// A containerd of the test's own, in a directory of its own.
struct Containerd {
    dir: PathBuf,
    daemon: Spawned,
    containers: Vec<String>,
}

impl Containerd {
    fn start(test: &str) -> Containerd {
        let dir = output_dir(test);
        let mut command = Command::new("containerd");
        command.arg("--root").arg(dir.join("root")).arg("--state").arg(dir.join("state")).arg("--address").arg(dir.join("containerd.sock"));
        let daemon = spawn(command.stdout(Stdio::null()).stderr(fs::File::create(dir.join("containerd.log")).expect("containerd log")), "containerd");
        let containerd = Containerd { dir, daemon, containers: Vec::new() };
        let until = Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(Instant::now() < until, "containerd did not answer on {} within 30 s", containerd.socket().display());
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        output(Command::new("ctr").arg("--address").arg(self.socket()).args(["--namespace", "k8s.io"]).args(args), "ctr")
    }

    /// Runs `command` in a container as a kubelet would: in pod `POD_UID`'s cgroup, with the
    /// kubelet's labels, on the host's network, with the host's `/usr` and `/etc` read-only.
    fn run_pod_container(&mut self, id: &str, container_name: &str, command: &[&str]) -> Spawned {
        let rootfs = self.dir.join(format!("rootfs-{}", &id[..12]));
        for dir in ["usr", "etc", "tmp", "proc", "dev", "sys", "run"] {
            fs::create_dir_all(rootfs.join(dir)).expect("rootfs directory");
        }
        for (link, target) in [("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")] {
            std::os::unix::fs::symlink(target, rootfs.join(link)).expect("rootfs link");
        }
        let cgroup = format!("/kubepods/besteffort/pod{POD_UID}/{id}");
        let labels = [
            format!("io.kubernetes.pod.name=web-{}", &id[..5]),
            "io.kubernetes.pod.namespace=shop".to_owned(),
            format!("io.kubernetes.pod.uid={POD_UID}"),
            format!("io.kubernetes.container.name={container_name}"),
        ];
        let mut ctr = Command::new("ctr");
        ctr.arg("--address").arg(self.socket()).args(["--namespace", "k8s.io", "run", "--net-host", "--env", "PATH=/usr/bin:/bin", "--cgroup", &cgroup]);
        for label in &labels {
            ctr.args(["--label", label]);
        }
        for dir in ["/usr", "/etc"] {
            ctr.args(["--mount", &format!("type=bind,src={dir},dst={dir},options=rbind:ro")]);
        }
        ctr.arg("--rootfs").arg(&rootfs).arg(id).args(command);
        self.containers.push(id.to_owned());
        spawn(ctr.stdin(Stdio::null()).stdout(Stdio::null()), "ctr run (a container of pod web)")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.containers) {
            self.ctr(&["task", "kill", "--signal", "SIGKILL", &id]);
            self.ctr(&["task", "delete", "--force", &id]);
            self.ctr(&["container", "delete", &id]);
        }
        self.daemon.stop();
    }
}

/// A container ID as runtimes make them: 64 hex digits.
fn container_id(seed: u64) -> String {
    (0..4).map(|i| format!("{:016x}", seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(i * 16) ^ u64::from(std::process::id()))).collect()
}

fn expect_pod_attributes(what: &str, resource: &BTreeMap<String, String>, id: &str) {
    let expected = [
        ("container.id", id.to_owned()),
        ("k8s.pod.name", format!("web-{}", &id[..5])),
        ("k8s.pod.uid", POD_UID.to_owned()),
        ("k8s.namespace.name", "shop".to_owned()),
        ("k8s.container.name", "server".to_owned()),
        ("k8s.node.name", "node-7".to_owned()),
    ];
    for (key, value) in expected {
        assert_eq!(resource.get(key), Some(&value), "{what}: {key} in {resource:?}");
    }
}

#[test]
fn a_kubelet_style_containers_profiles_spans_and_metrics_carry_its_pod() {
    let _deadline = deadline::deadline(LIMIT);
    let mut containerd = Containerd::start("pods");
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let addr = sink.addr().to_string();
    let endpoint = containerd.endpoint();
    let mut oxeye = Oxeye::start_with_env(
        "pods",
        &["--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1", "--container-runtime-endpoint", &endpoint],
        &[("NODE_NAME", "node-7")],
    );
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(10));
    let id = container_id(1);
    let port = free_port();
    let mut server = containerd.run_pod_container(&id, "server", &["python3", "-c", COMPUTING_SERVER, &port.to_string()]);
    wait_for_port(port, Duration::from_secs(30));
    for i in 0..REQUESTS {
        assert_eq!(get(port, &format!("/item/{i}")).status, 200);
    }
    assert!(sink.wait_for_spans(REQUESTS, Duration::from_secs(20)), "spans did not arrive");
    std::thread::sleep(Duration::from_secs(2));
    let finished = oxeye.stop();
    finished.assert_success();
    drop(containerd);
    server.stop();

    let of_container = |resource: &BTreeMap<String, String>| resource.get("container.id") == Some(&id);
    let spans: Vec<_> = sink.all_spans().into_iter().filter(|s| s.kind == SERVER && of_container(&s.resource)).collect();
    assert_eq!(spans.len(), REQUESTS, "server spans of the container:\n{}", finished.stderr);
    for span in &spans {
        expect_pod_attributes("span", &span.resource, &id);
    }
    let samples: Vec<_> = sink.requests().iter().flat_map(stacks).filter(|s| of_container(&s.resource)).collect();
    assert!(!samples.is_empty(), "no profile samples of the container:\n{}", finished.stderr);
    for sample in &samples {
        expect_pod_attributes("profile", &sample.resource, &id);
    }
    let durations: Vec<_> = sink.latest_metric_points().into_iter().filter(|p| p.name == "http.server.request.duration" && of_container(&p.resource)).collect();
    assert!(!durations.is_empty(), "no request-duration metrics of the container:\n{}", finished.stderr);
    for point in &durations {
        expect_pod_attributes("metric", &point.resource, &id);
    }
}

#[test]
fn without_a_runtime_containers_keep_their_id_and_pod_uid_and_profiling_goes_on() {
    let _deadline = deadline::deadline(LIMIT);
    let mut containerd = Containerd::start("pods-gone");
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let addr = sink.addr().to_string();
    let missing = Path::new("/nonexistent/oxeye-runtime.sock");
    let mut oxeye = Oxeye::start("pods-gone", &["--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1", "--container-runtime-endpoint", &format!("unix://{}", missing.display())]);
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(10));
    let id = container_id(2);
    let mut burner = containerd.run_pod_container(&id, "burner", &["timeout", "3", "sh", "-c", "while :; do :; done"]);
    let exited = burner.wait();
    let finished = oxeye.stop();
    finished.assert_success();
    drop(containerd);
    assert!(exited.status.code().is_some(), "the container's ctr run was killed: {}", exited.status);

    let samples: Vec<_> = sink.requests().iter().flat_map(stacks).filter(|s| s.resource.get("container.id") == Some(&id)).collect();
    let total: u64 = samples.iter().map(|s| s.count).sum();
    assert!(total >= 20, "{total} samples of the container:\n{}", finished.stderr);
    for sample in &samples {
        assert_eq!(sample.resource.get("k8s.pod.uid").map(String::as_str), Some(POD_UID), "{:?}", sample.resource);
        assert_eq!(sample.resource.get("k8s.pod.name"), None, "{:?}", sample.resource);
    }
    let said: Vec<&str> = finished.stderr.lines().filter(|l| l.contains("no k8s.pod.* attributes")).collect();
    assert_eq!(said.len(), 1, "one line about the absent runtime:\n{}", finished.stderr);
}

/// podman's containers and pods, removed when dropped.
struct PodmanRun {
    podman: Podman,
    pod: String,
    containers: Vec<String>,
}

impl PodmanRun {
    /// `podman run -d --rm` on the host's root file system (an overlay of it: no image to pull)
    /// and network, in the pod if `in_pod`; returns the container's ID.
    fn run(&mut self, in_pod: bool, command: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--rm"];
        if in_pod {
            args.extend(["--pod", &self.pod]);
        } else {
            args.extend(["--network", "host"]);
        }
        // `--rootfs` is a switch: the first argument after the options is the root, not an image.
        args.extend(["--rootfs", "/:O"]);
        let id = run_ok(&mut self.podman.command(&[&args[..], command].concat()), "podman run -d").trim().to_owned();
        assert_eq!(id.len(), 64, "podman run -d printed no container ID: {id:?}");
        self.containers.push(id.clone());
        id
    }
}

impl Drop for PodmanRun {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = output(&mut self.podman.command(&["rm", "--force", "--time", "0", id]), "podman rm");
        }
        let _ = output(&mut self.podman.command(&["pod", "rm", "--force", &self.pod]), "podman pod rm");
    }
}

/// podman names a container's cgroup `libpod-<ID>`, under its pod's (`<POD ID>`) when it is in
/// one: each container's spans and samples carry its own ID, never the pod's, and no `k8s.*`
/// attribute (a podman pod is no Kubernetes pod).
#[test]
fn podman_containers_alone_and_in_a_pod_carry_their_own_ids() {
    let _deadline = deadline::deadline(LIMIT);
    let dir = output_dir("pods-podman");
    let pod = format!("oxeye-test-{}", std::process::id());
    let mut podman = PodmanRun { podman: Podman::new(&dir), pod: pod.clone(), containers: Vec::new() };
    let pod_id = run_ok(&mut podman.podman.command(&["pod", "create", "--name", &pod, "--network", "host"]), "podman pod create").trim().to_owned();
    let sink = Sink::start(SinkConfig::localhost()).expect("start otlp-sink");
    let addr = sink.addr().to_string();
    let mut oxeye = Oxeye::start("pods-podman", &["--collection-agent", &addr, "--disable-tls", "--reporter-interval", "1"]);
    oxeye.wait_for_stderr("hooks chosen", Duration::from_secs(10));
    let port = free_port();
    let server = podman.run(true, &["/usr/bin/python3", "-c", COMPUTING_SERVER, &port.to_string()]);
    let burner = podman.run(false, &["/usr/bin/timeout", "3", "/bin/sh", "-c", "while :; do :; done"]);
    wait_for_port(port, Duration::from_secs(30));
    let server_pid = run_ok(&mut podman.podman.command(&["inspect", "--format", "{{.State.Pid}}", &server]), "podman inspect").trim().to_owned();
    for i in 0..REQUESTS {
        assert_eq!(get(port, &format!("/item/{i}")).status, 200);
    }
    assert!(sink.wait_for_spans(REQUESTS, Duration::from_secs(20)), "spans did not arrive");
    run_ok(&mut podman.podman.command(&["wait", &burner]), "podman wait");
    std::thread::sleep(Duration::from_secs(2));
    let finished = oxeye.stop();
    finished.assert_success();
    drop(podman);

    let of_server = |resource: &BTreeMap<String, String>| resource.get("process.pid") == Some(&server_pid);
    let spans: Vec<_> = sink.all_spans().into_iter().filter(|s| s.kind == SERVER && of_server(&s.resource)).collect();
    assert_eq!(spans.len(), REQUESTS, "server spans of the pod's server (pid {server_pid}):\n{}", finished.stderr);
    let samples: Vec<_> = sink.requests().iter().flat_map(stacks).collect();
    for (what, id, resources) in [
        ("the pod's server, its spans", &server, spans.iter().map(|s| &s.resource).collect::<Vec<_>>()),
        ("the pod's server, its samples", &server, samples.iter().filter(|s| of_server(&s.resource)).map(|s| &s.resource).collect()),
        ("the lone container's samples", &burner, samples.iter().filter(|s| s.resource.get("container.id") == Some(&burner)).map(|s| &s.resource).collect()),
    ] {
        assert!(!resources.is_empty(), "no resources for {what}:\n{}", finished.stderr);
        for resource in resources {
            assert_eq!(resource.get("container.id"), Some(id), "{what}: container.id (the pod is {pod_id}) in {resource:?}");
            let k8s: Vec<_> = resource.keys().filter(|key| key.starts_with("k8s.")).collect();
            assert!(k8s.is_empty(), "{what}: podman's containers have no k8s attributes: {resource:?}");
        }
    }
}
