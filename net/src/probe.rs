//! Round-trip probes for the `transport_rtt_us` benchmark.
//!
//! A [`Kind::ProbePing`](crate::Kind::ProbePing) carries a [`ProbePayload`]: a random nonce and
//! the sender's clock in microseconds, then optional padding (to measure RTT at a chosen
//! datagram size). The receiver echoes the payload byte for byte in a
//! [`Kind::ProbePong`](crate::Kind::ProbePong). The prober matches the echo against its bounded
//! table of outstanding pings and records `now - sent` in [`RttStats`].
//!
//! Sans-IO like the rest of the crate: the caller passes `now_us` and a seeded generator.
//! The prober never reads a clock.

use alloc::vec::Vec;

use rand_core::RngCore;

use crate::NodeId;

/// Bytes of a probe payload before any padding: nonce (u64) + send time (u64), big-endian.
pub const PROBE_PAYLOAD_LEN: usize = 16;

/// The fixed part of a probe's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbePayload {
    /// Random, chosen by the prober; matches a pong to its ping.
    pub nonce: u64,
    /// The prober's clock when it sent the ping.
    pub sent_us: u64,
}

impl ProbePayload {
    /// Writes the 16 fixed bytes into `out[..16]` and returns 16. `out` must be long enough.
    pub fn write(&self, out: &mut [u8]) -> usize {
        assert!(out.len() >= PROBE_PAYLOAD_LEN, "caller sizes the buffer");
        out[..8].copy_from_slice(&self.nonce.to_be_bytes());
        out[8..16].copy_from_slice(&self.sent_us.to_be_bytes());
        PROBE_PAYLOAD_LEN
    }

    /// Reads the fixed part of a probe payload; padding after it is ignored.
    pub fn read(payload: &[u8]) -> Result<Self, ProbeError> {
        if payload.len() < PROBE_PAYLOAD_LEN {
            return Err(ProbeError::Truncated { len: payload.len() });
        }
        let mut nonce = [0u8; 8];
        let mut sent = [0u8; 8];
        nonce.copy_from_slice(&payload[..8]);
        sent.copy_from_slice(&payload[8..16]);
        Ok(Self {
            nonce: u64::from_be_bytes(nonce),
            sent_us: u64::from_be_bytes(sent),
        })
    }
}

/// Why a probe could not be started or a pong was not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// `outstanding_max` pings are already in flight; expire some first.
    TooManyOutstanding,
    /// The payload is shorter than [`PROBE_PAYLOAD_LEN`].
    Truncated { len: usize },
    /// No outstanding ping has this nonce from this peer: a duplicate, late or forged pong.
    Unmatched,
    /// `now_us` is before the ping's send time: the caller's clock is not monotonic.
    ClockWentBackwards,
}

/// Prober settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Pings in flight at once. Default 64.
    pub outstanding_max: usize,
    /// RTT samples kept for percentiles (the most recent ones). Default 4096.
    pub samples_max: usize,
    /// A ping unanswered this long is counted lost by [`Prober::expire`]. Default 1 s.
    pub timeout_us: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            outstanding_max: 64,
            samples_max: 4096,
            timeout_us: 1_000_000,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Outstanding {
    peer: NodeId,
    probe: ProbePayload,
}

/// Sends pings, matches pongs, keeps RTT statistics.
#[derive(Clone, Debug)]
pub struct Prober {
    config: ProbeConfig,
    outstanding: Vec<Outstanding>,
    stats: RttStats,
    /// Pings that timed out.
    pub lost: u64,
    /// Pongs that matched no outstanding ping.
    pub unmatched: u64,
}

impl Prober {
    /// A prober with `config`. Allocates its bounded tables once, here.
    pub fn new(config: ProbeConfig) -> Self {
        assert!(config.outstanding_max > 0 && config.samples_max > 0);
        Self {
            config,
            outstanding: Vec::with_capacity(config.outstanding_max),
            stats: RttStats::new(config.samples_max),
            lost: 0,
            unmatched: 0,
        }
    }

    /// Registers a ping to `peer` sent at `now_us`; returns the payload to send.
    pub fn start<R: RngCore>(
        &mut self,
        peer: NodeId,
        now_us: u64,
        rng: &mut R,
    ) -> Result<ProbePayload, ProbeError> {
        if self.outstanding.len() >= self.config.outstanding_max {
            return Err(ProbeError::TooManyOutstanding);
        }
        let probe = ProbePayload {
            nonce: rng.next_u64(),
            sent_us: now_us,
        };
        self.outstanding.push(Outstanding { peer, probe });
        assert!(self.outstanding.len() <= self.config.outstanding_max);
        Ok(probe)
    }

    /// Matches a pong from `peer` received at `now_us`; returns the round trip in µs.
    pub fn on_pong(
        &mut self,
        peer: NodeId,
        payload: &[u8],
        now_us: u64,
    ) -> Result<u64, ProbeError> {
        let echoed = ProbePayload::read(payload)?;
        let Some(index) = self
            .outstanding
            .iter()
            .position(|o| o.peer == peer && o.probe == echoed)
        else {
            self.unmatched = self.unmatched.saturating_add(1);
            return Err(ProbeError::Unmatched);
        };
        let sent_us = self.outstanding[index].probe.sent_us;
        if now_us < sent_us {
            return Err(ProbeError::ClockWentBackwards);
        }
        self.outstanding.swap_remove(index);
        let rtt_us = now_us - sent_us;
        self.stats.record(rtt_us);
        Ok(rtt_us)
    }

