//! HTTP: asks each debuginfod server in turn for a build ID's debug file.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use symbolizer::build_id::BuildId;

use super::cache::{Cache, StoreError};

/// What one server, or every server, said about one build ID.
#[derive(Debug)]
pub enum Outcome {
    /// Stored in the cache at this path; these other build IDs were evicted to make room.
    Stored(std::path::PathBuf, Vec<BuildId>),
    /// Every server answered 404.
    NotFound,
    /// A server had it, but it is larger than the limit.
    TooLarge,
    /// No server had it and at least one could not say: try again later.
    Failed(String),
}

/// One server and whether it is known to be down.
struct Server {
    url: String,
    /// Until when requests skip it, after a connection failure.
    down_until: Mutex<Option<Instant>>,
}

/// The servers, in the order DEBUGINFOD_URLS gives them.
pub struct Client {
    agent: ureq::Agent,
    servers: Vec<Server>,
    retry_after: Duration,
    /// warn! lines written about unreachable servers (one per outage).
    pub unreachable_warnings: AtomicU64,
}

impl Client {
    pub fn new(urls: &[String], timeout: Duration, retry_after: Duration) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout(timeout)
            .user_agent(concat!("oxeye/", env!("CARGO_PKG_VERSION")))
            .build();
        let servers = urls.iter().map(|url| Server { url: url.clone(), down_until: Mutex::new(None) }).collect();
        Client { agent, servers, retry_after, unreachable_warnings: AtomicU64::new(0) }
    }

    /// Asks the servers in order until one has the file; the first that serves it wins.
    pub fn fetch(&self, id: &BuildId, cache: &Cache) -> Outcome {
        let mut too_large = false;
        let mut failures = Vec::new();
        for server in &self.servers {
            match self.ask(server, id, cache) {
                Outcome::Stored(path, evicted) => return Outcome::Stored(path, evicted),
                Outcome::NotFound => {}
                Outcome::TooLarge => too_large = true,
                Outcome::Failed(reason) => failures.push(format!("{}: {reason}", server.url)),
            }
        }
        if too_large {
            Outcome::TooLarge
        } else if failures.is_empty() {
            Outcome::NotFound
        } else {
            Outcome::Failed(failures.join("; "))
        }
    }

    fn ask(&self, server: &Server, id: &BuildId, cache: &Cache) -> Outcome {
        if server.is_down() {
            return Outcome::Failed("unreachable a moment ago; not asked".into());
        }
        let url = format!("{}/buildid/{id}/debuginfo", server.url);
        let response = match self.agent.get(&url).call() {
            Ok(response) => response,
            Err(ureq::Error::Status(404, _)) => {
                self.mark_up(server);
                return Outcome::NotFound;
            }
            Err(ureq::Error::Status(code, _)) => {
                self.mark_up(server);
                return Outcome::Failed(format!("HTTP {code}"));
            }
            Err(ureq::Error::Transport(error)) => {
                self.mark_down(server, &error.to_string());
                return Outcome::Failed(error.to_string());
            }
        };
        self.mark_up(server);
        if response.status() != 200 {
            return Outcome::Failed(format!("HTTP {}", response.status()));
        }
        let declared_len = response.header("Content-Length").and_then(|len| len.trim().parse().ok());
        let mut body = response.into_reader();
        match cache.store(id, &mut body, declared_len) {
            Ok((path, evicted)) => Outcome::Stored(path, evicted),
            Err(StoreError::TooLarge { .. }) => Outcome::TooLarge,
            Err(error) => Outcome::Failed(error.to_string()),
        }
    }

    /// Skips `server` for `retry_after`; warns once per outage, not once per request.
    fn mark_down(&self, server: &Server, error: &str) {
        let mut down_until = server.down_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if down_until.is_none() {
            self.unreachable_warnings.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("debuginfod server {} unreachable: {error}", server.url);
        }
        *down_until = Some(Instant::now() + self.retry_after);
    }

    fn mark_up(&self, server: &Server) {
        let mut down_until = server.down_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if down_until.take().is_some() {
            tracing::info!("debuginfod server {} reachable again", server.url);
        }
    }
}

impl Server {
    fn is_down(&self) -> bool {
        let down_until = self.down_until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        down_until.is_some_and(|until| Instant::now() < until)
    }
}
