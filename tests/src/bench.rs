//! What the benchmarks share: percentiles and how a latency figure is
//! printed.

use std::time::Duration;

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
pub fn report(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<58} n={:<4} p50 {:>9}  p99 {:>9}",
        samples.len(),
        ms(p50),
        ms(p99)
    );
    (p50, p99)
}
