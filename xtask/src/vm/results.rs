//! Reading what the scenarios left (files sent over the console, or written directly on the
//! host) and checking it with the same checks as the host's end-to-end tests
//! (`tests/src/checks.rs`).

use std::{collections::BTreeMap, fs, path::Path};

use anyhow::{Context, Result};
use base64::Engine;

use super::{arch::Arch, privileges};
use crate::{
    checks::{self, Check, SpanLine},
    folded::Folded,
};

/// The marker every line of the guest's protocol starts with.
const MARK: &str = "@@oxeye-vm ";

/// Timestamps (seconds of guest uptime) and files the guest printed on its console.
#[derive(Debug, Default)]
pub struct Transcript {
    /// `step NAME UPTIME` lines, plus `booted` and `done`.
    pub steps: Vec<(String, f64)>,
    /// Files sent between `file NAME` and `end`.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Transcript {
    /// Parses a console (kernel and other lines around the protocol are ignored).
    pub fn parse(console: &str) -> Result<Transcript> {
        let mut transcript = Transcript::default();
        let mut file: Option<(String, String)> = None;
        for line in console.lines() {
            if let Some((name, body)) = &mut file {
                if line == "@@oxeye-vm end" {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()).with_context(|| format!("file {name} is not valid base64"))?;
                    transcript.files.insert(std::mem::take(name), bytes);
                    file = None;
                } else {
                    body.push_str(line.trim());
                }
                continue;
            }
            let Some(rest) = line.find(MARK).map(|at| &line[at + MARK.len()..]) else { continue };
            let words: Vec<&str> = rest.split_whitespace().collect();
            match words.as_slice() {
                ["file", name] => file = Some((name.to_string(), String::new())),
                ["step", name, uptime] => transcript.steps.push((name.to_string(), uptime.parse().unwrap_or(f64::NAN))),
                ["booted", uptime, ..] | ["done", uptime] => transcript.steps.push((words[0].to_owned(), uptime.parse().unwrap_or(f64::NAN))),
                _ => {}
            }
        }
        Ok(transcript)
    }

    /// Reads the files the scenarios wrote directly (the host row).
    pub fn read_dir(dir: &Path, stdout: &str) -> Result<Transcript> {
        let mut transcript = Transcript::parse(stdout)?;
        for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                transcript.files.insert(entry.file_name().to_string_lossy().into_owned(), fs::read(entry.path())?);
            }
        }
        Ok(transcript)
    }

    /// Writes the files into `dir`, for a person to look at.
    pub fn save(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        for (name, bytes) in &self.files {
            fs::write(dir.join(name), bytes).with_context(|| format!("cannot write {}", dir.join(name).display()))?;
        }
        Ok(())
    }

    /// The uptime at a step.
    pub fn at(&self, step: &str) -> Option<f64> {
        self.steps.iter().find(|(name, _)| name == step).map(|(_, at)| *at)
    }

    /// A file's text (empty if the guest did not send it).
    pub fn text(&self, name: &str) -> String {
        self.files.get(name).map(|bytes| String::from_utf8_lossy(bytes).into_owned()).unwrap_or_default()
    }
}

/// A scenario's outcome.
pub enum Outcome {
    /// Passed; the figures seen.
    Pass(String),
    /// Failed; why.
    Fail(String),
    /// Not run; why.
    Skip(String),
}

/// The HTTP server's port inside the scenarios (`init.sh` passes it).
pub const GUEST_HTTP_PORT: u16 = 8080;

/// What a kernel of the matrix must show beyond the common checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expected {
    /// The hook oxeye must choose for TCP state, or `None` when the right choice is not
    /// known (`--kernel`).
    pub tcp_state_hook: Option<&'static str>,
    /// The payload hooks oxeye must choose (the value of `payloads=`), or `None` when not
    /// known here (`--kernel`; the host, whose choice the `payload_iovec` test checks).
    pub payload_hooks: Option<&'static str>,
    /// Return addresses must come out signed (else the signed-chain scenarios are skipped
    /// when they are not).
    pub signed_return_addresses: bool,
}

