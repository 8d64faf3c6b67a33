//! The scenarios' least-privilege sessions (`limited_session` in `scenarios.sh`): oxeye as
//! `nobody` with exactly the README's capabilities must get what root gets; and, with
//! `--capability-matrix`, oxeye without each of them in turn must lose what the README's
//! "Capabilities" table says, and nothing more.

use super::results::{Outcome, Transcript};
use crate::{
    checks::{self, Check, SpanLine},
    folded::Folded,
};

/// The variable that asks `scenarios.sh` for the capability matrix.
pub const MATRIX_VARIABLE: &str = "OXEYE_CAPABILITY_MATRIX";

/// What the README says oxeye does without a capability.
#[derive(Clone, Copy)]
enum Without {
    /// It stops with one line naming the capability.
    Stops,
    /// It warns once and kernel frames are addresses.
    KernelFramesUnnamed,
    /// It warns once and another user's unreadable binary gets no unwind table.
    UnreadableBinariesNotUnwound,
    /// It warns once and loses nothing these workloads show (files are opened by path).
    WarnsOnly,
}

/// The README's table, one row per capability the scenarios drop (their names as
/// `with-caps` takes them) with its scenario's name.
const MATRIX: [(&str, &str, Without); 6] = [
    ("bpf", "without CAP_BPF", Without::Stops),
    ("perfmon", "without CAP_PERFMON", Without::Stops),
    ("sys_ptrace", "without CAP_SYS_PTRACE", Without::Stops),
    ("syslog", "without CAP_SYSLOG", Without::KernelFramesUnnamed),
    ("dac_read_search", "without CAP_DAC_READ_SEARCH", Without::UnreadableBinariesNotUnwound),
    ("checkpoint_restore", "without CAP_CHECKPOINT_RESTORE", Without::WarnsOnly),
];

/// The CPU seconds of the chain and syscalls workloads in a session.
const CHAIN_SECONDS: f64 = 4.0;
const SYSCALLS_SECONDS: f64 = 3.0;

/// What one session left: `NAME-oxeye.exit`, `-oxeye.stderr`, `-stacks.folded`, `-spans.tsv`.
struct Session {
    exit: Option<i32>,
    stderr: String,
    folded: Option<Folded>,
    spans: String,
}

impl Session {
    fn read(transcript: &Transcript, name: &str) -> Option<Session> {
        let exit = transcript.files.get(&format!("{name}-oxeye.exit"))?;
        Some(Session {
            exit: String::from_utf8_lossy(exit).trim().parse().ok(),
            stderr: transcript.text(&format!("{name}-oxeye.stderr")),
            folded: transcript.files.get(&format!("{name}-stacks.folded")).map(|bytes| Folded::read_str(&String::from_utf8_lossy(bytes))),
            spans: transcript.text(&format!("{name}-spans.tsv")),
        })
    }

    fn folded(&self) -> Result<&Folded, String> {
        self.folded.as_ref().ok_or_else(|| format!("oxeye wrote no stacks (exit {:?}); its log:\n{}", self.exit, self.stderr))
    }

    fn exited_cleanly(&self) -> Check {
        ensure(self.exit == Some(0), || format!("oxeye exited with {:?}; its log:\n{}", self.exit, self.stderr))?;
        Ok(String::new())
    }

    /// The `missing CAP_…` warnings it printed.
    fn warnings(&self) -> Vec<&str> {
        self.stderr.lines().filter(|line| line.contains("missing CAP_")).collect()
    }

    fn chain_whole(&self) -> Check {
        checks::c_without_frame_pointers(self.folded()?, "chain-secret", CHAIN_SECONDS).map(|summary| format!("chain {summary}"))
    }

    fn kernel_named(&self) -> Check {
        checks::kernel_frames_named(self.folded()?, "syscalls", SYSCALLS_SECONDS).map(|summary| format!("kernel {summary}"))
    }

    fn http(&self, port: u16) -> Check {
        let spans = SpanLine::parse_all(&self.spans)?;
        let expected = [("/hello.txt", "200", 5), ("/missing.txt", "404", 1)];
        let server = checks::http_spans(&spans, "SERVER", "busybox", port, &expected)?;
        let client = checks::http_spans(&spans, "CLIENT", "busybox", port, &expected)?;
        Ok(format!("{server}; {client}"))
    }

    /// Everything root's session gets: whole stacks through another user's unreadable
    /// binary, named kernel frames and every request's spans.
    fn everything(&self, port: u16) -> Check {
        self.exited_cleanly()?;
        Ok([self.chain_whole()?, self.kernel_named()?, self.http(port)?].join("; "))
    }
}

