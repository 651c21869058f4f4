//! Scans a file's lines in a loop (for profilers): `hot FILE [ROUNDS]`.
fn main() {
    let path = std::env::args().nth(1).expect("usage: hot FILE [ROUNDS]");
    let rounds: usize = std::env::args()
        .nth(2)
        .map_or(20, |r| r.parse().expect("ROUNDS is a number"));
    let text = std::fs::read_to_string(path).expect("readable file");
    let fw = featherguard_core::Firewall::with_default_rules().expect("default rules compile");
    let t = std::time::Instant::now();
    let mut n = 0usize;
    for _ in 0..rounds {
        for line in text.lines() {
            n += fw.scan(line).findings.len();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} findings, {:.1} MB/s",
        (text.len() * rounds) as f64 / secs / 1e6
    );
}
