//! SWIM tunables: one [`Config`] with documented defaults, and its validation.
//!
//! The defaults ([`Config::lan`]) target the Xylem goal: detect a killed or hung node in
//! under 500 ms on a 3-node LAN-like fabric, with zero false positives when there is no
//! loss. `docs/membership.md` derives every number; the short version is in each field's
//! doc. [`Config::wan`] is a 10x slower preset for lossy or slow fabrics (TCG guests).

/// Largest metadata blob a node may carry (node name, role, address hint).
pub const MAX_META_BYTES: usize = 64;

/// All SWIM time and size parameters. Times are milliseconds of the caller's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seed of the state machine's Xoshiro256++ (probe order, ping-req peers, gossip
    /// targets). Give every node a different seed.
    pub seed: u64,
    /// SWIM protocol period T': one probe per period (default 100 ms).
    pub probe_interval_ms: u64,
    /// How long to wait for a direct ack before asking `indirect_probes` peers (default
    /// 40 ms: ~10 LAN round trips, leaves 60 ms of the period for the indirect path).
    pub probe_timeout_ms: u64,
    /// k of SWIM §4.1: peers asked to ping-req a silent target (default 3).
    pub indirect_probes: usize,
    /// Suspicion timeout before any log-n scaling (default 200 ms). The Lifeguard minimum
    /// is `suspicion_base_ms * max(1, log10 n)`.
    pub suspicion_base_ms: u64,
    /// Lifeguard beta: the timeout starts at `suspicion_max_mult * min` and shrinks
    /// towards `min` as independent suspicions arrive (default 3).
    pub suspicion_max_mult: u64,
    /// Lifeguard K: independent confirmations that bring the timeout down to `min`
    /// (default 3; capped at n - 2 since that is all the other observers there are).
    pub suspicion_confirmations: usize,
    /// lambda of SWIM §4.4: each update is piggybacked `lambda * ceil(log2(n + 1))` times
    /// (default 3).
    pub retransmit_mult: u32,
    /// Dedicated gossip round (memberlist-style) while updates are pending (default 20 ms).
    pub gossip_interval_ms: u64,
    /// Members sent a gossip message per gossip round (default 3).
    pub gossip_fanout: usize,
    /// Lifeguard local health multiplier ceiling S: probe timeouts and periods scale by
    /// `(lhm + 1)` (default 8).
    pub awareness_max: u32,
    /// How often to ping one random Down member so partitions heal (default 500 ms).
    pub reconnect_interval_ms: u64,
    /// How often an unanswered join or sync page request is resent (default 300 ms).
    pub join_retry_ms: u64,
    /// Anti-entropy: full paged state sync with a random member (default 30 s; 0 = off).
    pub sync_interval_ms: u64,
    /// Down or Left members are forgotten after this long (default 10 min).
    pub down_retain_ms: u64,
    /// Member table capacity, self excluded (default 4096).
    pub max_members: usize,
    /// Broadcast queue capacity; overflow drops the most-transmitted update (default 512).
    pub max_pending_updates: usize,
    /// Piggybacked updates per message, on top of the byte budget (default 16).
    pub max_piggyback: usize,
    /// Worst-case encoded size of any message (default 1200, under the 1400-byte datagram).
    pub max_message_bytes: usize,
    /// Output queue capacity between drains; overflow is counted and dropped (default 8192).
    pub max_outputs: usize,
    /// Concurrent ping-req relays served for other nodes (default 64).
    pub max_relays: usize,
    /// How late a call may come after our own deadline (or how late the driver may report
    /// its own timer) before we conclude that *we* were not running: the driver's timer
    /// granularity plus scheduling noise (the kernel ticks every 10 ms; TCG guests on a
    /// loaded host see 30-60 ms routinely, which are harmless). Later than this, the node
    /// suspects itself: it drops the probe in flight and withholds its own verdicts for
    /// a while (default 50 ms, one probe period).
    pub late_tolerance_ms: u64,
    /// Whether lateness is acted on at all (probes not judged on time we did not run, the
    /// self-suspicion above). Always on in the kernel; off only to show what it prevents
    /// (the simulator's guard tests) (default true).
    pub lateness_checks: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self::lan()
    }
}

impl Config {
    /// LAN defaults: detect a dead node in < 500 ms at n = 3.
    pub fn lan() -> Self {
        Self {
            seed: 0,
            probe_interval_ms: 50,
            probe_timeout_ms: 25,
            indirect_probes: 3,
            suspicion_base_ms: 80,
            suspicion_max_mult: 2,
            suspicion_confirmations: 3,
            retransmit_mult: 3,
            gossip_interval_ms: 20,
            gossip_fanout: 3,
            awareness_max: 8,
            reconnect_interval_ms: 500,
            join_retry_ms: 300,
            sync_interval_ms: 30_000,
            down_retain_ms: 600_000,
            max_members: 4096,
            max_pending_updates: 512,
            max_piggyback: 16,
            max_message_bytes: 1200,
            max_outputs: 8192,
            max_relays: 64,
            late_tolerance_ms: 50,
            lateness_checks: true,
        }
    }

    /// WAN / slow-guest preset: every timer 10x the LAN one.
    pub fn wan() -> Self {
        Self {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 500,
            suspicion_base_ms: 2_000,
            gossip_interval_ms: 200,
            reconnect_interval_ms: 5_000,
            join_retry_ms: 2_000,
            late_tolerance_ms: 500,
            ..Self::lan()
        }
    }

    /// The same config with another seed (one per node).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Rejects configs the state machine cannot honour.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.probe_interval_ms == 0 || self.gossip_interval_ms == 0 {
            return Err(ConfigError::ZeroInterval);
        }
        if self.reconnect_interval_ms == 0 || self.join_retry_ms == 0 {
            return Err(ConfigError::ZeroInterval);
        }
        if self.probe_timeout_ms == 0 || self.probe_timeout_ms >= self.probe_interval_ms {
            return Err(ConfigError::ProbeTimeoutNotBelowInterval);
        }
        if self.suspicion_base_ms == 0 || self.suspicion_max_mult == 0 {
            return Err(ConfigError::ZeroSuspicion);
        }
        if self.retransmit_mult == 0 || self.max_piggyback == 0 || self.max_pending_updates == 0 {
            return Err(ConfigError::ZeroGossipBound);
        }
        // A message must fit its header plus one full-size update, and the datagram.
        if self.max_message_bytes < 256 || self.max_message_bytes > 1400 {
            return Err(ConfigError::MessageBytesOutOfRange);
        }
        if self.max_members == 0 || self.max_outputs < 16 || self.max_relays == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        // A zero tolerance would make every driver's timer granularity a stall.
        if self.late_tolerance_ms == 0 {
            return Err(ConfigError::ZeroInterval);
        }
        Ok(())
    }
}

/// Why a [`Config`] was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// An interval is zero (the state machine would spin).
    ZeroInterval,
    /// The direct probe timeout must leave room for the indirect path inside the period.
    ProbeTimeoutNotBelowInterval,
    /// Suspicion base or multiplier is zero (nodes would be declared down on first miss).
    ZeroSuspicion,
    /// A gossip bound is zero (nothing would ever be disseminated).
    ZeroGossipBound,
    /// `max_message_bytes` outside 256..=1400.
    MessageBytesOutOfRange,
    /// A capacity is zero (or the output queue is tiny).
    ZeroCapacity,
}
