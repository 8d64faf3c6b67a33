//! Against a real elfutils debuginfod (Debian's `debuginfod` package) serving debug files
//! built here with gcc and objcopy.

use std::{
    fs,
    net::TcpListener,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant},
};

use symbolizer::{build_id::BuildId, elf::ElfSymbols};

use super::{cache::Cache, *};

const DEBUGINFOD: &str = "/usr/bin/debuginfod";
/// Generous for a CPU three times slower than a developer's.
const DEADLINE: Duration = Duration::from_secs(20);

/// A directory of its own for each test, removed afterwards.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("oxeye-debuginfod-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the test directory");
        TestDir(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Compiles a tiny program (`variant` makes its build ID differ) and puts its separate debug
/// file, which is what `debuginfod -F` indexes as debuginfo, in `serve_dir`.
fn build_debug_file(work: &Path, serve_dir: &Path, variant: u32) -> (PathBuf, BuildId) {
    let source = work.join(format!("prog{variant}.c"));
    let program = work.join(format!("prog{variant}"));
    let debug = serve_dir.join(format!("prog{variant}.debug"));
    let text = format!("int variant = {variant};\nint main(void) {{ return variant; }}\n");
    fs::write(&source, text).expect("write C source");
    run(Command::new("gcc").args(["-g", "-O0", "-Wl,--build-id", "-o"]).arg(&program).arg(&source));
    run(Command::new("objcopy").arg("--only-keep-debug").arg(&program).arg(&debug));
    let id = ElfSymbols::open(&debug).expect("parse the debug file").build_id().cloned().expect("a build ID");
    (debug, id)
}

fn run(command: &mut Command) {
    let status = command.status().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// A TCP port nothing listens on (for the moment).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A running debuginfod; killed on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts debuginfod on `serve_dir` and waits until it serves `probe`.
    fn start(work: &Path, serve_dir: &Path, probe: &BuildId) -> Server {
        let port = free_port();
        let log = fs::File::create(work.join("debuginfod.log")).expect("create the server log");
        let child = Command::new(DEBUGINFOD)
            .arg("-F")
            .arg(serve_dir)
            .args(["-p", &port.to_string(), "-t0", "-g0", "-c1", "-d"])
            .arg(work.join("debuginfod.sqlite"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {DEBUGINFOD} (apt-get install debuginfod): {error}"));
        let mut server = Server { child, url: format!("http://127.0.0.1:{port}") };
        server.wait_serving(probe);
        server
    }

    /// Polls until the initial scan has indexed `probe`; fails in one line otherwise.
    fn wait_serving(&mut self, probe: &BuildId) {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        let url = format!("{}/buildid/{probe}/debuginfo", self.url);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("debuginfod exited ({status}) before serving {url}");
            }
            if agent.get(&url).call().is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "debuginfod did not serve {url} within {DEADLINE:?}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

fn config(urls: Vec<String>, cache_dir: PathBuf) -> DebuginfodConfig {
    DebuginfodConfig { urls, cache_dir, timeout: Duration::from_secs(10), ..DebuginfodConfig::default() }
}

/// Looks `id` up until it is no longer Pending.
fn settle(debuginfod: &Debuginfod, id: &BuildId) -> Lookup {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match debuginfod.lookup(id) {
            Lookup::Pending => {}
            settled => return settled,
        }
        assert!(Instant::now() < deadline, "build ID {id} still pending after {DEADLINE:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn ready_path(lookup: Lookup) -> PathBuf {
    match lookup {
        Lookup::Ready(path) => path,
        other => panic!("expected Ready, got {other:?}"),
    }
}

/// A build ID no server here has (each serves only the test's own files).
fn random_build_id() -> BuildId {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos());
    let bytes: Vec<u8> = (0..20u32).map(|i| (nanos >> ((i % 12) * 8)) as u8 ^ (i as u8).wrapping_mul(37)).collect();
    BuildId::new(&bytes).expect("non-empty")
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).expect("list").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn fetches_verifies_caches_and_remembers_404() {
    let work = TestDir::new("fetch");
    let serve = work.0.join("serve");
    fs::create_dir(&serve).expect("mkdir");
    let (debug, id) = build_debug_file(&work.0, &serve, 1);
    let server = Server::start(&work.0, &serve, &id);
    let cache_dir = work.0.join("cache");
    // A crashed run's temporary file is cleaned up at start.
    fs::DirBuilder::new().mode(0o700).create(&cache_dir).expect("mkdir cache");
    fs::write(cache_dir.join(format!("{id}.debug.tmp1-0")), b"stale").expect("plant a stale temp file");
    let debuginfod = Debuginfod::start(config(vec![server.url.clone()], cache_dir.clone())).expect("start");
    assert!(dir_names(&cache_dir).is_empty(), "stale temp file left: {:?}", dir_names(&cache_dir));

    assert_eq!(debuginfod.lookup(&id), Lookup::Pending);
    let path = ready_path(settle(&debuginfod, &id));
    assert_eq!(path, cache_dir.join(format!("{id}.debug")));
    assert_eq!(ElfSymbols::open(&path).expect("parse").build_id(), Some(&id));
    assert_eq!(fs::read(&path).expect("read"), fs::read(&debug).expect("read"));
    assert_eq!(fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
    assert_eq!(fs::metadata(&cache_dir).expect("stat").mode() & 0o777, 0o700);
    assert_eq!(debuginfod.take_ready(), vec![id.clone()]);
    assert!(debuginfod.take_ready().is_empty());

    let unknown = random_build_id();
    assert_eq!(debuginfod.lookup(&unknown), Lookup::Pending);
    assert_eq!(settle(&debuginfod, &unknown), Lookup::Unavailable);
    assert_eq!(debuginfod.lookup(&unknown), Lookup::Unavailable, "a 404 is remembered");

    let stats = debuginfod.stats();
    assert_eq!((stats.fetched, stats.not_found, stats.failed, stats.dropped, stats.too_large), (1, 1, 0, 0, 0));
    assert_eq!((stats.cache_files, stats.cache_bytes), (1, fs::metadata(&path).expect("stat").len()));
    assert_eq!(stats.fetch_count, 2);
    assert!(stats.fetch_latency_total > Duration::ZERO);
    assert!(dir_names(&cache_dir).iter().all(|name| !name.contains(".tmp")));

    // A second client on the same cache finds the file without asking any server.
    drop(server);
    let again = Debuginfod::start(config(vec!["http://127.0.0.1:9".into()], cache_dir.clone())).expect("start");
    assert_eq!(again.lookup(&id), Lookup::Ready(path));
    assert_eq!(again.stats().fetch_count, 0);
}

#[test]
fn a_server_that_is_down_is_counted_and_not_hammered() {
    let work = TestDir::new("down");
    let url = format!("http://127.0.0.1:{}", free_port());
    let retry_after = Duration::from_secs(2);
    let config = DebuginfodConfig { retry_after, ..config(vec![url], work.0.join("cache")) };
    let debuginfod = Debuginfod::start(config).expect("start");
    let first = random_build_id();
    let started = Instant::now();
    assert_eq!(debuginfod.lookup(&first), Lookup::Pending);
    assert_eq!(settle(&debuginfod, &first), Lookup::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(10), "took longer than the timeout");
    let stats = debuginfod.stats();
    assert_eq!((stats.failed, stats.fetch_count, stats.unreachable_warnings), (1, 1, 1));

    // Not asked again before retry_after; another build ID skips the server known down.
    assert_eq!(debuginfod.lookup(&first), Lookup::Unavailable);
    let mut second = first.as_bytes().to_vec();
    second[0] ^= 0xff;
    let second = BuildId::new(&second).expect("non-empty");
    assert_eq!(settle(&debuginfod, &second), Lookup::Unavailable);
    let stats = debuginfod.stats();
    assert_eq!((stats.failed, stats.fetch_count, stats.unreachable_warnings), (2, 2, 1));

    // After retry_after it is tried again, and the outage is not warned about twice.
    thread::sleep(retry_after + Duration::from_millis(200));
    assert_eq!(debuginfod.lookup(&first), Lookup::Pending);
    assert_eq!(settle(&debuginfod, &first), Lookup::Unavailable);
    let stats = debuginfod.stats();
    assert_eq!((stats.failed, stats.fetch_count, stats.unreachable_warnings), (3, 3, 1));
    assert_eq!((stats.fetched, stats.not_found), (0, 0));
}

#[test]
fn a_file_over_max_file_bytes_is_refused_and_not_kept() {
    let work = TestDir::new("large");
    let serve = work.0.join("serve");
    fs::create_dir(&serve).expect("mkdir");
    let (_, id) = build_debug_file(&work.0, &serve, 2);
    let server = Server::start(&work.0, &serve, &id);
    let cache_dir = work.0.join("cache");
    let config = DebuginfodConfig { max_file_bytes: 100, ..config(vec![server.url.clone()], cache_dir.clone()) };
    let debuginfod = Debuginfod::start(config).expect("start");
    assert_eq!(debuginfod.lookup(&id), Lookup::Pending);
    assert_eq!(settle(&debuginfod, &id), Lookup::Unavailable);
    let stats = debuginfod.stats();
    assert_eq!((stats.too_large, stats.fetched, stats.failed, stats.cache_files), (1, 0, 0, 0));
    assert!(dir_names(&cache_dir).is_empty(), "left in the cache: {:?}", dir_names(&cache_dir));
}

#[test]
fn the_oldest_file_is_evicted_past_max_cache_bytes() {
    let work = TestDir::new("evict");
    let serve = work.0.join("serve");
    fs::create_dir(&serve).expect("mkdir");
    let (debug_a, a) = build_debug_file(&work.0, &serve, 3);
    let (debug_b, b) = build_debug_file(&work.0, &serve, 4);
    let server = Server::start(&work.0, &serve, &a);
    server_wait(&server, &b);
    let size = |path: &Path| fs::metadata(path).expect("stat").len();
    // Room for either file, not for both.
    let budget = size(&debug_a).max(size(&debug_b)) + size(&debug_a).min(size(&debug_b)) / 2;
    let cache_dir = work.0.join("cache");
    let config = DebuginfodConfig { max_cache_bytes: budget, ..config(vec![server.url.clone()], cache_dir.clone()) };
    let debuginfod = Debuginfod::start(config).expect("start");

    let path_a = ready_path(settle(&debuginfod, &a));
    let path_b = ready_path(settle(&debuginfod, &b));
    assert!(!path_a.exists(), "the older file should have been evicted");
    assert!(path_b.exists(), "the file just stored is never evicted");
    let stats = debuginfod.stats();
    assert_eq!((stats.cache_files, stats.cache_bytes, stats.fetched), (1, size(&path_b), 2));
    assert_eq!(debuginfod.take_ready(), vec![b.clone()], "an evicted file is no longer reported ready");

    // The evicted one is fetched again when asked for, and now the other one goes.
    assert_eq!(debuginfod.lookup(&a), Lookup::Pending);
    assert_eq!(ready_path(settle(&debuginfod, &a)), path_a);
    assert!(path_a.exists() && !path_b.exists());
    assert_eq!(debuginfod.stats().fetched, 3);
}

fn server_wait(server: &Server, id: &BuildId) {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    let url = format!("{}/buildid/{id}/debuginfo", server.url);
    let deadline = Instant::now() + DEADLINE;
    while agent.get(&url).call().is_err() {
        assert!(Instant::now() < deadline, "debuginfod did not serve {url} within {DEADLINE:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_planted_symlink_is_neither_served_nor_followed() {
    let work = TestDir::new("symlink");
    let serve = work.0.join("serve");
    fs::create_dir(&serve).expect("mkdir");
    let (_, id) = build_debug_file(&work.0, &serve, 5);
    let server = Server::start(&work.0, &serve, &id);
    let cache_dir = work.0.join("cache");
    fs::DirBuilder::new().mode(0o700).create(&cache_dir).expect("mkdir cache");
    let victim = work.0.join("victim");
    fs::write(&victim, b"not to be touched").expect("write");
    let planted = cache_dir.join(format!("{id}.debug"));
    std::os::unix::fs::symlink(&victim, &planted).expect("plant a symlink");

    let debuginfod = Debuginfod::start(config(vec![server.url.clone()], cache_dir.clone())).expect("start");
    assert_eq!(debuginfod.lookup(&id), Lookup::Pending, "a symlink is not a cache hit");
    let path = ready_path(settle(&debuginfod, &id));
    assert_eq!(path, planted);
    assert!(fs::symlink_metadata(&path).expect("lstat").file_type().is_file(), "the symlink was replaced");
    assert_eq!(fs::read(&victim).expect("read"), b"not to be touched");
    assert_eq!(ElfSymbols::open(&path).expect("parse").build_id(), Some(&id));
}

#[test]
fn the_cache_dir_must_be_a_private_directory_of_ours() {
    let work = TestDir::new("dir");
    let real = work.0.join("real");
    fs::create_dir(&real).expect("mkdir");
    fs::set_permissions(&real, fs::Permissions::from_mode(0o755)).expect("chmod");
    let link = work.0.join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let urls = vec!["http://127.0.0.1:9".to_owned()];
    assert!(Debuginfod::start(config(urls.clone(), link)).is_err(), "a symlinked cache dir is refused");
    Debuginfod::start(config(urls.clone(), real.clone())).expect("an existing dir of ours is used");
    assert_eq!(fs::metadata(&real).expect("stat").mode() & 0o777, 0o700, "and made private");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&real, Some(65534), None).expect("chown");
        assert!(Debuginfod::start(config(urls, real)).is_err(), "a dir owned by someone else is refused");
    }
}

#[test]
fn bodies_that_are_not_the_file_asked_for_are_deleted() {
    let work = TestDir::new("store");
    let serve = work.0.join("serve");
    fs::create_dir(&serve).expect("mkdir");
    let (debug, id) = build_debug_file(&work.0, &serve, 6);
    let cache_dir = work.0.join("cache");
    let cache = Cache::open(cache_dir.clone(), 1 << 20, 1 << 30).expect("open");
    let other = cache::parse_hex("00112233445566778899aabbccddeeff00112233").expect("hex");
    let elf = fs::read(&debug).expect("read");

    let error = cache.store(&id, &mut &b"<html>not found</html>"[..], None).expect_err("not ELF");
    assert!(matches!(error, cache::StoreError::NotElf(_)), "{error}");
    let error = cache.store(&other, &mut &elf[..], None).expect_err("wrong build ID");
    assert!(matches!(error, cache::StoreError::Mismatch { .. }), "{error}");
    // Without a Content-Length the limit is enforced while streaming.
    let small = Cache::open(cache_dir.clone(), elf.len() as u64 - 1, 1 << 30).expect("open");
    let error = small.store(&id, &mut &elf[..], None).expect_err("too large");
    assert!(matches!(error, cache::StoreError::TooLarge { .. }), "{error}");
    assert!(dir_names(&cache_dir).is_empty(), "left in the cache: {:?}", dir_names(&cache_dir));

    let (path, evicted) = cache.store(&id, &mut &elf[..], Some(elf.len() as u64)).expect("stored");
    assert!(evicted.is_empty());
    assert_eq!(cache.cached(&id), Some(path));
}

#[test]
fn config_from_the_environment() {
    let vars = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
    };
    assert!(DebuginfodConfig::from_vars(vars(&[])).is_none());
    assert!(DebuginfodConfig::from_vars(vars(&[("DEBUGINFOD_URLS", "  ")])).is_none());
    let config = DebuginfodConfig::from_vars(vars(&[("DEBUGINFOD_URLS", "https://a.example/ http://b:8002//")]))
        .expect("configured");
    assert_eq!(config.urls, ["https://a.example", "http://b:8002"]);
    assert_eq!(config.cache_dir, PathBuf::from(DEFAULT_CACHE_DIR));
    assert_eq!((config.timeout, config.max_file_bytes), (Duration::from_secs(30), 512 << 20));
    let config = DebuginfodConfig::from_vars(vars(&[
        ("DEBUGINFOD_URLS", "http://a"),
        ("OXEYE_DEBUGINFOD_CACHE", "/tmp/x"),
        ("DEBUGINFOD_TIMEOUT", "5"),
        ("DEBUGINFOD_MAXSIZE", "1000"),
    ]))
    .expect("configured");
    assert_eq!(config.cache_dir, PathBuf::from("/tmp/x"));
    assert_eq!((config.timeout, config.max_file_bytes), (Duration::from_secs(5), 1000));
}

#[test]
fn a_full_queue_drops_and_counts() {
    let work = TestDir::new("queue");
    // Nobody answers at this address quickly enough to empty the queue meanwhile: a
    // listener that never accepts keeps the one worker busy until its timeout.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let config = DebuginfodConfig {
        max_concurrent: 1,
        max_queue: 2,
        timeout: Duration::from_secs(3),
        ..config(vec![url], work.0.join("cache"))
    };
    let debuginfod = Debuginfod::start(config).expect("start");
    let ids: Vec<BuildId> = (1..=5u8).map(|n| BuildId::new(&[n; 20]).expect("non-empty")).collect();
    let answers: Vec<Lookup> = ids.iter().map(|id| debuginfod.lookup(id)).collect();
    // The worker may or may not have taken the first one off the queue yet.
    let pending = answers.iter().filter(|a| **a == Lookup::Pending).count();
    assert!((2..=3).contains(&pending), "{answers:?}");
    let dropped = debuginfod.stats().dropped;
    assert_eq!(dropped, 5 - pending as u64);
    // Asking again for a dropped one does not count it twice.
    let last = ids.last().expect("ids");
    let _ = debuginfod.lookup(last);
    assert_eq!(debuginfod.stats().dropped, dropped);
}
