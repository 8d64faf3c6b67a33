//! Off-CPU profiles: Python workloads that wait in known functions, and readers for what oxeye
//! records of the waits: each OTLP sample with its profile's sample type, its values (the
//! nanoseconds off CPU of each event, one per timestamp) and its link, and each sample of a
//! pprof profile with all its values and the profile's sample types.
//!
//! The pprof reader adds the sample types and values to [`crate::links::read_pprof`]'s frames
//! and labels, with the protobuf decoder of [`crate::pprof`]: it shares no code with oxeye's
//! writer.

use std::path::Path;

use otlp_sink::proto::collector::profiles::v1development::ExportProfilesServiceRequest;

use crate::{
    links::{is_function, linked_samples, read_pprof, LinkedSample, PprofSample},
    pprof::{gunzip, Fields, Wire},
};

/// A Python workload (`python3 -c SLEEPER RESULT SECONDS`) that waits in a known chain of
/// functions. Until a line arrives on its stdin (the test's "go", once oxeye is ready) a
/// `warm-up` thread loops in `warm_up()`: `time.sleep(0.009)` then `burn(0.001)`, a 1 ms busy
/// loop. Then that thread ends and a `sleeper` thread loops for SECONDS of wall time:
/// `outer_wait()` → `middle_wait()` → `time.sleep(0.009)`, then `burn(0.001)`, measuring the
/// wall time spent inside the sleep calls with `time.perf_counter_ns`. When it is done, the
/// main thread writes RESULT (atomically, through a rename), a JSON object: `tid` (the
/// sleeper's native thread id), `start_unix_nano` and `end_unix_nano` (its loop's),
/// `slept_ns` (its total time inside `time.sleep`) and `iterations`; then it waits for stdin
/// to close.
pub const SLEEPER: &str = r#"
import json, os, sys, threading, time

def burn(seconds):
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n

def warm_up(stop):
    while not stop.is_set():
        time.sleep(0.009)
        burn(0.001)

def middle_wait():
    start = time.perf_counter_ns()
    time.sleep(0.009)
    return time.perf_counter_ns() - start

def outer_wait():
    return middle_wait()

def sleeper(seconds, result):
    result["tid"] = threading.get_native_id()
    result["start_unix_nano"] = time.time_ns()
    slept = iterations = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        slept += outer_wait()
        burn(0.001)
        iterations += 1
    result["end_unix_nano"] = time.time_ns()
    result["slept_ns"] = slept
    result["iterations"] = iterations

path, seconds = sys.argv[1], float(sys.argv[2])
stop = threading.Event()
warm = threading.Thread(target=warm_up, args=(stop,), name="warm-up")
warm.start()
sys.stdin.readline()
stop.set()
warm.join()
result = {}
worker = threading.Thread(target=sleeper, args=(seconds, result), name="sleeper")
worker.start()
worker.join()
with open(path + ".tmp", "w") as f:
    json.dump(result, f)
os.replace(path + ".tmp", path)
sys.stdin.read()
"#;

/// A Python HTTP server (`python3 -c WAITING_SERVER PORT LIFETIME_SECS`) on 127.0.0.1: a
/// `ThreadingHTTPServer` (a thread per connection) whose `do_GET` runs
/// `compute_in_request(0.010)`, a busy loop of 10 ms of wall time, then `wait_in_request()`,
/// which sleeps 30 ms, then answers 200 with a small body (HTTP/1.0: the connection closes
/// after it). It ends by itself after LIFETIME_SECS.
pub const WAITING_SERVER: &str = r#"
import http.server, sys, threading, time

def compute_in_request(seconds):
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n

def wait_in_request():
    time.sleep(0.030)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        n = compute_in_request(0.010)
        wait_in_request()
        body = b"ok %d\n" % n
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
threading.Timer(float(sys.argv[2]), server.shutdown).start()
server.serve_forever()
"#;

/// The sample type of oxeye's off-CPU profile, and its unit.
pub const OFF_CPU: (&str, &str) = ("off_cpu", "nanoseconds");
/// The sample type of oxeye's CPU profile, and its unit.
pub const CPU: (&str, &str) = ("samples", "count");

/// Whether a stack (innermost first) holds Python function `inner` called, directly or not, by
/// function `outer`: a frame `inner` closer to the leaf than a frame `outer`.
pub fn called_under(frames_innermost_first: &[String], inner: &str, outer: &str) -> bool {
    let Some(inner_at) = frames_innermost_first.iter().position(|f| is_function(f, inner)) else { return false };
    frames_innermost_first[inner_at + 1..].iter().any(|f| is_function(f, outer))
}

