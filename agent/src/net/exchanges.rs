//! Matching HTTP responses to their requests, per connection and in order (HTTP/1.x answers
//! requests in the order they came, through keep-alive and pipelining).
//!
//! A connection is a process and a kernel socket: the same socket shared by two processes
//! (after `fork`) is two connections, as each process reads and writes its own messages.

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;

use agent_common::net::{direction, SocketAddrs};

use super::{
    http::{self, Method},
    traceparent::{self, TraceContext},
};

/// Most requests waiting for their responses on one connection; a client that pipelines
/// more loses the oldest (counted).
const MAX_PENDING_PER_CONNECTION: usize = 256;
/// Most bytes of an unfinished request head kept until the next receive completes it.
const MAX_CARRY: usize = 16 * 1024;

/// Which side of the exchange the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// It received the request and sent the response.
    Server,
    /// It sent the request and received the response.
    Client,
}

/// A request seen, waiting for its response.
#[derive(Debug, Clone)]
struct PendingRequest {
    side: Side,
    method: Method,
    path: String,
    host: Option<String>,
    trace: Option<TraceContext>,
    started_ns: u64,
}

/// One request and its response.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The process.
    pub pid: u32,
    /// Its side.
    pub side: Side,
    /// Request method.
    pub method: Method,
    /// Request path, without the query string.
    pub path: String,
    /// The request's `Host` header.
    pub host: Option<String>,
    /// The request's `traceparent` header.
    pub trace: Option<TraceContext>,
    /// Response status code.
    pub status: u16,
    /// Server: the request's first byte was read. Client: the request's write started
    /// (`CLOCK_MONOTONIC`, ns).
    pub started_ns: u64,
    /// Server: the response's write started. Client: its first byte was read.
    pub ended_ns: u64,
    /// The connection's addresses, seen from the process.
    pub addrs: SocketAddrs,
    /// The connection's `struct sock`.
    pub sock: u64,
    /// Server: CPU samples taken on the thread while it served the request (0 if unknown).
    pub cpu_samples: u32,
    /// Server: the off-CPU sampler recorded the thread switched out in the request.
    pub off_cpu_events: bool,
}

/// What matching has seen, for the summary and the tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct MatchStats {
    /// Requests parsed.
    pub requests: u64,
    /// Responses parsed (informational 1xx excluded).
    pub responses: u64,
    /// Responses with no request waiting (the request was missed, or oxeye started between).
    pub unmatched_responses: u64,
    /// Requests that never got a response (connection closed, or too many pipelined).
    pub unanswered_requests: u64,
}

#[derive(Debug, Default)]
struct ConnectionState {
    pending: VecDeque<PendingRequest>,
    last_seen_ns: u64,
    /// The start of a request head the last receive ended in.
    carry: Vec<u8>,
    /// Bytes of a request body still to come in later receives.
    skip: u64,
}

impl ConnectionState {
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.carry.is_empty() && self.skip == 0
    }
}

/// One payload as the kernel copied it.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    /// Process.
    pub pid: u32,
    /// Socket.
    pub sock: u64,
    /// A [`direction`].
    pub flow: u32,
    /// When (see `PayloadHeader::timestamp_ns`).
    pub timestamp_ns: u64,
    /// The connection's addresses.
    pub addrs: SocketAddrs,
    /// The first bytes.
    pub data: &'a [u8],
    /// The bytes continue the previous receive.
    pub continuation: bool,
    /// The syscall moved more than was copied.
    pub truncated: bool,
    /// Bytes the syscall moved.
    pub size: u64,
    /// A server's response: the CPU samples of the request it answers.
    pub cpu_samples: u32,
    /// A server's response: the request it answers had off-CPU events.
    pub off_cpu_events: bool,
}

/// Per-connection matching state, bounded in connections and in requests per connection.
#[derive(Debug)]
pub struct Exchanges {
    connections: HashMap<(u32, u64), ConnectionState, RandomState>,
    max_connections: usize,
    /// Counters.
    pub stats: MatchStats,
}

impl Exchanges {
    /// Tracks at most `max_connections` connections with requests in flight.
    pub fn new(max_connections: usize) -> Self {
        Exchanges { connections: HashMap::default(), max_connections: max_connections.max(1), stats: MatchStats::default() }
    }

