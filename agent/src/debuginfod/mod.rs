//! A debuginfod client: fetches separate debug files by GNU build ID from the servers in
//! `DEBUGINFOD_URLS` into an on-disk cache, on worker threads of its own, so that asking for
//! one never blocks the sampling path.
//!
//! [`Debuginfod::lookup`] answers from memory (and, once per build ID, one `stat` of the
//! cache); downloads that finish are reported by [`Debuginfod::take_ready`].

mod cache;
mod client;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use symbolizer::build_id::BuildId;

use cache::Cache;
use client::{Client, Outcome};

const DEFAULT_CACHE_DIR: &str = "/var/cache/oxeye/debuginfod";

/// Where to fetch from, where to keep what was fetched, and the limits.
#[derive(Debug, Clone)]
pub struct DebuginfodConfig {
    /// Server base URLs, from DEBUGINFOD_URLS (space-separated), trailing '/' trimmed.
    pub urls: Vec<String>,
    /// Default /var/cache/oxeye/debuginfod; OXEYE_DEBUGINFOD_CACHE overrides.
    pub cache_dir: PathBuf,
    /// For a whole request; default 30 s, DEBUGINFOD_TIMEOUT (seconds) overrides.
    pub timeout: Duration,
    /// Worker threads, default 2.
    pub max_concurrent: usize,
    /// Pending build IDs, default 1024; beyond it requests are dropped and counted.
    pub max_queue: usize,
    /// Default 512 MiB; DEBUGINFOD_MAXSIZE overrides; larger bodies are aborted and counted.
    pub max_file_bytes: u64,
    /// Default 2 GiB; the oldest (by mtime) files are evicted after each store.
    pub max_cache_bytes: u64,
    /// How long a build ID is not asked for again after a server error or connection
    /// failure, and a server that could not be reached is skipped. Default 60 s.
    pub retry_after: Duration,
}

impl DebuginfodConfig {
    /// The configuration the environment asks for; `None` when DEBUGINFOD_URLS is unset or
    /// empty.
    pub fn from_env() -> Option<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Self> {
        let urls: Vec<String> = var("DEBUGINFOD_URLS")?
            .split_whitespace()
            .map(|url| url.trim_end_matches('/').to_owned())
            .filter(|url| !url.is_empty())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let number = |name: &str| {
            let value = var(name)?;
            let parsed = value.trim().parse::<u64>();
            if parsed.is_err() {
                tracing::warn!("ignoring {name}={value:?}: not a whole number");
            }
            parsed.ok()
        };
        let mut config = DebuginfodConfig { urls, ..Self::default() };
        if let Some(dir) = var("OXEYE_DEBUGINFOD_CACHE").filter(|dir| !dir.is_empty()) {
            config.cache_dir = PathBuf::from(dir);
        }
        // elfutils reads 0 as "no limit"; a request still has to end some time.
        if let Some(seconds) = number("DEBUGINFOD_TIMEOUT").filter(|&s| s > 0) {
            config.timeout = Duration::from_secs(seconds);
        }
        if let Some(bytes) = number("DEBUGINFOD_MAXSIZE").filter(|&b| b > 0) {
            config.max_file_bytes = bytes;
        }
        Some(config)
    }
}

impl Default for DebuginfodConfig {
    fn default() -> Self {
        DebuginfodConfig {
            urls: Vec::new(),
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            timeout: Duration::from_secs(30),
            max_concurrent: 2,
            max_queue: 1024,
            max_file_bytes: 512 << 20,
            max_cache_bytes: 2 << 30,
            retry_after: Duration::from_secs(60),
        }
    }
}

/// What [`Debuginfod::lookup`] knows about a build ID right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The debug file, in the cache.
    Ready(PathBuf),
    /// Queued or being fetched: ask again later (or watch [`Debuginfod::take_ready`]).
    Pending,
    /// No server has it, or fetching it failed recently.
    Unavailable,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebuginfodStats {
    /// Debug files downloaded and stored.
    pub fetched: u64,
    /// Build IDs every server answered 404 for.
    pub not_found: u64,
    /// Fetches that failed: unreachable servers, server errors, bodies that are not the ELF
    /// file asked for.
    pub failed: u64,
    /// Build IDs not queued because the queue was full.
    pub dropped: u64,
    /// Downloads aborted for being larger than `max_file_bytes`.
    pub too_large: u64,
    /// Bytes and files in the cache directory.
    pub cache_bytes: u64,
    pub cache_files: u64,
    /// Fetches finished (any outcome) and their total wall time.
    pub fetch_count: u64,
    pub fetch_latency_total: Duration,
    /// warn! lines about unreachable servers (once per outage of a server).
    pub unreachable_warnings: u64,
}