// ---------------------------------------------------------------------------------------------
// OTLP: samples with their profile's type and their values.

/// One OTLP sample with its profile's sample type and its values.
#[derive(Debug, Clone)]
pub struct TypedSample {
    /// Its stack, thread, timestamps and link.
    pub sample: LinkedSample,
    /// Its profile's `sample_type`: (type, unit), `("", "")` if absent.
    pub sample_type: (String, String),
    /// Its profile's `period` (nanoseconds of CPU per sample in oxeye's CPU profile).
    pub period: i64,
    /// Its values, as sent.
    pub values: Vec<i64>,
}

impl TypedSample {
    /// Whether its profile has sample type `kind` (type and unit).
    pub fn is(&self, kind: (&str, &str)) -> bool {
        self.sample_type.0 == kind.0 && self.sample_type.1 == kind.1
    }

    /// Whether its profile is the off-CPU one.
    pub fn is_off_cpu(&self) -> bool {
        self.sample_type.0 == OFF_CPU.0
    }

    /// Its events: (timestamp, value) pairs; a value is missing (`None`) past the end of
    /// `values`.
    pub fn events(&self) -> impl Iterator<Item = (u64, Option<i64>)> + '_ {
        self.sample.timestamps.iter().enumerate().map(|(i, &t)| (t, self.values.get(i).copied()))
    }

    /// The sum of its values.
    pub fn total(&self) -> i64 {
        self.values.iter().sum()
    }

    /// Why its shape is not that of an off-CPU sample (one value per timestamp, none negative),
    /// if it is not.
    pub fn off_cpu_shape_problem(&self) -> Option<String> {
        if self.values.len() != self.sample.timestamps.len() {
            return Some(format!("{} values for {} timestamps", self.values.len(), self.sample.timestamps.len()));
        }
        if let Some(v) = self.values.iter().find(|&&v| v < 0) {
            return Some(format!("a negative value ({v} ns)"));
        }
        None
    }
}

/// Every sample of `request`, in message order, with its profile's sample type, its values and
/// its link.
pub fn typed_samples(request: &ExportProfilesServiceRequest) -> Vec<TypedSample> {
    let strings = request.dictionary.as_ref().map(|d| d.string_table.as_slice()).unwrap_or_default();
    let string = |i: i32| usize::try_from(i).ok().and_then(|i| strings.get(i)).cloned().unwrap_or_else(|| format!("<invalid string {i}>"));
    let mut raw = Vec::new();
    for profile in request.resource_profiles.iter().flat_map(|rp| &rp.scope_profiles).flat_map(|sp| &sp.profiles) {
        let sample_type = profile.sample_type.as_ref().map_or_else(|| (String::new(), String::new()), |t| (string(t.type_strindex), string(t.unit_strindex)));
        for sample in &profile.samples {
            raw.push((sample_type.clone(), profile.period, sample.values.clone()));
        }
    }
    let linked = linked_samples(request);
    assert_eq!(raw.len(), linked.len(), "linked_samples decoded {} samples of a request holding {}", linked.len(), raw.len());
    raw.into_iter().zip(linked).map(|((sample_type, period, values), sample)| TypedSample { sample, sample_type, period, values }).collect()
}