/// The burst's check: the requests its four clients completed (`burst-N.txt`), against the
/// spans and metrics.
fn burst(transcript: &Transcript, spans: Result<&[SpanLine], String>, port: u16) -> Check {
    let spans = spans?;
    let mut completed = 0;
    for client in 1..=4 {
        let text = transcript.text(&format!("burst-{client}.txt"));
        completed += text.trim().parse::<u64>().map_err(|_| format!("client {client} of the burst reported {text:?}"))?;
    }
    checks::burst(spans, &transcript.text("metrics.txt"), port, "/burst.txt", completed)
}

/// Runs every check on a transcript.
/// `chain-nofp` sleeps 1 s before working: the session's `off_cpu.folded` has it.
fn off_cpu_pause(transcript: &Transcript, stderr: &str) -> Check {
    let Some(bytes) = transcript.files.get("off_cpu.folded") else {
        return Err(format!("oxeye wrote no off_cpu.folded; its log:\n{stderr}"));
    };
    checks::off_cpu_pause(&Folded::read_str(&String::from_utf8_lossy(bytes)), "chain-nofp", 1.0)
}

pub fn check(transcript: &Transcript, arch: Arch, http_port: u16, expected: &Expected) -> Vec<(&'static str, Outcome)> {
    let tcp_state_hook = expected.tcp_state_hook;
    let folded = transcript.files.get("stacks.folded").map(|bytes| Folded::read_str(&String::from_utf8_lossy(bytes)));
    let stderr = transcript.text("oxeye.stderr");
    let spans = SpanLine::parse_all(&transcript.text("spans.tsv"));
    let profile = |check: fn(&Folded, &str, f64) -> Check, process: &str, seconds: f64| match &folded {
        Some(folded) => check(folded, process, seconds),
        None => Err(format!("oxeye wrote no stacks.folded; its log:\n{stderr}")),
    };
    let http = || -> Check {
        let spans = spans.clone()?;
        let expected = [("/hello.txt", "200", 5), ("/missing.txt", "404", 1)];
        let server = checks::http_spans(&spans, "SERVER", "busybox", http_port, &expected)?;
        let client = checks::http_spans(&spans, "CLIENT", "busybox", http_port, &expected)?;
        Ok(format!("{server}; {client}"))
    };
    let outputs_listed = transcript.text("outputs.txt");
    let outputs: Vec<(&str, bool)> =
        ["stacks.folded", "flamegraph.svg", "profile.pb.gz"].iter().map(|name| (*name, outputs_listed.lines().any(|line| line.trim() == *name))).collect();
    let exit_code = transcript.text("oxeye.exit").trim().parse().ok();

    let outcome = |check: Check| match check {
        Ok(summary) => Outcome::Pass(summary),
        Err(why) => Outcome::Fail(why),
    };
    let signed = |check: fn(&Folded, &str, f64) -> Check, process: &str| {
        if arch != Arch::Aarch64 {
            return Outcome::Skip("pointer authentication is arm64's".to_owned());
        }
        let probe = transcript.text("pac-probe.txt");
        let signed = probe.lines().find_map(|line| {
            let words: BTreeMap<&str, &str> = line.split_whitespace().filter_map(|word| word.split_once('=')).collect();
            Some((*words.get("saved")?, *words.get("returns_to")?)).filter(|(saved, returns_to)| saved != returns_to)
        });
        match signed {
            Some((saved, returns_to)) => {
                outcome(profile(check, process, 4.0).map(|summary| format!("{summary}; saved {saved} returns to {returns_to}")))
            }
            _ if !expected.signed_return_addresses => {
                Outcome::Skip(format!("return addresses are not signed on this kernel (pac-probe: {:?})", probe.trim()))
            }
            _ => Outcome::Fail(format!("return addresses are not signed in the guest, so this proves nothing (pac-probe: {probe:?})")),
        }
    };
    let mut outcomes = vec![
        ("frame-pointer chain (C)", outcome(profile(checks::known_chain, "chain", 4.0))),
        ("no frame pointers (C -O2)", outcome(profile(checks::c_without_frame_pointers, "chain-nofp", 4.0))),
        ("no frame pointers (Rust release)", outcome(profile(checks::rust_without_frame_pointers, "chain-rs", 4.0))),
        ("kernel frames named", outcome(profile(checks::kernel_frames_named, "syscalls", 3.0))),
        ("off-CPU time of a 1 s pause", outcome(off_cpu_pause(transcript, &stderr))),
        ("signed return addresses, frame pointers", signed(checks::known_chain, "chain-pac")),
        ("signed return addresses, no frame pointers", signed(checks::c_without_frame_pointers, "chain-pac-nofp")),
        ("HTTP over loopback into spans", outcome(http())),
        ("HTTP burst, every request counted", outcome(burst(transcript, spans.as_deref().map_err(Clone::clone), http_port + 1))),
        ("TCP statistics from the chosen hook", outcome(checks::tcp_statistics(&transcript.text("metrics.txt"), http_port, 6))),
        (
            "hook choice",
            match tcp_state_hook {
                Some(expected) => outcome(checks::hook_choice(&stderr, "tcp_state", expected)),
                None => Outcome::Skip(format!(
                    "a kernel from --kernel has no known right choice; oxeye chose tcp_state={}",
                    checks::chosen_hook(&stderr, "tcp_state").unwrap_or_else(|| "?".to_owned())
                )),
            },
        ),
        (
            "payload hook choice",
            match expected.payload_hooks {
                Some(hooks) => outcome(checks::hook_choice(&stderr, "payloads", hooks)),
                None => Outcome::Skip(format!("no known right choice here; oxeye chose payloads={}", checks::chosen_hook(&stderr, "payloads").unwrap_or_else(|| "?".to_owned()))),
            },
        ),
        ("clean exit", outcome(checks::clean_exit(exit_code, &outputs, &transcript.text("bpftool-progs.txt")))),
    ];
    outcomes.extend(privileges::check(transcript, http_port));
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transcript_keeps_files_and_steps_between_kernel_lines() {
        let console = "[    1.0] booting\r\n@@oxeye-vm booted 2.25 6.1.0-56-arm64 aarch64\n\
            @@oxeye-vm step sampling 5.5\n[    6.1] random: crng init done\n\
            @@oxeye-vm file oxeye.exit\nMAo=\n@@oxeye-vm end\n\
            @@oxeye-vm file outputs.txt\nc3RhY2tzLmZv\nbGRlZAo=\n@@oxeye-vm end\n@@oxeye-vm done 30.0\n";
        let transcript = Transcript::parse(&console.replace('\r', "")).unwrap();
        assert_eq!(transcript.at("booted"), Some(2.25));
        assert_eq!(transcript.at("sampling"), Some(5.5));
        assert_eq!(transcript.at("done"), Some(30.0));
        assert_eq!(transcript.text("oxeye.exit"), "0\n");
        assert_eq!(transcript.text("outputs.txt"), "stacks.folded\n");
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        assert!(Transcript::parse("@@oxeye-vm file x\n!!!\n@@oxeye-vm end\n").is_err());
    }

    #[test]
    fn empty_transcript_fails_every_scenario_with_a_reason() {
        let outcomes = check(&Transcript::default(), Arch::Aarch64, GUEST_HTTP_PORT, &Expected { tcp_state_hook: Some("kprobe:tcp_set_state"), payload_hooks: Some("tracepoint:syscalls"), signed_return_addresses: true });
        assert!(outcomes.len() >= 9);
        // Sessions that run only on some kernels or on request are skipped when absent.
        let optional = |scenario: &str| scenario == "capability matrix" || scenario.starts_with("least privilege at perf_event_paranoid");
        for (scenario, outcome) in outcomes.into_iter().filter(|(scenario, _)| !optional(scenario)) {
            assert!(matches!(outcome, Outcome::Fail(ref why) if !why.is_empty()), "{scenario} did not fail on an empty transcript");
        }
    }
}