/// The least-privilege outcomes of a transcript: the `nobody` session always, the matrix when
/// it ran.
pub fn check(transcript: &Transcript, http_port: u16) -> Vec<(&'static str, Outcome)> {
    let outcome = |check: Check| match check {
        Ok(summary) => Outcome::Pass(summary),
        Err(why) => Outcome::Fail(why),
    };
    let nobody = match Session::read(transcript, "nobody") {
        Some(session) => outcome(nobody_gets_everything(&session, http_port)),
        None => Outcome::Fail("the nobody session left no exit status".to_owned()),
    };
    let paranoid = match Session::read(transcript, "paranoid") {
        Some(session) => outcome(stops_at_paranoid_3(&session, http_port)),
        None => Outcome::Skip("kernel.perf_event_paranoid is at most 2 here".to_owned()),
    };
    let mut outcomes = vec![
        ("least privilege at perf_event_paranoid 3: one line, or everything", paranoid),
        ("least privilege: nobody with the README's capabilities", nobody),
    ];
    if !transcript.files.keys().any(|name| name.starts_with("without-")) {
        outcomes.push(("capability matrix", Outcome::Skip("not asked for (--capability-matrix)".to_owned())));
        return outcomes;
    }
    for (cap, scenario, without) in MATRIX {
        let result = match Session::read(transcript, &format!("without-{cap}")) {
            Some(session) => outcome(loses_what_the_readme_says(&session, cap, without, http_port)),
            None => Outcome::Fail(format!("the session without {cap} left no exit status")),
        };
        outcomes.push((scenario, result));
    }
    outcomes
}

/// At a `kernel.perf_event_paranoid` above 2, a Debian or Ubuntu kernel refuses perf events
/// without CAP_SYS_ADMIN: oxeye stops with a line that names the setting. Another kernel
/// treats the level as 2, and oxeye gets everything.
fn stops_at_paranoid_3(session: &Session, port: u16) -> Check {
    if session.exit == Some(0) {
        return nobody_gets_everything(session, port).map(|summary| format!("this kernel allows perf events at level 3: {summary}"));
    }
    let line = session.stderr.lines().find(|line| line.contains("kernel.perf_event_paranoid is")).ok_or_else(|| format!("oxeye stopped without naming kernel.perf_event_paranoid; its log:\n{}", session.stderr))?;
    Ok(format!("stopped: {}", line.trim()))
}

fn nobody_gets_everything(session: &Session, port: u16) -> Check {
    let warned = session.warnings();
    ensure(warned.is_empty(), || format!("warned of missing capabilities:\n{}", warned.join("\n")))?;
    session.everything(port)
}

fn loses_what_the_readme_says(session: &Session, cap: &str, without: Without, port: u16) -> Check {
    let name = format!("CAP_{}", cap.to_uppercase());
    let warned = session.warnings();
    if let Without::Stops = without {
        return stopped(session, &name);
    }
    ensure(warned.len() == 1 && warned[0].contains(&name), || format!("expected one warning naming {name}, got {warned:?}"))?;
    session.exited_cleanly()?;
    let lost = match without {
        Without::KernelFramesUnnamed => {
            let (share, frames) = checks::named_kernel_share(session.folded()?, "syscalls");
            ensure(frames > 0 && share < 0.05, || format!("{:.1}% of {frames} kernel frames are named without {name}", share * 100.0))?;
            [format!("{:.1}% of {frames} kernel frames named", share * 100.0), session.chain_whole()?, session.http(port)?].join("; ")
        }
        Without::UnreadableBinariesNotUnwound => {
            let (share, total) = checks::complete_share(session.folded()?, "chain-secret", &checks::CHAIN, &["leaf_a", "leaf_b"]);
            ensure(total > 0 && share < 0.5, || format!("{:.1}% of {total} chain samples are whole without {name}", share * 100.0))?;
            [format!("chain {:.1}% of {total} samples whole", share * 100.0), session.kernel_named()?, session.http(port)?].join("; ")
        }
        Without::WarnsOnly | Without::Stops => session.everything(port)?,
    };
    Ok(format!("warned ({}); {lost}", warned[0].trim()))
}

/// oxeye stopped, with a line naming the capability.
fn stopped(session: &Session, name: &str) -> Check {
    ensure(session.exit.is_some_and(|code| code != 0), || format!("oxeye did not stop without {name}; its log:\n{}", session.stderr))?;
    let line = session.warnings().into_iter().find(|line| line.contains(name)).ok_or_else(|| format!("no line names {name}; the log:\n{}", session.stderr))?;
    Ok(format!("stopped: {}", line.trim()))
}

fn ensure(condition: bool, why: impl FnOnce() -> String) -> Check {
    if condition {
        Ok(String::new())
    } else {
        Err(why())
    }
}
