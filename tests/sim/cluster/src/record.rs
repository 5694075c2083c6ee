//! What the nodes did, as the checks need it, and the checks that run as it happens.
//!
//! The nodes report every spawn and stop (with whether they had quorum by their own inputs and
//! whether they acted on their committed binding), every committed entry (to compare logs
//! across nodes), every control event (commits with their reasons, new leaders, lease expiry)
//! and every write outcome. A rule broken here is a [`Violation`]; the first one ends the run.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use xylem::command::{Command, Reason};
use xylem::config::RefillPolicy;
use xylem::name::CellName;
use xylem::node::Event;
use xylem::reconcile::StopReason;
use xylem::write::WriteError;

/// A spawn or a stop.
#[derive(Clone, Debug)]
pub enum Act {
    Spawn(CellName),
    Stop(CellName, StopReason),
}

/// Counters that prove the run exercised what it claims (the guard test reads them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub spawns: u64,
    pub stops: u64,
    pub lease_stops: u64,
    pub spawn_failures: u64,
    pub compactions: u64,
    pub snapshot_installs: u64,
    pub membership_events: u64,
    pub leader_terms: u64,
    pub refills: u64,
    pub fenced_unbinds: u64,
    pub writes_ok: u64,
    pub writes_forwarded_ok: u64,
    pub writes_failed: u64,
    pub writes_timed_out: u64,
    pub writes_lost: u64,
    pub writes_rejected: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub pauses: u64,
    pub partitions: u64,
    pub one_way: u64,
    pub isolations: u64,
    /// Replacements started, promoted, and rollbacks (drains and rolling updates).
    pub surges: u64,
    pub promotes: u64,
    pub rollbacks: u64,
    /// Autoscaler decisions committed.
    pub autoscales: u64,
    /// Maintenance changes committed (cordon, drain, uncordon).
    pub maintains: u64,
    /// Service addresses seen answered, counted once per (address, owner epoch): a second
    /// one for an address is a takeover.
    pub owner_epochs: u64,
    /// Of those, an address answered at a new epoch after it had been at another: moves.
    pub owner_takeovers: u64,
    /// Steps in which two nodes answered for one address (at different epochs: the old
    /// owner had not yet applied the move).
    pub owner_overlaps: u64,
}

/// FNV-1a, to compare entries cheaply.
pub fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Everything recorded during one run.
#[derive(Default)]
pub struct Recorder {
    pub counts: Counts,
    pub violations: Vec<String>,
    /// The committed log as first seen: index -> (entry hash, real ms).
    pub log: BTreeMap<u64, (u64, u64)>,
    /// Writes answered "committed at index": index -> (entry hash, node).
    expect_at: Vec<(u64, u64, u64, bool)>,
    /// Real ms of each committed refill (first sighting).
    refills: VecDeque<u64>,
    /// Scheduler entries already counted.
    seen_commits: BTreeSet<u64>,
    /// Real ms at which each term got a leader.
    terms: BTreeMap<u64, u64>,
    /// Since when each node has been cut off from every other node (ground truth).
    pub isolated_since: BTreeMap<u64, Option<u64>>,
    pub refill_policy: Option<RefillPolicy>,
    /// A trace hash of every act and commit, for the exact-replay test.
    pub trace: u64,
    /// Print acts and events as they happen (`sim-cluster seed N`).
    pub verbose: bool,
    /// The calm phase: the load is steady, so the autoscaler may only move one way.
    pub calm: bool,
    /// Operate entries already checked, and each service's scaling direction in the calm.
    seen_operate: BTreeSet<u64>,
    scale_direction: BTreeMap<(String, u32), bool>,
}

/// A node cut off from every other node for this long must not act (except lease stops):
/// its Raft times the leader out within 300 ms (election timeout), which ends its quorum.
pub const ISOLATED_ACT_MS: u64 = 1_000;

impl Recorder {
    fn mix(&mut self, v: u64) {
        self.trace = (self.trace ^ v).wrapping_mul(0x0100_0000_01b3);
    }

    pub fn violation(&mut self, text: String) {
        self.violations.push(text);
    }

