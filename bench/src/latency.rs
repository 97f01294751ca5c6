//! Latency histograms (HdrHistogram, microseconds) and the percentiles every
//! report prints: p50, p99, p99.9 and max.
//!
//! One type for all benchmarks so their figures are comparable: same unit,
//! same precision, same clamping of outliers.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency the histogram tells apart; longer ones count as this.
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Significant decimal digits kept (3: 0.1% relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A histogram of durations in microseconds.
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(
            Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
                .expect("static histogram bounds are valid"),
        )
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        self.0.saturating_record(us);
    }

    pub fn add(&mut self, other: &Latency) {
        self.0.add(&other.0).expect("histograms with the same bounds add");
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The percentile distribution, HdrHistogram's text layout (what its
    /// plotters read): value (µs), percentile (0–1), total count, 1/(1−p).
    pub fn distribution(&self) -> String {
        let mut out =
            format!("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
        let mut total = 0;
        for v in self.0.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 { format!("{:.2}", 1.0 / (1.0 - q)) } else { "inf".into() };
            out += &format!("{:>12.3} {:>14.12} {:>10} {:>14}\n", v.value_iterated_to() as f64, q, total, inv);
        }
        let s = self.summary();
        out += &format!("#[Mean = {:.3}, Max = {}, Total count = {}]\n", self.0.mean(), s.max_us, s.count);
        out
    }

    /// (percentile 0–1, latency µs) points for a percentile plot.
    pub fn percentile_points(&self) -> Vec<(f64, u64)> {
        self.0.iter_quantiles(5).map(|v| (v.quantile_iterated_to(), v.value_iterated_to())).collect()
    }

    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

/// Percentiles of one histogram, in microseconds (all 0 when nothing was recorded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl std::fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {} / p99 {} / p99.9 {} / max {} us", self.p50_us, self.p99_us, self.p999_us, self.max_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_out_in_microseconds_and_outliers_clamp() {
        let mut l = Latency::default();
        for us in 1..=1000 {
            l.record(Duration::from_micros(us));
        }
        l.record(Duration::from_secs(3600));
        let s = l.summary();
        assert_eq!(s.count, 1001);
        assert!((499..=501).contains(&s.p50_us), "{s:?}");
        assert!((989..=991).contains(&s.p99_us), "{s:?}");
        assert!(s.max_us >= LATENCY_US_MAX && s.max_us <= LATENCY_US_MAX + LATENCY_US_MAX / 1000, "{s:?}");
        assert_eq!(Latency::default().summary(), LatencySummary::default());
    }
}
