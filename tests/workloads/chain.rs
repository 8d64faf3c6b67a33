//! The known call chain in Rust, for the unwinder tests: main -> outer -> middle ->
//! leaf_a / leaf_b, built with `rustc -O` (no frame pointers, like a release build).
//! middle() gives leaf_a three times the work of leaf_b. Runs for argv[1] seconds (default 5),
//! after sleeping argv[2] seconds (default 0).
use std::{
    hint::black_box,
    time::{Duration, Instant},
};

const UNIT: u64 = 200_000;

#[inline(never)]
fn leaf_a(n: u64) -> u64 {
    (0..black_box(n)).fold(0u64, |acc, i| black_box(acc.wrapping_add(i)))
}

#[inline(never)]
fn leaf_b(n: u64) -> u64 {
    (0..black_box(n)).fold(0u64, |acc, i| black_box(acc.wrapping_add(i ^ 1)))
}

#[inline(never)]
fn middle() -> u64 {
    let a = leaf_a(3 * UNIT);
    let b = leaf_b(UNIT);
    black_box(a ^ b)
}

#[inline(never)]
fn outer(seconds: f64) -> u64 {
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut total = 0u64;
    while Instant::now() < end {
        total = total.wrapping_add(middle());
    }
    black_box(total)
}

fn main() {
    let seconds = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    // A pause first (argv[2] seconds) gives a profiler started earlier time to describe us.
    if let Some(pause) = std::env::args().nth(2).and_then(|s| s.parse::<f64>().ok()) {
        std::thread::sleep(std::time::Duration::from_secs_f64(pause));
    }
    black_box(outer(seconds));
}
