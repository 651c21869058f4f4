//! Scans a file's lines in a loop (for profilers): `hot FILE [ROUNDS [THREADS]]`.
//! THREADS (default 1) is `[scan] threads`: profilers follow one thread best.
//! One untimed round first compiles the lazily built patterns, so the timed rounds are the steady
//! state; `valgrind --tool=callgrind --collect-atstart=no --toggle-collect='hot::timed'` counts
//! only them.
use featherguard_core::Firewall;

#[inline(never)]
fn rounds(fw: &Firewall, text: &str, rounds: usize) -> usize {
    let mut n = 0usize;
    for _ in 0..rounds {
        for line in text.lines() {
            n += fw.scan(line).findings.len();
        }
    }
    n
}

/// The timed rounds, under their own name for the profiler.
#[inline(never)]
fn timed(fw: &Firewall, text: &str, count: usize) -> usize {
    rounds(fw, text, count)
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: hot FILE [ROUNDS [THREADS]]");
    let count: usize = std::env::args()
        .nth(2)
        .map_or(20, |r| r.parse().expect("ROUNDS is a number"));
    let text = std::fs::read_to_string(path).expect("readable file");
    let mut config = featherguard_core::Config::default();
    config.scan.threads = std::env::args()
        .nth(3)
        .map_or(1, |t| t.parse().expect("THREADS is a number"));
    let fw = Firewall::from_config(&config).expect("default rules compile");
    rounds(&fw, &text, 1);
    let t = std::time::Instant::now();
    let n = timed(&fw, &text, count);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} findings, {:.1} MB/s",
        (text.len() * count) as f64 / secs / 1e6
    );
}
