//! The deployment files, checked without a cluster and without systemd running: every
//! Kubernetes manifest in `deploy/kubernetes/` against the Kubernetes API's own models (the
//! official Python client's, which reject unknown fields) and the collector configs' pipelines,
//! by `tests/deploy/validate_manifests.py`; and `deploy/systemd/oxeye.service` through
//! `systemd-analyze verify`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use oxeye_tests::{deadline, output, output_dir, root};

const LIMIT: Duration = Duration::from_secs(120);
/// The unit's binary, which need not be installed here.
const UNIT_BINARY: &str = "/usr/local/bin/oxeye";

/// The tests' Python (a venv with kubernetes and PyYAML, see `cargo xtask setup --tests`).
fn python() -> PathBuf {
    std::env::var_os("OXEYE_TEST_PYTHON").map_or_else(|| root().join("target/test-python/bin/python3"), PathBuf::from)
}

/// Runs the manifest validator with `args`.
fn validate_manifests(args: &[&str]) -> Output {
    let python = python();
    assert!(python.exists(), "{} is missing: run `cargo xtask setup --tests` (it creates the tests' Python venv)", python.display());
    output(Command::new(&python).arg(root().join("tests/deploy/validate_manifests.py")).args(args), "validate_manifests.py")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn kubernetes_manifests_match_the_api_models() {
    let _deadline = deadline(LIMIT);
    let out = validate_manifests(&[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "the manifests in deploy/kubernetes are invalid ({}):\n{stderr}{stdout}", out.status);
    assert!(stdout.starts_with("ok: "), "the validator checked nothing: {stdout}{stderr}");
    println!("{stdout}");
}

/// The validator itself: broken copies of the DaemonSet (an unknown field
/// `spec.template.spec.hostPIDD`, a wrong type, a missing required field, `privileged`) and
/// of a collector config must be rejected, or a passing check above would prove nothing.
#[test]
fn manifest_validator_rejects_an_unknown_field() {
    let _deadline = deadline(LIMIT);
    let out = validate_manifests(&["--self-test"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "the validator's self-test failed ({}):\n{stderr}{stdout}", out.status);
    assert!(
        stdout.contains("unknown field spec.template.spec.hostPIDD"),
        "the validator did not reject the unknown field spec.template.spec.hostPIDD:\n{stdout}{stderr}"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let _deadline = deadline(LIMIT);
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"].into_iter().map(Path::new).find(|p| p.exists()) else {
        println!("skipped: no systemd-analyze here (Debian's systemd package has it)");
        return;
    };
    let unit = fs::read_to_string(root().join("deploy/systemd/oxeye.service")).expect("read deploy/systemd/oxeye.service");
    // verify refuses an ExecStart= binary that does not exist: point it at one that does, and
    // change nothing else.
    let exec_start = format!("ExecStart={UNIT_BINARY} ");
    assert_eq!(unit.matches(&exec_start).count(), 1, "the unit should have one `{exec_start}…` line");
    let copy = unit.replace(&exec_start, "ExecStart=/bin/true ");
    let dir = output_dir("systemd-unit");
    let path = dir.join("oxeye.service");
    fs::write(&path, copy).expect("write the unit's copy");
    let out = output(Command::new(analyze).arg("verify").arg(&path), "systemd-analyze verify");
    let stderr = text(&out.stderr);
    // verify exits 0 after warnings such as an unknown key or an unparsable value: any line is
    // a problem.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify deploy/systemd/oxeye.service ({}):\n{stderr}{}",
        out.status,
        text(&out.stdout)
    );
    let _ = fs::remove_dir_all(&dir);
}

/// The DaemonSet asks for the image `cargo xtask image` names: `oxeye:<the crate's version>`.
#[test]
fn daemonset_image_is_the_one_xtask_image_builds() {
    let manifest = fs::read_to_string(root().join("deploy/kubernetes/oxeye-daemonset.yaml")).expect("read the DaemonSet");
    let cargo = fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
    let version = cargo.lines().find_map(|line| line.strip_prefix("version = ")).map(|v| v.trim_matches('"')).expect("the workspace version");
    let images: Vec<&str> = manifest.lines().filter_map(|line| line.trim().strip_prefix("image: ")).collect();
    assert_eq!(images, [format!("oxeye:{version}")], "the DaemonSet's image");
}

/// The sysctl file for Debian and Ubuntu hosts sets exactly kernel.perf_event_paranoid to 2, a
/// key this kernel has, in the `key = value` form sysctl.d reads.
#[test]
fn sysctl_file_sets_only_perf_event_paranoid_to_2() {
    let text = fs::read_to_string(root().join("deploy/systemd/60-oxeye-perf-events.conf")).expect("read the sysctl file");
    let settings: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split_once('=').map(|(key, value)| (key.trim(), value.trim())).unwrap_or_else(|| panic!("not `key = value`: {line:?}")))
        .collect();
    assert_eq!(settings, [("kernel.perf_event_paranoid", "2")]);
    assert!(Path::new("/proc/sys/kernel/perf_event_paranoid").exists(), "no such sysctl here");
}