    /// A spawn or stop by `node`; `quorum` and `binding` as the node saw them at that moment.
    pub fn act(
        &mut self,
        node: u64,
        step: u64,
        real_ms: u64,
        act: Act,
        quorum: bool,
        binding: bool,
    ) {
        let lease_stop = matches!(act, Act::Stop(_, StopReason::LeaseExpired));
        if self.verbose {
            println!("[{real_ms:>6} ms] node {node} {act:?} quorum={quorum} binding={binding}");
        }
        match &act {
            Act::Spawn(name) => {
                self.counts.spawns += 1;
                self.mix(hash(format!("s{node}{name}").as_bytes()));
            }
            Act::Stop(name, _) => {
                self.counts.stops += 1;
                self.counts.lease_stops += u64::from(lease_stop);
                self.mix(hash(format!("x{node}{name}").as_bytes()));
            }
        }
        if !quorum && !lease_stop {
            self.violation(format!(
                "step {step}: node {node} without quorum did {act:?}"
            ));
        }
        if !binding {
            self.violation(format!(
                "step {step}: node {node} spawned {act:?}, not its committed binding"
            ));
        }
        let isolated = self
            .isolated_since
            .get(&node)
            .copied()
            .flatten()
            .is_some_and(|since| real_ms.saturating_sub(since) > ISOLATED_ACT_MS);
        if isolated && !lease_stop {
            self.violation(format!(
                "step {step}: node {node}, cut off for over {ISOLATED_ACT_MS} ms, did {act:?}"
            ));
        }
    }

    /// A committed entry applied on `node`: every node must see the same entry at an index.
    pub fn committed(&mut self, node: u64, index: u64, data: &[u8], real_ms: u64) {
        let h = hash(data);
        match self.log.get(&index) {
            Some((seen, _)) if *seen != h => {
                self.violation(format!(
                    "node {node} applied a different entry at index {index}"
                ));
            }
            Some(_) => {}
            None => {
                self.log.insert(index, (h, real_ms));
                self.mix(h ^ index);
            }
        }
    }

    pub fn snapshot_installed(&mut self, _node: u64) {
        self.counts.snapshot_installs += 1;
    }

    pub fn disk_failure(&mut self, node: u64, why: String) {
        self.violation(format!("node {node}: its Raft disk failed: {why}"));
    }

    /// A control event of `node`.
    pub fn event(&mut self, node: u64, _step: u64, real_ms: u64, event: Event) {
        if self.verbose {
            println!("[{real_ms:>6} ms] node {node} {event:?}");
        }
        match event {
            Event::Leading { term } => {
                if self.terms.insert(term, real_ms).is_none() {
                    self.counts.leader_terms += 1;
                }
            }
            Event::Committed {
                index,
                command,
                result: Ok(_),
            } => self.on_commit_event(node, index, &command, real_ms),
            _ => {}
        }
    }

    fn on_commit_event(&mut self, _node: u64, index: u64, command: &Command, real_ms: u64) {
        let reason = match command {
            Command::Assign { reason, .. } | Command::Unassign { reason, .. } => *reason,
            _ => return,
        };
        // Count each committed entry once, whichever node applies it first.
        if !self.seen_commits.insert(index) {
            return;
        }
        if matches!(command, Command::Unassign { .. }) && reason != Reason::ScaleDown {
            self.counts.fenced_unbinds += 1;
        }
        if reason.is_refill() {
            self.counts.refills += 1;
            self.refills.push_back(real_ms);
            self.check_budget(real_ms);
        }
    }

