//! Repeated measurements and how they are printed.

use std::{
    future::Future,
    time::{Duration, Instant},
};

/// The values of one figure over repeated runs (seconds, pages per second, items...).
#[derive(Debug, Clone, Default)]
pub struct Samples {
    values: Vec<f64>,
}

impl Samples {
    pub fn new() -> Samples {
        Samples::default()
    }

    pub fn push(&mut self, value: f64) {
        self.values.push(value);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median; the mean of the two middle values for an even count; 0 when empty.
    pub fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// The `p`th percentile (`p` in 0..=100) by nearest rank: the smallest value that at least `p`%
    /// of the values do not exceed; 0 when empty.
    pub fn percentile(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return 0.0;
        }
        let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(0.0)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(0.0)
    }

    pub fn mean(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.values.iter().sum::<f64>() / self.len() as f64
        }
    }

    /// Half the range relative to the median: how far the runs strayed, as a fraction.
    pub fn spread(&self) -> f64 {
        let m = self.median();
        if self.values.len() < 2 || m == 0.0 {
            0.0
        } else {
            (self.max() - self.min()) / 2.0 / m.abs()
        }
    }
}

/// Spread above which a figure is marked noisy in the table.
pub const NOISY: f64 = 0.10;

/// Times `f`, returning its duration and its value (dropped by the caller, outside the timing).
pub fn time<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let start = Instant::now();
    let value = f();
    (start.elapsed(), value)
}

/// Times a future.
pub async fn time_async<T>(f: impl Future<Output = T>) -> (Duration, T) {
    let start = Instant::now();
    let value = f.await;
    (start.elapsed(), value)
}

/// A duration in seconds, in the unit that suits it.
pub fn fmt_secs(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else if s >= 0.001 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

/// A rate per second.
pub fn fmt_rate(r: f64, unit: &str) -> String {
    if r >= 100.0 {
        format!("{r:.0} {unit}/s")
    } else {
        format!("{r:.1} {unit}/s")
    }
}

/// A size given in KiB, as MiB.
pub fn fmt_kib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// A figure with its spread over the runs, e.g. `812 ms ±3%`.
pub fn with_spread(text: String, samples: &Samples) -> String {
    if samples.len() < 2 {
        return text;
    }
    format!("{text} ±{:.0}%", samples.spread() * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[f64]) -> Samples {
        let mut s = Samples::new();
        for v in values {
            s.push(*v);
        }
        s
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(samples(&[]).median(), 0.0);
        assert_eq!(samples(&[3.0, 1.0, 2.0]).median(), 2.0);
        assert_eq!(samples(&[4.0, 1.0, 3.0, 2.0]).median(), 2.5);
        assert_eq!(samples(&[5.0, 1.0, 9.0]).min(), 1.0);
        assert_eq!(samples(&[5.0, 1.0, 9.0]).max(), 9.0);
        assert_eq!(samples(&[1.0, 2.0, 3.0]).mean(), 2.0);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let hundred = samples(&(1..=100).rev().map(f64::from).collect::<Vec<_>>());
        assert_eq!(hundred.percentile(50.0), 50.0);
        assert_eq!(hundred.percentile(99.0), 99.0);
        assert_eq!(hundred.percentile(100.0), 100.0);
        assert_eq!(hundred.percentile(0.0), 1.0);
        assert_eq!(samples(&[3.0, 1.0, 2.0]).percentile(99.0), 3.0);
        assert_eq!(samples(&[]).percentile(99.0), 0.0);
    }

    #[test]
    fn spread_is_half_range_over_median() {
        assert_eq!(samples(&[10.0]).spread(), 0.0);
        let s = samples(&[9.0, 10.0, 11.0]);
        assert!((s.spread() - 0.1).abs() < 1e-12);
        assert_eq!(with_spread("10 ms".into(), &s), "10 ms ±10%");
    }

    #[test]
    fn units() {
        assert_eq!(fmt_secs(12.34), "12.3 s");
        assert_eq!(fmt_secs(1.234), "1.23 s");
        assert_eq!(fmt_secs(0.0123), "12.3 ms");
        assert_eq!(fmt_secs(0.00123), "1.23 ms");
        assert_eq!(fmt_secs(0.000123), "123.0 µs");
        assert_eq!(fmt_rate(1234.4, "pages"), "1234 pages/s");
        assert_eq!(fmt_kib(2048.0), "2.0 MiB");
    }
}