    /// Connections with state.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// Whether no connection has state.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Takes in one payload; completed exchanges are appended to `done`.
    pub fn payload(&mut self, payload: Payload<'_>, done: &mut Vec<Exchange>) {
        let Payload { pid, sock, flow, timestamp_ns, addrs, data, size, .. } = payload;
        if flow == direction::INGRESS && self.receive(payload) {
            return;
        }
        if flow == direction::EGRESS {
            let requests = http::parse_requests(data);
            if !requests.heads.is_empty() {
                self.add_requests(pid, sock, Side::Client, timestamp_ns, requests.heads);
                return;
            }
        }
        let (responses, extent) = http::parse_responses_extent(data);
        if responses.is_empty() {
            return;
        }
        // Responses the kernel moved but did not copy (a client reading a pipelined burst of
        // them in big pieces): matching the next ones in order would pair them wrongly.
        let unseen = match extent {
            http::Extent::Ends(end) => (end as u64) < size,
            http::Extent::Beyond(end) => end < size,
            // Cut inside a head, or a body of unknown length: anything may have followed.
            http::Extent::Unknown => payload.truncated,
        };
        // A response the process sends answers a request it received, and the other way round.
        let side = if flow == direction::EGRESS { Side::Server } else { Side::Client };
        let Some(state) = self.connections.get_mut(&(pid, sock)) else {
            self.stats.unmatched_responses += responses.iter().filter(|r| r.status >= 200).count() as u64;
            return;
        };
        state.last_seen_ns = timestamp_ns;
        let first_done = done.len();
        for response in responses {
            // Informational responses come before the real one, for the same request.
            if (100..200).contains(&response.status) && response.status != 101 {
                continue;
            }
            self.stats.responses += 1;
            let Some(position) = state.pending.iter().position(|p| p.side == side) else {
                self.stats.unmatched_responses += 1;
                continue;
            };
            let Some(request) = state.pending.remove(position) else { continue };
            done.push(Exchange {
                pid,
                side,
                method: request.method,
                path: request.path,
                host: request.host,
                trace: request.trace,
                status: response.status,
                started_ns: request.started_ns,
                ended_ns: timestamp_ns.max(request.started_ns),
                addrs,
                sock,
                cpu_samples: 0,
                off_cpu_events: false,
            });
        }
        // The kernel counted the samples of the one request the sending thread served: they
        // are that exchange's only if the send answered one request.
        if let [only] = &mut done[first_done..] {
            (only.cpu_samples, only.off_cpu_events) = (payload.cpu_samples, payload.off_cpu_events);
        }
        if unseen {
            // Missing spans rather than wrong ones: what was in flight is given up on.
            let before = state.pending.len();
            state.pending.retain(|p| p.side != side);
            self.stats.unanswered_requests += (before - state.pending.len()) as u64;
        }
        if state.idle() {
            self.connections.remove(&(pid, sock));
        }
    }

    /// Takes in received bytes: requests to a server, stitched across receives that split
    /// them. Returns whether they were requests (else they may be a response to a client).
    fn receive(&mut self, payload: Payload<'_>) -> bool {
        let Payload { pid, sock, timestamp_ns, data, continuation, truncated, .. } = payload;
        let mut stitched: Vec<u8>;
        let mut bytes = data;
        if let Some(state) = self.connections.get_mut(&(pid, sock)) {
            if !continuation {
                // A fresh receive that starts with a request line: whatever was half-read is
                // gone (or was not HTTP).
                state.carry.clear();
                state.skip = 0;
            } else {
                if state.skip > 0 {
                    let skipped = (state.skip.min(bytes.len() as u64)) as usize;
                    state.skip -= skipped as u64;
                    bytes = &bytes[skipped..];
                    if bytes.is_empty() {
                        return true;
                    }
                }
                if !state.carry.is_empty() {
                    stitched = std::mem::take(&mut state.carry);
                    stitched.extend_from_slice(bytes);
                    bytes = &stitched;
                }
            }
        }
        let mut requests = http::parse_requests(bytes);
        let mut carry = Vec::new();
        let mut skip = 0;
        if !truncated {
            match requests.resume {
                http::Resume::Head { offset, reported } if bytes.len() - offset <= MAX_CARRY => {
                    carry = bytes[offset..].to_vec();
                    if reported {
                        // It comes back whole with the next receive.
                        requests.heads.pop();
                    }
                }
                http::Resume::Body(remaining) => skip = remaining,
                _ => {}
            }
        }
        if requests.heads.is_empty() && carry.is_empty() && skip == 0 {
            if let Some(state) = self.connections.get(&(pid, sock)) {
                if state.idle() {
                    self.connections.remove(&(pid, sock));
                }
            }
            return false;
        }
        self.add_requests(pid, sock, Side::Server, timestamp_ns, requests.heads);
        if let Some(state) = self.connections.get_mut(&(pid, sock)) {
            state.carry = carry;
            state.skip = skip;
        }
        true
    }