    /// The operate rules on a committed, applied entry (`desired` is the state right after):
    /// nothing new lands on a cordoned node; autoscaling stays within the bounds and, under
    /// the calm's steady load, never changes direction (no oscillation).
    pub fn check_operate(
        &mut self,
        node: u64,
        index: u64,
        command: &Command,
        desired: &xylem::desired::DesiredState,
    ) {
        if !self.seen_operate.insert(index) {
            return;
        }
        let targets: Vec<u64> = match command {
            Command::Assign { node, .. } | Command::Surge { node, .. } => vec![*node],
            Command::AutoScale { place, .. } => place.iter().map(|(_, n, _)| *n).collect(),
            _ => Vec::new(),
        };
        for target in targets {
            if desired.is_cordoned(target) {
                self.violation(format!(
                    "index {index} (applied on node {node}): {} lands on cordoned node {target}",
                    command.kind()
                ));
            }
        }
        match command {
            Command::Surge { .. } => self.counts.surges += 1,
            Command::Promote { .. } => self.counts.promotes += 1,
            Command::Rollback { .. } => self.counts.rollbacks += 1,
            Command::Maintain { .. } | Command::SetDraining { .. } => self.counts.maintains += 1,
            Command::AutoScale {
                service, from, to, ..
            } => {
                self.counts.autoscales += 1;
                if let Some(spec) = desired.service(service) {
                    if !(spec.min_replicas..=spec.max_replicas).contains(to) {
                        self.violation(format!(
                            "index {index}: {service} autoscaled to {to}, outside {}..={}",
                            spec.min_replicas, spec.max_replicas
                        ));
                    }
                }
                // Per version: a rollout to another payload changes the load legitimately.
                let generation = desired.ops(service).map_or(0, |o| o.current);
                let key = (service.clone(), generation);
                if self.calm {
                    let out = to > from;
                    if let Some(&was) = self.scale_direction.get(&key) {
                        if was != out {
                            self.violation(format!(
                                "index {index}: {service} autoscaled {from}->{to} against its earlier direction under a steady load (oscillation)"
                            ));
                        }
                    }
                    self.scale_direction.insert(key, out);
                }
            }
            _ => {}
        }
    }

    /// Refills in any 60 s window: at most `budget_per_minute + burst` per leader that held
    /// office in the window (a new leader starts with a full bucket).
    fn check_budget(&mut self, real_ms: u64) {
        let Some(policy) = self.refill_policy.clone() else {
            return;
        };
        let window_start = real_ms.saturating_sub(60_000);
        while self.refills.front().is_some_and(|&t| t < window_start) {
            self.refills.pop_front();
        }
        // Leaders in office during the window: those elected in it, plus the one before.
        let elected = self.terms.values().filter(|&&t| t >= window_start).count() as u64 + 1;
        let cap = u64::from(policy.budget_per_minute) + u64::from(policy.budget_burst) * elected;
        let n = self.refills.len() as u64;
        if n > cap {
            self.violation(format!(
                "{n} refills within 60 s at {real_ms} ms, above the budget {cap} ({elected} leader terms)"
            ));
        }
    }

    /// A write's outcome at `node`, for the command whose entry hashes to `h`.
    pub fn write_result(
        &mut self,
        node: u64,
        h: u64,
        forwarded: bool,
        result: &Result<u64, WriteError>,
    ) {
        match result {
            Ok(index) => {
                self.counts.writes_ok += 1;
                self.counts.writes_forwarded_ok += u64::from(forwarded);
                self.expect_at.push((*index, h, node, true));
            }
            Err(WriteError::Lost { index }) => {
                self.counts.writes_lost += 1;
                self.expect_at.push((*index, h, node, false));
            }
            Err(WriteError::Rejected { index, .. }) => {
                self.counts.writes_rejected += 1;
                self.expect_at.push((*index, h, node, true));
            }
            Err(WriteError::TimedOut { .. }) => self.counts.writes_timed_out += 1,
            Err(_) => self.counts.writes_failed += 1,
        }
        self.check_writes();
    }

    /// Every answered write against the committed log: "committed at i" means entry i is
    /// that write; "lost at i" means it is not.
    pub fn check_writes(&mut self) {
        let mut pending = Vec::new();
        for (index, h, node, want_equal) in std::mem::take(&mut self.expect_at) {
            match self.log.get(&index) {
                None => pending.push((index, h, node, want_equal)),
                Some((seen, _)) if (*seen == h) != want_equal => self.violation(format!(
                    "node {node} answered a write {} index {index}, but the log says otherwise",
                    if want_equal {
                        "committed at"
                    } else {
                        "lost at"
                    }
                )),
                Some(_) => {}
            }
        }
        self.expect_at = pending;
    }

    /// Answered writes whose index never showed up in any log (checked at the end).
    pub fn unresolved_writes(&self) -> usize {
        self.expect_at.len()
    }
}
