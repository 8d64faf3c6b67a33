//! Deadlines for the end-to-end tests, so that no test can hang.
//!
//! Each test starts with `let _deadline = deadline(LIMIT);`. Every process a test starts goes
//! through [`spawn`] or [`output`], which register it under that test; waits say what they wait
//! for. A watchdog thread checks the armed tests: past its limit, a test's processes are killed
//! (their whole process groups) and the test fails with one line naming the test, the limit and
//! what it was waiting for. If the test is still stuck [`STUCK_GRACE`] later (blocked on
//! something other than its processes), the line is printed again and the test binary exits.
//!
//! Starting a process without an armed deadline panics: a test cannot forget its deadline.

use std::{
    collections::HashMap,
    io::Read,
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Mutex, MutexGuard, OnceLock},
    thread::{self, ThreadId},
    time::{Duration, Instant},
};

/// How long a test may stay stuck after its processes were killed before the binary exits.
const STUCK_GRACE: Duration = Duration::from_secs(15);
/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(100);
/// How long a stopped process gets between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// One armed test.
struct Armed {
    name: String,
    started: Instant,
    limit: Duration,
    /// What the test waits for now, for the message.
    waiting_for: Vec<String>,
    /// When the limit passed and the line was printed.
    expired: Option<(Instant, String)>,
}

/// A process a test started and has not reaped yet.
struct Registered {
    owner: ThreadId,
    what: String,
}

#[derive(Default)]
struct State {
    tests: HashMap<ThreadId, Armed>,
    processes: HashMap<u32, Registered>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    static WATCHDOG: OnceLock<()> = OnceLock::new();
    WATCHDOG.get_or_init(|| {
        thread::Builder::new().name("e2e-watchdog".into()).spawn(watch).expect("start the e2e watchdog");
    });
    // A test that panicked while holding the lock leaves plain data behind.
    STATE.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The calling test's deadline; dropping it (when the test ends, passed or failed) disarms it
/// and stops whatever the test left running.
#[must_use = "the deadline lasts as long as this guard"]
pub struct Deadline {
    owner: ThreadId,
}

/// Arms a deadline of `limit` for the calling test (named after its thread, as libtest names
/// test threads).
pub fn deadline(limit: Duration) -> Deadline {
    let current = thread::current();
    let name = current.name().unwrap_or("an unnamed test").to_owned();
    let owner = current.id();
    let armed = Armed { name, started: Instant::now(), limit, waiting_for: Vec::new(), expired: None };
    state().tests.insert(owner, armed);
    Deadline { owner }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        let leftovers: Vec<u32> = {
            let mut state = state();
            state.tests.remove(&self.owner);
            state.processes.iter().filter(|(_, p)| p.owner == self.owner).map(|(&pid, _)| pid).collect()
        };
        // Processes still registered here belong to guards that outlive the test (leaked or
        // forgotten): they must not outlive it.
        for pid in leftovers {
            kill_group(pid, libc::SIGKILL);
        }
    }
}

/// Names what the calling test waits for until the returned guard is dropped.
pub fn waiting_for(what: impl Into<String>) -> Waiting {
    let owner = thread::current().id();
    if let Some(test) = state().tests.get_mut(&owner) {
        test.waiting_for.push(what.into());
    }
    Waiting { owner }
}

/// See [`waiting_for`].
#[must_use = "the wait is named as long as this guard lives"]
pub struct Waiting {
    owner: ThreadId,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(test) = state().tests.get_mut(&self.owner) {
            test.waiting_for.pop();
        }
    }
}

/// Panics with the deadline's line if the calling test's deadline has passed.
pub fn check() {
    let owner = thread::current().id();
    let line = state().tests.get(&owner).and_then(|t| t.expired.as_ref().map(|(_, line)| line.clone()));
    if let Some(line) = line {
        panic!("{line}");
    }
}

fn owner_with_deadline(what: &str) -> ThreadId {
    let owner = thread::current().id();
    assert!(state().tests.contains_key(&owner), "{what} started by a test without a deadline: begin the test with `let _deadline = oxeye_tests::deadline(...)`");
    owner
}

/// How a process ended, with the CPU time it (and the children it waited for) used.
#[derive(Debug, Clone, Copy)]
pub struct Exited {
    /// Its exit status.
    pub status: ExitStatus,
    /// User plus system CPU time.
    pub cpu: Duration,
}

impl Exited {
    /// CPU seconds, for sample-count expectations (samples follow CPU time, not wall time).
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu.as_secs_f64()
    }
}

/// A process a test started, in its own process group, registered with the test's deadline.
/// Dropping it stops it (SIGTERM to the group, SIGKILL after 5 s) if it still runs.
pub struct Spawned {
    child: Child,
    what: String,
    exited: Option<Exited>,
}

/// Starts `command` as a process of the calling test; `what` names it in messages.
pub fn spawn(command: &mut Command, what: &str) -> Spawned {
    let owner = owner_with_deadline(what);
    // Its own process group: stopping it stops what it started (nginx's workers, shells' children).
    let child = command.process_group(0).spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    state().processes.insert(child.id(), Registered { owner, what: what.to_owned() });
    Spawned { child, what: what.to_owned(), exited: None }
}