    fn add_requests(&mut self, pid: u32, sock: u64, side: Side, timestamp_ns: u64, heads: Vec<http::RequestHead<'_>>) {
        self.make_room(pid, sock);
        let state = self.connections.entry((pid, sock)).or_default();
        state.last_seen_ns = timestamp_ns;
        for head in heads {
            self.stats.requests += 1;
            if state.pending.len() >= MAX_PENDING_PER_CONNECTION {
                state.pending.pop_front();
                self.stats.unanswered_requests += 1;
            }
            state.pending.push_back(PendingRequest {
                side,
                method: head.method,
                path: head.path.to_owned(),
                host: head.host.map(str::to_owned),
                trace: head.traceparent.and_then(traceparent::parse),
                started_ns: timestamp_ns,
            });
        }
    }

    /// The connection closed: its unanswered requests will never be.
    pub fn closed(&mut self, pid: u32, sock: u64) {
        if let Some(state) = self.connections.remove(&(pid, sock)) {
            self.stats.unanswered_requests += state.pending.len() as u64;
        }
    }

    /// Forgets connections with nothing seen since `before_ns` (their close was missed).
    pub fn expire(&mut self, before_ns: u64) {
        let stats = &mut self.stats;
        self.connections.retain(|_, state| {
            let keep = state.last_seen_ns >= before_ns;
            if !keep {
                stats.unanswered_requests += state.pending.len() as u64;
            }
            keep
        });
    }

