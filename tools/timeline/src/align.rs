//! Clock alignment: mapping a node's boot clock (`t_us` on COM2) to host time.
//!
//! The harness reads a node's clock with `uptime` and takes the midpoint of the round trip
//! as the host instant of that reading (`Node::clock_origin` in tests/qemu; error up to
//! half the round trip). Each reading is a [`ClockSample`] in the journal. One sample fixes
//! the offset. Two or more, spread over at least [`RATE_SPAN_MIN_US`], may also fix the
//! rate: a kernel whose TSC calibration was off runs its clock at the wrong speed (before
//! the calibration fix, up to 2× slow on a loaded host), and a 0.5 % error is 2.5 ms over a
//! half-second failover. But a fitted rate is only as good as the readings: over a few
//! seconds, ±2.5 ms of round-trip noise makes a perfect clock look 0.1 % off. So the fitted
//! rate is used only when it differs from 1 by more than [`RATE_SIGNIFICANCE`] standard
//! errors (from each reading's round trip); otherwise the rate is 1 and the offset is the
//! mean over all readings. Each node incarnation has its own [`ClockMap`] (a restarted
//! node's clock starts again at 0).
//!
//! Without samples (a run not made by the harness), a node's clock zero is taken to be the
//! moment its QEMU started (the file time of `qemu.stderr`): the boot firmware's second or
//! two is then missing, and the map says it is approximate.

/// Sample spread below which the rate is not estimated (noise would dominate).
pub const RATE_SPAN_MIN_US: u64 = 500_000;
/// How many standard errors a fitted rate must be away from 1 to be believed.
pub const RATE_SIGNIFICANCE: f64 = 3.0;
/// Rates outside this band mean the samples are wrong, not the clock; the map then falls
/// back to rate 1.
const RATE_BAND: (f64, f64) = (0.5, 2.0);
/// Samples whose round trip is this many times the best one are dropped from a fit.
const RTT_OUTLIER_FACTOR: u64 = 4;

/// One reading of a node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSample {
    /// Host µs (journal time) of the reading: the midpoint of the round trip.
    pub host_us: i64,
    /// What the node's clock read.
    pub guest_us: u64,
    /// The round trip, which bounds the error (± half of it).
    pub rtt_us: u64,
}

/// How a clock map was obtained, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alignment {
    /// Offset and rate from this many samples.
    Fitted { samples: usize },
    /// Offset from samples, rate assumed 1.
    Offset { samples: usize },
    /// Clock zero assumed at QEMU's start (file times): approximate by the firmware's boot.
    FileTime,
    /// Nothing known: clock zero assumed at the run's start.
    Assumed,
}

impl Alignment {
    /// A short description for the timeline's notes.
    pub fn describe(&self) -> String {
        match self {
            Alignment::Fitted { samples } => {
                format!("offset and rate from {samples} clock samples")
            }
            Alignment::Offset { samples } => {
                format!("offset from {samples} clock sample(s), rate 1")
            }
            Alignment::FileTime => "approximate: clock zero at QEMU start (file time)".into(),
            Alignment::Assumed => "unaligned: clock zero at the run's start".into(),
        }
    }

    /// Whether event times are good to about a millisecond.
    pub fn is_precise(&self) -> bool {
        matches!(self, Alignment::Fitted { .. } | Alignment::Offset { .. })
    }
}

/// `host_us = origin_us + rate × guest_us`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClockMap {
    origin_us: f64,
    rate: f64,
    pub alignment: Alignment,
}

impl ClockMap {
    /// Clock zero at host time `origin_us`, rate 1.
    pub fn from_origin(origin_us: i64, alignment: Alignment) -> ClockMap {
        ClockMap {
            origin_us: origin_us as f64,
            rate: 1.0,
            alignment,
        }
    }

    /// The least-squares line through the samples; `None` without samples.
    pub fn fit(samples: &[ClockSample]) -> Option<ClockMap> {
        let best_rtt = samples.iter().map(|s| s.rtt_us).min()?;
        let limit = best_rtt.max(1) * RTT_OUTLIER_FACTOR;
        let kept: Vec<&ClockSample> = samples.iter().filter(|s| s.rtt_us <= limit).collect();
        assert!(!kept.is_empty(), "the best sample is always kept");
        let n = kept.len() as f64;
        let mean_g = kept.iter().map(|s| s.guest_us as f64).sum::<f64>() / n;
        let mean_h = kept.iter().map(|s| s.host_us as f64).sum::<f64>() / n;
        let (lo, hi) = kept.iter().fold((u64::MAX, 0), |(lo, hi), s| {
            (lo.min(s.guest_us), hi.max(s.guest_us))
        });
        let mut rate = 1.0;
        let mut alignment = Alignment::Offset {
            samples: kept.len(),
        };
        if kept.len() >= 2 && hi - lo >= RATE_SPAN_MIN_US {
            let (mut sxy, mut sxx, mut noise) = (0.0, 0.0, 0.0);
            for s in &kept {
                let (dx, dy) = (s.guest_us as f64 - mean_g, s.host_us as f64 - mean_h);
                sxy += dx * dy;
                sxx += dx * dx;
                // A reading lies anywhere within its round trip: σ = half of it / √3.
                let sigma = s.rtt_us as f64 / 2.0 / 3f64.sqrt();
                noise += sigma * sigma * dx * dx;
            }
            let fitted = sxy / sxx;
            let standard_error = noise.sqrt() / sxx;
            let significant = (fitted - 1.0).abs() > RATE_SIGNIFICANCE * standard_error;
            if significant && (RATE_BAND.0..=RATE_BAND.1).contains(&fitted) {
                rate = fitted;
                alignment = Alignment::Fitted {
                    samples: kept.len(),
                };
            }
        }
        Some(ClockMap {
            origin_us: mean_h - rate * mean_g,
            rate,
            alignment,
        })
    }