/// The (type, unit) of every profile of `request`.
pub fn profile_types(request: &ExportProfilesServiceRequest) -> Vec<(String, String)> {
    let strings = request.dictionary.as_ref().map(|d| d.string_table.as_slice()).unwrap_or_default();
    let string = |i: i32| usize::try_from(i).ok().and_then(|i| strings.get(i)).cloned().unwrap_or_else(|| format!("<invalid string {i}>"));
    request
        .resource_profiles
        .iter()
        .flat_map(|rp| &rp.scope_profiles)
        .flat_map(|sp| &sp.profiles)
        .map(|p| p.sample_type.as_ref().map_or_else(|| (String::new(), String::new()), |t| (string(t.type_strindex), string(t.unit_strindex))))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// pprof: samples with all their values.

/// A pprof profile's sample types and samples, with every value of each sample.
#[derive(Debug, Clone)]
pub struct PprofProfile {
    /// (type, unit) of each value.
    pub sample_types: Vec<(String, String)>,
    /// Each sample (frames and labels) with its values.
    pub samples: Vec<(PprofSample, Vec<i64>)>,
}

impl PprofProfile {
    /// The index of the values of type `kind`.
    pub fn value_index(&self, kind: (&str, &str)) -> Option<usize> {
        self.sample_types.iter().position(|(t, u)| t == kind.0 && u == kind.1)
    }
}

/// Reads a gzipped pprof profile with its sample types and all values.
pub fn read_pprof_values(path: &Path) -> PprofProfile {
    let bytes = gunzip(path);
    let (sample_types, values) = decode_types_and_values(&bytes).unwrap_or_else(|e| panic!("{} is not a pprof profile: {e}", path.display()));
    let samples = read_pprof(path);
    assert_eq!(samples.len(), values.len(), "{}: the two readers found {} and {} samples", path.display(), samples.len(), values.len());
    PprofProfile { sample_types, samples: samples.into_iter().zip(values).collect() }
}

/// The sample types (type, unit) of an uncompressed pprof `Profile`, and each sample's values.
pub fn decode_types_and_values(bytes: &[u8]) -> Result<(Vec<(String, String)>, Vec<Vec<i64>>), String> {
    let mut types: Vec<(u64, u64)> = Vec::new();
    let mut values: Vec<Vec<i64>> = Vec::new();
    let mut strings: Vec<String> = Vec::new();
    for field in Fields::new(bytes) {
        match field? {
            // Profile.sample_type: ValueType { type = 1, unit = 2 }
            (1, Wire::Bytes(message)) => {
                let (mut kind, mut unit) = (0, 0);
                for field in Fields::new(message) {
                    match field? {
                        (1, Wire::Varint(v)) => kind = v,
                        (2, Wire::Varint(v)) => unit = v,
                        _ => {}
                    }
                }
                types.push((kind, unit));
            }
            // Profile.sample: value = 2, packed or not.
            (2, Wire::Bytes(message)) => {
                let mut sample = Vec::new();
                for field in Fields::new(message) {
                    match field? {
                        (2, value @ (Wire::Varint(_) | Wire::Bytes(_))) => sample.extend(value.varints()?.into_iter().map(|v| v as i64)),
                        _ => {}
                    }
                }
                values.push(sample);
            }
            // Profile.string_table
            (6, Wire::Bytes(s)) => strings.push(String::from_utf8(s.to_vec()).map_err(|_| "a string that is not UTF-8".to_owned())?),
            _ => {}
        }
    }
    let string = |i: u64| usize::try_from(i).ok().and_then(|i| strings.get(i)).cloned().ok_or_else(|| format!("string index {i} out of the table ({})", strings.len()));
    let types = types.into_iter().map(|(kind, unit)| Ok((string(kind)?, string(unit)?))).collect::<Result<Vec<_>, String>>()?;
    Ok((types, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::encode::{put_field, put_int, put_varint};

    #[test]
    fn pprof_sample_types_and_values_come_back() {
        let strings = ["", "samples", "count", "off_cpu", "nanoseconds"];
        let mut profile = Vec::new();
        for (kind, unit) in [(1u64, 2u64), (3, 4)] {
            let mut value_type = Vec::new();
            put_int(&mut value_type, 1, kind);
            put_int(&mut value_type, 2, unit);
            put_field(&mut profile, 1, &value_type);
        }
        // One sample with packed values, one with unpacked values.
        let mut sample = Vec::new();
        put_field(&mut sample, 1, &[1]);
        let mut packed = Vec::new();
        put_varint(&mut packed, 2);
        put_varint(&mut packed, 9_000_000_000);
        put_field(&mut sample, 2, &packed);
        put_field(&mut profile, 2, &sample);
        let mut sample = Vec::new();
        put_int(&mut sample, 2, 1);
        put_int(&mut sample, 2, 300);
        put_field(&mut profile, 2, &sample);
        for s in strings {
            put_field(&mut profile, 6, s.as_bytes());
        }
        let (types, values) = decode_types_and_values(&profile).expect("decodes");
        assert_eq!(types, [("samples".to_owned(), "count".to_owned()), ("off_cpu".to_owned(), "nanoseconds".to_owned())]);
        assert_eq!(values, [vec![2, 9_000_000_000], vec![1, 300]]);
        assert!(decode_types_and_values(&profile[..profile.len() - 1]).is_err(), "a cut message");
    }

    #[test]
    fn chains_are_found_innermost_first() {
        let stack: Vec<String> = ["clock_nanosleep", "time_sleep", "middle_wait (<string>:17)", "outer_wait", "sleeper"].map(str::to_owned).into();
        assert!(called_under(&stack, "middle_wait", "outer_wait"));
        assert!(!called_under(&stack, "outer_wait", "middle_wait"));
        assert!(!called_under(&stack, "middle_wait", "warm_up"));
    }
}