    /// Makes room for one more connection by dropping the least recently active ones.
    fn make_room(&mut self, pid: u32, sock: u64) {
        if self.connections.len() < self.max_connections || self.connections.contains_key(&(pid, sock)) {
            return;
        }
        let mut ages: Vec<u64> = self.connections.values().map(|s| s.last_seen_ns).collect();
        let middle = ages.len() / 2;
        let (_, median, _) = ages.select_nth_unstable(middle);
        let cutoff = *median;
        self.expire(cutoff.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(sock: u64, flow: u32, at: u64, data: &[u8], continuation: bool) -> Payload<'_> {
        Payload { pid: 7, sock, flow, timestamp_ns: at, addrs: SocketAddrs::default(), data, continuation, truncated: false, size: data.len() as u64, cpu_samples: 0, off_cpu_events: false }
    }

    fn feed(exchanges: &mut Exchanges, flow: u32, at: u64, data: &[u8]) -> Vec<Exchange> {
        let mut done = Vec::new();
        exchanges.payload(payload(0xabc, flow, at, data, false), &mut done);
        done
    }

    #[test]
    fn requests_split_across_receives_are_stitched() {
        let mut exchanges = Exchanges::new(16);
        let burst: Vec<u8> = (0..40).flat_map(|i| format!("GET /r{i}?x=1 HTTP/1.1\r\nHost: h\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n").into_bytes()).collect();
        let mut done = Vec::new();
        for (i, piece) in burst.chunks(100).enumerate() {
            exchanges.payload(payload(1, direction::INGRESS, i as u64, piece, i > 0), &mut done);
        }
        // A POST whose body spans receives, then a GET.
        exchanges.payload(payload(1, direction::INGRESS, 100, b"POST /up HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345", false), &mut done);
        exchanges.payload(payload(1, direction::INGRESS, 101, b"67890GET /last HTTP/1.1\r\n\r\n", true), &mut done);
        for i in 0..42 {
            exchanges.payload(payload(1, direction::EGRESS, 200 + i, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false), &mut done);
        }
        let paths: Vec<&str> = done.iter().map(|e| e.path.as_str()).collect();
        let mut expected: Vec<String> = (0..40).map(|i| format!("/r{i}")).collect();
        expected.extend(["/up".to_owned(), "/last".to_owned()]);
        assert_eq!(paths, expected);
        assert!(done[..40].iter().all(|e| e.trace.is_some()), "headers split across receives are kept");
        assert_eq!(exchanges.stats.unmatched_responses, 0);
    }

    #[test]
    fn keep_alive_and_pipelining_match_in_order() {
        let mut exchanges = Exchanges::new(16);
        assert!(feed(&mut exchanges, direction::INGRESS, 10, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b?q=1 HTTP/1.1\r\n\r\n").is_empty());
        let first = feed(&mut exchanges, direction::EGRESS, 15, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let second = feed(&mut exchanges, direction::EGRESS, 18, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        assert_eq!((first[0].path.as_str(), first[0].status, first[0].started_ns, first[0].ended_ns), ("/a", 200, 10, 15));
        assert_eq!((second[0].path.as_str(), second[0].status, second[0].side), ("/b", 404, Side::Server));
        assert!(exchanges.is_empty(), "answered connections are forgotten");
    }

    #[test]
    fn a_responses_cpu_samples_go_to_the_one_request_it_answers() {
        let mut exchanges = Exchanges::new(16);
        let mut done = Vec::new();
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        exchanges.payload(payload(4, direction::INGRESS, 1, b"GET /a HTTP/1.1\r\n\r\n", false), &mut done);
        exchanges.payload(Payload { cpu_samples: 5, ..payload(4, direction::EGRESS, 2, ok, false) }, &mut done);
        assert_eq!((done[0].sock, done[0].started_ns, done[0].cpu_samples), (4, 1, 5));
        // Two answers in one send: the kernel's count cannot be split between them.
        done.clear();
        exchanges.payload(payload(4, direction::INGRESS, 3, b"GET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n", false), &mut done);
        let both = [&ok[..], &ok[..]].concat();
        exchanges.payload(Payload { cpu_samples: 7, ..payload(4, direction::EGRESS, 4, &both, false) }, &mut done);
        assert_eq!(done.iter().map(|e| (e.path.as_str(), e.cpu_samples)).collect::<Vec<_>>(), [("/b", 0), ("/c", 0)]);
    }

    #[test]
    fn client_side_and_informational_responses() {
        let mut exchanges = Exchanges::new(16);
        feed(&mut exchanges, direction::EGRESS, 1, b"POST /up HTTP/1.1\r\nContent-Length: 0\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n");
        assert!(feed(&mut exchanges, direction::INGRESS, 2, b"HTTP/1.1 100 Continue\r\n\r\n").is_empty());
        let done = feed(&mut exchanges, direction::INGRESS, 3, b"HTTP/1.1 201 Created\r\n\r\n");
        assert_eq!((done[0].side, done[0].status), (Side::Client, 201));
        assert_eq!(done[0].trace.map(|t| t.parent_id), Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
    }

    #[test]
    fn garbage_and_unmatched_responses_are_counted_not_matched() {
        let mut exchanges = Exchanges::new(16);
        assert!(feed(&mut exchanges, direction::EGRESS, 1, b"HTTP/1.1 200 OK\r\n\r\n").is_empty());
        assert!(feed(&mut exchanges, direction::INGRESS, 1, b"\x16\x03\x01garbage GET / HTTP/1.1").is_empty());
        assert_eq!(exchanges.stats.unmatched_responses, 1);
        assert!(exchanges.is_empty());
    }

    #[test]
    fn responses_beyond_the_capture_drop_the_requests_in_flight_instead_of_mismatching() {
        let mut exchanges = Exchanges::new(16);
        let mut done = Vec::new();
        exchanges.payload(payload(3, direction::EGRESS, 1, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n", false), &mut done);
        let first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        // The read moved three responses; only the first was copied.
        let read = Payload { size: 3 * first.len() as u64, truncated: true, ..payload(3, direction::INGRESS, 2, first, false) };
        exchanges.payload(read, &mut done);
        exchanges.payload(payload(3, direction::INGRESS, 3, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false), &mut done);
        assert_eq!(done.iter().map(|e| (e.path.as_str(), e.status)).collect::<Vec<_>>(), [("/a", 200)]);
        assert_eq!((exchanges.stats.unanswered_requests, exchanges.stats.unmatched_responses), (2, 1));
    }

    #[test]
    fn connections_are_bounded() {
        let mut exchanges = Exchanges::new(4);
        let mut done = Vec::new();
        for sock in 0..100u64 {
            exchanges.payload(payload(sock, direction::INGRESS, sock, b"GET / HTTP/1.1\r\n\r\n", false), &mut done);
            assert!(exchanges.len() <= 4);
        }
        exchanges.closed(1, 99);
        assert!(exchanges.stats.unanswered_requests >= 96);
    }
}