    /// Host µs of a guest reading.
    pub fn host_us(&self, guest_us: u64) -> i64 {
        (self.origin_us + self.rate * guest_us as f64).round() as i64
    }

    /// Host µs at which the guest clock read 0.
    pub fn origin_us(&self) -> i64 {
        self.origin_us.round() as i64
    }

    /// Host seconds per guest second.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(host_us: i64, guest_us: u64, rtt_us: u64) -> ClockSample {
        ClockSample {
            host_us,
            guest_us,
            rtt_us,
        }
    }

    #[test]
    fn one_sample_fixes_the_offset() {
        let map = ClockMap::fit(&[sample(5_000_000, 3_000_000, 800)]).unwrap();
        assert_eq!(map.origin_us(), 2_000_000);
        assert_eq!(map.host_us(3_500_000), 5_500_000);
        assert_eq!(map.alignment, Alignment::Offset { samples: 1 });
        assert!(ClockMap::fit(&[]).is_none());
    }

    #[test]
    fn samples_spread_over_time_fix_the_rate() {
        // A guest whose calibration made its clock run 2 % slow: 1 guest s = 1.02 host s.
        let truth = |g: u64| 1_000_000 + (g as f64 * 1.02) as i64;
        let samples: Vec<_> = [2_000_000u64, 10_000_000, 30_000_000]
            .iter()
            .map(|&g| sample(truth(g), g, 900))
            .collect();
        let map = ClockMap::fit(&samples).unwrap();
        assert_eq!(map.alignment, Alignment::Fitted { samples: 3 });
        assert!((map.rate() - 1.02).abs() < 1e-9);
        for g in [0, 5_000_000, 40_000_000] {
            assert!((map.host_us(g) - truth(g)).abs() <= 1, "at {g}");
        }
    }

    #[test]
    fn noisy_or_close_samples_do_not_invent_a_rate() {
        // Two samples 100 ms apart with 1 ms of noise would claim a 1 % rate error.
        let map =
            ClockMap::fit(&[sample(1_000_000, 0, 500), sample(1_101_000, 100_000, 500)]).unwrap();
        assert_eq!(map.rate(), 1.0);
        assert_eq!(map.alignment, Alignment::Offset { samples: 2 });
        // A sample with a huge round trip (the node was busy) is dropped from the fit.
        let map = ClockMap::fit(&[
            sample(1_000_000, 0, 500),
            sample(2_000_000, 1_000_000, 600),
            sample(3_400_000, 2_000_000, 400_000),
        ])
        .unwrap();
        assert_eq!(map.alignment, Alignment::Offset { samples: 2 });
        assert_eq!(map.host_us(3_000_000), 4_000_000);
        // Readings a few seconds apart with ±2.5 ms of noise (5 ms round trips) claim a rate
        // of 1.001 on a perfect clock; that is noise, and the offset is their mean.
        let map = ClockMap::fit(&[
            sample(1_000_000, 0, 5000),
            sample(3_002_500, 2_000_000, 5000),
            sample(5_002_000, 4_000_000, 5000),
        ])
        .unwrap();
        assert_eq!(map.rate(), 1.0);
        assert_eq!(map.alignment, Alignment::Offset { samples: 3 });
        assert!(
            (map.origin_us() - 1_001_500).abs() <= 1,
            "{}",
            map.origin_us()
        );
        // The same noise cannot hide a clock 2 % slow over 20 s.
        let map = ClockMap::fit(&[
            sample(1_000_000, 0, 5000),
            sample(21_402_500, 20_000_000, 5000),
            sample(41_800_000, 40_000_000, 5000),
        ])
        .unwrap();
        assert!((map.rate() - 1.02).abs() < 0.001, "{}", map.rate());
        // A wild rate means broken samples: rate 1 instead.
        let map = ClockMap::fit(&[sample(0, 0, 10), sample(10_000_000, 1_000_000, 10)]).unwrap();
        assert_eq!(map.rate(), 1.0);
    }

    #[test]
    fn a_file_time_origin_is_approximate() {
        let map = ClockMap::from_origin(7_000, Alignment::FileTime);
        assert_eq!(map.host_us(1_000), 8_000);
        assert!(!map.alignment.is_precise());
        assert!(Alignment::Fitted { samples: 2 }.is_precise());
    }
}