    /// Forgets pings older than the timeout, counting them lost; returns how many.
    pub fn expire(&mut self, now_us: u64) -> usize {
        let before = self.outstanding.len();
        let timeout_us = self.config.timeout_us;
        self.outstanding
            .retain(|o| now_us.saturating_sub(o.probe.sent_us) < timeout_us);
        let expired = before - self.outstanding.len();
        self.lost = self.lost.saturating_add(expired as u64);
        expired
    }

    /// Pings in flight.
    pub fn in_flight(&self) -> usize {
        self.outstanding.len()
    }

    /// The RTT statistics so far.
    pub fn stats(&self) -> &RttStats {
        &self.stats
    }
}

/// Round-trip times: exact min/max/mean over all samples, percentiles over the most recent
/// `samples_max` samples (a bounded ring).
#[derive(Clone, Debug)]
pub struct RttStats {
    ring: Vec<u64>,
    samples_max: usize,
    next: usize,
    count: u64,
    sum_us: u128,
    min_us: u64,
    max_us: u64,
}

/// A summary of [`RttStats`], in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttSummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl RttStats {
    /// Empty statistics keeping at most `samples_max` samples for percentiles.
    pub fn new(samples_max: usize) -> Self {
        assert!(samples_max > 0);
        Self {
            ring: Vec::with_capacity(samples_max),
            samples_max,
            next: 0,
            count: 0,
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, rtt_us: u64) {
        if self.ring.len() < self.samples_max {
            self.ring.push(rtt_us);
        } else {
            self.ring[self.next] = rtt_us;
        }
        self.next = (self.next + 1) % self.samples_max;
        self.count += 1;
        self.sum_us += u128::from(rtt_us);
        self.min_us = self.min_us.min(rtt_us);
        self.max_us = self.max_us.max(rtt_us);
        assert!(self.ring.len() <= self.samples_max);
    }

    /// Number of samples recorded (all time).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Min, mean, percentiles (nearest rank) and max. All zero when empty.
    pub fn summary(&self) -> RttSummary {
        if self.count == 0 {
            return RttSummary::default();
        }
        let mut sorted = self.ring.clone();
        sorted.sort_unstable();
        let rank = |percent: usize| {
            // Nearest-rank percentile: the smallest sample with at least `percent`% at or below.
            let index = (percent * sorted.len()).div_ceil(100).saturating_sub(1);
            sorted[index.min(sorted.len() - 1)]
        };
        let mean = self.sum_us / u128::from(self.count);
        RttSummary {
            count: self.count,
            min_us: self.min_us,
            mean_us: u64::try_from(mean).unwrap_or(u64::MAX),
            p50_us: rank(50),
            p90_us: rank(90),
            p99_us: rank(99),
            max_us: self.max_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn ping_pong_measures_rtt_once() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut prober = Prober::new(ProbeConfig::default());
        let probe = prober.start(2, 1_000, &mut rng).unwrap();
        let mut buf = [0u8; 32];
        let len = probe.write(&mut buf);
        assert_eq!(
            prober.on_pong(3, &buf[..len], 1_400),
            Err(ProbeError::Unmatched),
            "wrong peer"
        );
        // Padding after the fixed part is ignored.
        assert_eq!(prober.on_pong(2, &buf, 1_250), Ok(250));
        assert_eq!(
            prober.on_pong(2, &buf[..len], 1_300),
            Err(ProbeError::Unmatched),
            "duplicate pong"
        );
        assert_eq!(
            prober.on_pong(2, &buf[..15], 1_300),
            Err(ProbeError::Truncated { len: 15 })
        );
        assert_eq!(prober.unmatched, 2);
        assert_eq!(prober.stats().summary().p50_us, 250);
    }

    #[test]
    fn outstanding_is_bounded_and_expires() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let config = ProbeConfig {
            outstanding_max: 3,
            samples_max: 8,
            timeout_us: 100,
        };
        let mut prober = Prober::new(config);
        for t in 0..3 {
            prober.start(1, t, &mut rng).unwrap();
        }
        assert_eq!(
            prober.start(1, 3, &mut rng),
            Err(ProbeError::TooManyOutstanding)
        );
        assert_eq!(
            prober.expire(100),
            1,
            "only the ping sent at 0 is 100 µs old"
        );
        assert_eq!(prober.expire(1_000), 2);
        assert_eq!(prober.lost, 3);
        assert_eq!(prober.in_flight(), 0);
    }

    #[test]
    fn clock_going_backwards_is_an_error_and_keeps_the_ping() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut prober = Prober::new(ProbeConfig::default());
        let probe = prober.start(1, 500, &mut rng).unwrap();
        let mut buf = [0u8; PROBE_PAYLOAD_LEN];
        probe.write(&mut buf);
        assert_eq!(
            prober.on_pong(1, &buf, 499),
            Err(ProbeError::ClockWentBackwards)
        );
        assert_eq!(prober.on_pong(1, &buf, 510), Ok(10));
    }

    #[test]
    fn percentiles_use_nearest_rank_over_the_ring() {
        let mut stats = RttStats::new(100);
        for rtt in 1..=100 {
            stats.record(rtt);
        }
        let s = stats.summary();
        assert_eq!(
            (s.min_us, s.p50_us, s.p90_us, s.p99_us, s.max_us),
            (1, 50, 90, 99, 100)
        );
        assert_eq!(s.mean_us, 50); // 5050 / 100, rounded down
                                   // The ring keeps the most recent 100: after 100 more samples of 1000, all percentiles move.
        for _ in 0..100 {
            stats.record(1000);
        }
        let s = stats.summary();
        assert_eq!(
            (s.min_us, s.p50_us, s.max_us, s.count),
            (1, 1000, 1000, 200)
        );
    }
}