impl Spawned {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What it is, as given to [`spawn`].
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Mutable access to the child, for its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for it to exit (within the test's deadline).
    pub fn wait(&mut self) -> Exited {
        if let Some(exited) = self.exited {
            return exited;
        }
        let _waiting = waiting_for(format!("waiting for {} (pid {}) to exit", self.what, self.id()));
        let exited = loop {
            match wait4(self.id(), 0) {
                Ok(Some(exited)) => break exited,
                Ok(None) => continue,
                Err(error) => assert_eq!(error.raw_os_error(), Some(libc::EINTR), "cannot wait for {}: {error}", self.what),
            }
        };
        self.reaped(exited);
        check();
        exited
    }

    /// Whether it has exited, without blocking (reaping it if so).
    pub fn try_wait(&mut self) -> Option<Exited> {
        if self.exited.is_none() {
            if let Ok(Some(exited)) = wait4(self.id(), libc::WNOHANG) {
                self.reaped(exited);
            }
        }
        self.exited
    }

    /// Waits for it to exit on its own, at most `limit`; panics naming it past that.
    pub fn wait_at_most(&mut self, limit: Duration) -> Exited {
        let _waiting = waiting_for(format!("waiting for {} (pid {}) to exit", self.what, self.id()));
        let until = Instant::now() + limit;
        loop {
            if let Some(exited) = self.try_wait() {
                return exited;
            }
            check();
            if Instant::now() > until {
                kill_group(self.id(), libc::SIGKILL);
                let _ = self.wait();
                panic!("{} (pid {}) did not exit within {limit:?}; killed it", self.what, self.id());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to it (the process only, not its group).
    pub fn signal(&self, signal: i32) {
        if self.exited.is_none() {
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(self.id() as i32, signal) };
        }
    }

    /// Stops it: SIGTERM to its group, SIGKILL after a grace period; returns how it ended.
    pub fn stop(&mut self) -> Exited {
        if let Some(exited) = self.exited {
            return exited;
        }
        kill_group(self.id(), libc::SIGTERM);
        let until = Instant::now() + TERM_GRACE;
        while Instant::now() < until {
            if let Some(exited) = self.try_wait() {
                return exited;
            }
            thread::sleep(Duration::from_millis(10));
        }
        kill_group(self.id(), libc::SIGKILL);
        self.wait()
    }

    fn reaped(&mut self, exited: Exited) {
        self.exited = Some(exited);
        state().processes.remove(&self.id());
        // What it started may still run in its group; it ends with it.
        kill_group(self.id(), libc::SIGKILL);
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.exited.is_none() {
            self.stop();
        }
    }
}

/// Runs `command` to completion within the test's deadline and returns its output.
pub fn output(command: &mut Command, what: &str) -> Output {
    let mut process = spawn(command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()), what);
    let readers = [process.child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>), process.child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)]
        .map(|pipe| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        });
    let exited = process.wait();
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
    Output { status: exited.status, stdout, stderr }
}

/// Runs `command` and panics unless it succeeds; returns its standard output.
pub fn run_ok(command: &mut Command, what: &str) -> String {
    let out = output(command, what);
    assert!(out.status.success(), "{what} failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reaps child `pid` (with `flags`, e.g. `WNOHANG`): `Ok(None)` if it has not exited.
fn wait4(pid: u32, flags: i32) -> std::io::Result<Option<Exited>> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: our own child, reaped only through this function.
    match unsafe { libc::wait4(pid as i32, &mut status, flags, &mut usage) } {
        reaped if reaped == pid as i32 => {
            let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
            Ok(Some(Exited { status: ExitStatus::from_raw(status), cpu: time(usage.ru_utime) + time(usage.ru_stime) }))
        }
        0 => Ok(None),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn kill_group(pid: u32, signal: i32) {
    // SAFETY: plain kill(2); the group was made for this process at spawn, and a group that is
    // gone is harmless (ESRCH).
    unsafe { libc::kill(-(pid as i32), signal) };
}

/// The watchdog: fails tests past their limit.
fn watch() {
    loop {
        thread::sleep(TICK);
        let mut state = state();
        let now = Instant::now();
        let mut kill = Vec::new();
        let mut exit_line = None;
        let processes: Vec<(u32, ThreadId, String)> = state.processes.iter().map(|(&pid, p)| (pid, p.owner, p.what.clone())).collect();
        for (&owner, test) in &mut state.tests {
            match &test.expired {
                None if now.duration_since(test.started) > test.limit => {
                    let mine: Vec<&(u32, ThreadId, String)> = processes.iter().filter(|p| p.1 == owner).collect();
                    let killed = if mine.is_empty() { "nothing to kill".to_owned() } else { format!("killed {}", mine.iter().map(|p| format!("{} (pid {})", p.2, p.0)).collect::<Vec<_>>().join(", ")) };
                    let waiting = test.waiting_for.last().map_or("running its own code", String::as_str);
                    let line = format!("DEADLINE: {} passed its {:?} limit while {waiting}; {killed}", test.name, test.limit);
                    eprintln!("{line}");
                    kill.extend(mine.iter().map(|p| p.0));
                    test.expired = Some((now, line));
                }
                Some((at, line)) if now.duration_since(*at) > STUCK_GRACE => exit_line = Some(line.clone()),
                _ => {}
            }
        }
        drop(state);
        for pid in kill {
            kill_group(pid, libc::SIGKILL);
        }
        if let Some(line) = exit_line {
            eprintln!("{line} (still stuck {STUCK_GRACE:?} later: stopping the test binary)");
            std::process::exit(101);
        }
    }
}