/// The debuginfod client: worker threads that fetch, and the state `lookup` reads.
pub struct Debuginfod {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Debuginfod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Debuginfod").field("urls", &self.shared.config.urls).field("cache_dir", &self.shared.config.cache_dir).finish()
    }
}

/// What is known about one build ID.
enum Entry {
    Queued,
    InFlight,
    Ready(PathBuf),
    /// Every server said 404, or the file is over the size limit: not asked for again.
    Absent,
    /// Asked for again on a lookup at or after `retry_at`.
    Failed { retry_at: Instant },
    /// Not queued for lack of room; queued on a later lookup once there is.
    Dropped,
}

struct State {
    entries: HashMap<BuildId, Entry>,
    queue: VecDeque<BuildId>,
    ready: Vec<BuildId>,
    failures_logged: HashSet<BuildId>,
}

struct Shared {
    config: DebuginfodConfig,
    cache: Cache,
    client: Client,
    state: Mutex<State>,
    work: Condvar,
    shutdown: AtomicBool,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    fetched: AtomicU64,
    not_found: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    too_large: AtomicU64,
    fetch_count: AtomicU64,
    fetch_micros: AtomicU64,
}

impl Debuginfod {
    /// Opens the cache directory (creating it with mode 0700; refusing a symlink or a
    /// directory that is not ours) and starts the worker threads.
    pub fn start(config: DebuginfodConfig) -> anyhow::Result<Self> {
        if config.urls.is_empty() {
            anyhow::bail!("no debuginfod server URLs");
        }
        let cache = Cache::open(config.cache_dir.clone(), config.max_file_bytes, config.max_cache_bytes)?;
        let client = Client::new(&config.urls, config.timeout, config.retry_after);
        let workers = config.max_concurrent.max(1);
        let shared = Arc::new(Shared {
            config,
            cache,
            client,
            state: Mutex::new(State {
                entries: HashMap::new(),
                queue: VecDeque::new(),
                ready: Vec::new(),
                failures_logged: HashSet::new(),
            }),
            work: Condvar::new(),
            shutdown: AtomicBool::new(false),
            counters: Counters::default(),
        });
        for n in 0..workers {
            let worker = Arc::clone(&shared);
            let spawned = thread::Builder::new().name(format!("debuginfod-{n}")).spawn(move || worker.run());
            if let Err(error) = spawned {
                // Threads already started leave when `shared` is shut down.
                shared.stop();
                return Err(error).context("cannot start a debuginfod worker thread");
            }
        }
        tracing::debug!(
            "debuginfod: {} server(s), cache {}",
            shared.config.urls.len(),
            shared.cache.dir().display()
        );
        Ok(Debuginfod { shared })
    }

    /// What is known about `build_id`; queues a fetch the first time it is asked for.
    ///
    /// Never blocks: no I/O beyond an in-memory map lookup and, at most once per build ID,
    /// one stat of the cache file.
    pub fn lookup(&self, build_id: &BuildId) -> Lookup {
        let shared = &self.shared;
        {
            let mut state = shared.lock();
            if let Some(answer) = shared.known(&mut state, build_id) {
                return answer;
            }
        }
        // Not seen before: the stat happens outside the lock, workers need it meanwhile.
        let cached = shared.cache.cached(build_id);
        let mut state = shared.lock();
        if let Some(answer) = shared.known(&mut state, build_id) {
            return answer; // another thread got here first
        }
        if let Some(path) = cached {
            state.entries.insert(build_id.clone(), Entry::Ready(path.clone()));
            return Lookup::Ready(path);
        }
        shared.enqueue(&mut state, build_id, true)
    }

    /// Build IDs whose debug file became Ready since the last call.
    pub fn take_ready(&self) -> Vec<BuildId> {
        std::mem::take(&mut self.shared.lock().ready)
    }

    pub fn stats(&self) -> DebuginfodStats {
        let shared = &self.shared;
        let counters = &shared.counters;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DebuginfodStats {
            fetched: load(&counters.fetched),
            not_found: load(&counters.not_found),
            failed: load(&counters.failed),
            dropped: load(&counters.dropped),
            too_large: load(&counters.too_large),
            cache_bytes: shared.cache.bytes(),
            cache_files: shared.cache.files(),
            fetch_count: load(&counters.fetch_count),
            fetch_latency_total: Duration::from_micros(load(&counters.fetch_micros)),
            unreachable_warnings: load(&shared.client.unreachable_warnings),
        }
    }
}

impl Drop for Debuginfod {
    /// Workers finish the fetch they are in (bounded by the timeout) and exit; nobody waits.
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stop(&self) {
        self.shutdown.store(true, Ordering::Relaxed);
        // Taken so no worker is between checking `shutdown` and waiting.
        let _state = self.lock();
        self.work.notify_all();
    }

    /// The answer for a build ID already seen, re-queueing it if its retry time has come;
    /// `None` for one never seen.
    fn known(&self, state: &mut State, id: &BuildId) -> Option<Lookup> {
        let answer = match state.entries.get(id)? {
            Entry::Queued | Entry::InFlight => Lookup::Pending,
            Entry::Ready(path) => Lookup::Ready(path.clone()),
            Entry::Absent => Lookup::Unavailable,
            Entry::Failed { retry_at } if Instant::now() < *retry_at => Lookup::Unavailable,
            Entry::Failed { .. } => self.enqueue(state, id, true),
            Entry::Dropped => self.enqueue(state, id, false),
        };
        Some(answer)
    }

    /// Queues `id` if there is room; counts a drop once per build ID, not once per lookup.
    fn enqueue(&self, state: &mut State, id: &BuildId, count_drop: bool) -> Lookup {
        if state.queue.len() >= self.config.max_queue {
            if count_drop {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            state.entries.insert(id.clone(), Entry::Dropped);
            return Lookup::Unavailable;
        }
        state.entries.insert(id.clone(), Entry::Queued);
        state.queue.push_back(id.clone());
        self.work.notify_one();
        Lookup::Pending
    }

    /// A worker: takes build IDs off the queue and fetches them until shut down.
    fn run(&self) {
        while let Some(id) = self.next() {
            let started = Instant::now();
            let outcome = self.client.fetch(&id, &self.cache);
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.counters.fetch_count.fetch_add(1, Ordering::Relaxed);
            self.counters.fetch_micros.fetch_add(micros, Ordering::Relaxed);
            self.finish(id, outcome);
        }
    }

    fn next(&self) -> Option<BuildId> {
        let mut state = self.lock();
        loop {
            if self.shutdown.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(id) = state.queue.pop_front() {
                state.entries.insert(id.clone(), Entry::InFlight);
                return Some(id);
            }
            state = self.work.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn finish(&self, id: BuildId, outcome: Outcome) {
        let counters = &self.counters;
        let mut state = self.lock();
        let entry = match outcome {
            Outcome::Stored(path, evicted) => {
                counters.fetched.fetch_add(1, Ordering::Relaxed);
                for gone in evicted {
                    // Looked up afresh next time: found missing, fetched again.
                    if matches!(state.entries.get(&gone), Some(Entry::Ready(_))) {
                        state.entries.remove(&gone);
                    }
                    state.ready.retain(|ready| *ready != gone);
                }
                state.ready.push(id.clone());
                Entry::Ready(path)
            }
            Outcome::NotFound => {
                counters.not_found.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("debuginfod: no server has build ID {id}");
                Entry::Absent
            }
            Outcome::TooLarge => {
                counters.too_large.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("debuginfod: debug file of {id} is over {} bytes", self.config.max_file_bytes);
                Entry::Absent
            }
            Outcome::Failed(reason) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                // A later failure of the same build ID (after its retry) is not news.
                if state.failures_logged.insert(id.clone()) {
                    tracing::debug!("debuginfod: cannot fetch build ID {id}: {reason}");
                }
                Entry::Failed { retry_at: Instant::now() + self.config.retry_after }
            }
        };
        state.entries.insert(id, entry);
    }
}
