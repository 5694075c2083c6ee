//! The packet simulator and the invariant checkers.
//!
//! One *tick* (10 ms of kernel time): apply the schedule's events, tick every live node and
//! handle its Ready, deliver every message due (each delivery is followed by Ready handling,
//! so persist-then-send holds), compact logs, then check the invariants:
//! election safety (≤ 1 leader per term), log matching, leader completeness, state-machine
//! safety (checked at every apply), durability (every committed entry is on a majority of
//! disks), the message-size budget, and commit monotonicity. A run is a safety phase with
//! faults followed by a liveness phase (faults healed) that must converge.

use std::collections::{BTreeMap, BTreeSet};

use consensus::testing::{Network, Routed};
use rand_core::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::adapter::{Applied, Output, RaftImpl};
use crate::schedule::{Event, NetFaults, Schedule};
use crate::sm::{mix, Sm};

/// Largest encoded message allowed (the kernel's envelope is 1400 bytes).
pub const MAX_MESSAGE_BYTES: usize = 1200;
/// A liveness proposal not seen committed is re-proposed after this many ticks.
const REPROPOSE_TICKS: u64 = 15;

/// Size and shape of one run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub nodes: u64,
    pub safety_ticks: u64,
    pub liveness_ticks_max: u64,
    pub faults: bool,
    pub propose_every: u64,
    /// Applied entries between snapshots (ignored by raft-rs).
    pub compact_every: u64,
    /// Commands that must commit everywhere in the liveness phase.
    pub liveness_values: u64,
    /// Network faults to use instead of the schedule's (benchmarks).
    pub net_override: Option<NetFaults>,
}

impl SimConfig {
    /// The short runs of the 10k-seed test.
    pub fn short(nodes: u64) -> SimConfig {
        SimConfig {
            nodes,
            safety_ticks: 300,
            liveness_ticks_max: 600,
            faults: true,
            propose_every: 4,
            compact_every: 25,
            liveness_values: 5,
            net_override: None,
        }
    }

    /// The long soak runs.
    pub fn long(nodes: u64) -> SimConfig {
        SimConfig {
            safety_ticks: 5000,
            liveness_ticks_max: 1500,
            ..SimConfig::short(nodes)
        }
    }
}

/// What a successful run measured.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub first_leader_tick: Option<u64>,
    pub converge_ticks: u64,
    /// Liveness phase: ticks until a leader exists / until every liveness command committed.
    pub heal_leader_ticks: u64,
    pub heal_commit_ticks: u64,
    pub committed: u64,
    pub messages: u64,
    pub crashes: u64,
    pub terms_with_leader: u64,
    pub max_message_bytes: usize,
    /// ReadIndex reads confirmed (and checked for linearizability).
    pub reads: u64,
    /// Crashes that lost or tore unflushed writes (ours only).
    pub torn_crashes: u64,
    /// Restarts whose disk recovery found torn or corrupt records (ours only).
    pub dirty_recoveries: u64,
    /// Snapshots installed from a leader (ours only).
    pub snapshot_installs: u64,
    /// Store failures that stalled a node, and stalls a retry ended (ours only).
    pub store_stalls: u64,
    pub store_recoveries: u64,
}

struct Node<R> {
    id: u64,
    raft: R,
    up: bool,
    sm: Sm,
    last_commit: u64,
    /// (term, leader) last printed in verbose mode.
    traced: Option<(u64, bool)>,
}

struct ChainEntry {
    term: u64,
    /// State-machine hash after applying this entry.
    hash: u64,
    /// Term of the first node seen applying it: the entry was committed in a term ≤ this.
    observed_term: u64,
}

/// One simulated cluster running implementation `R`.
pub struct Sim<R: RaftImpl> {
    seed: u64,
    cfg: SimConfig,
    verbose: bool,
    nodes: Vec<Node<R>>,
    /// The shared test network (`consensus::testing`): cuts, loss, duplication, delay.
    net: Network<Routes<R>>,
    now: u64,
    tear_rng: Xoshiro256PlusPlus,
    schedule: Schedule,
    next_event: usize,
    leaders: BTreeMap<u64, u64>,
    chain: Vec<ChainEntry>,
    committed_values: BTreeSet<u64>,
    /// ReadIndex requests in flight: id -> entries known committed when issued.
    pending_reads: BTreeMap<u64, u64>,
    next_read: u64,
    report: RunReport,
}

type Check = Result<(), String>;

/// An implementation's message on the shared network (routed through the adapter).
struct Routes<R: RaftImpl>(R::Msg);

impl<R: RaftImpl> Clone for Routes<R> {
    fn clone(&self) -> Self {
        Routes(self.0.clone())
    }
}

impl<R: RaftImpl> Routed for Routes<R> {
    fn route(&self) -> (u64, u64) {
        R::route(&self.0)
    }
}

impl<R: RaftImpl> Sim<R> {
    /// A cluster for `seed`; the same seed gives the same run, bit for bit.
    pub fn new(seed: u64, cfg: SimConfig, verbose: bool) -> Sim<R> {
        let voters: Vec<u64> = (1..=cfg.nodes).collect();
        let nodes = voters
            .iter()
            .map(|&id| Node {
                id,
                raft: R::boot(id, &voters, seed, cfg.compact_every),
                up: true,
                sm: Sm::default(),
                last_commit: 0,
                traced: None,
            })
            .collect();
        let schedule = Schedule::generate(
            seed,
            cfg.nodes,
            cfg.safety_ticks,
            cfg.faults,
            cfg.propose_every,
        );
        Sim {
            seed,
            verbose,
            nodes,
            net: Network::new(seed ^ 0x00C0_FFEE, cfg.net_override.unwrap_or(schedule.net)),
            now: 0,
            tear_rng: Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7EA2),
            schedule,
            next_event: 0,
            leaders: BTreeMap::new(),
            chain: Vec::new(),
            committed_values: BTreeSet::new(),
            pending_reads: BTreeMap::new(),
            next_read: 0,
            report: RunReport::default(),
            cfg,
        }
    }

    fn log(&self, what: std::fmt::Arguments) {
        if self.verbose {
            println!("[{} t={:>5}] {what}", R::NAME, self.now);
        }
    }

    /// Safety phase, then liveness phase. Errors name the violated property.
    pub fn run(mut self) -> Result<RunReport, String> {
        let err = |s: &Self, e: String| format!("{} seed={} tick={}: {e}", R::NAME, s.seed, s.now);
        while self.now < self.cfg.safety_ticks {
            self.step_tick().map_err(|e| err(&self, e))?;
        }
        self.heal_all().map_err(|e| err(&self, e))?;
        let start = self.now;
        let first_value = (self.seed << 20) | 0xF_0000;
        let values: Vec<u64> = (0..self.cfg.liveness_values)
            .map(|i| first_value + i)
            .collect();
        let mut proposed_at: BTreeMap<u64, u64> = BTreeMap::new();
        while self.now < start + self.cfg.liveness_ticks_max {
            for &v in &values {
                let due = proposed_at
                    .get(&v)
                    .is_none_or(|&t| self.now >= t + REPROPOSE_TICKS);
                if !self.committed_values.contains(&v) && due && self.propose_value(v, 8) {
                    proposed_at.insert(v, self.now);
                }
            }
            self.step_tick().map_err(|e| err(&self, e))?;
            if self.report.heal_leader_ticks == 0 && self.leader().is_some() {
                self.report.heal_leader_ticks = self.now - start;
            }
            let all_committed = values.iter().all(|v| self.committed_values.contains(v));
            if self.report.heal_commit_ticks == 0 && all_committed {
                self.report.heal_commit_ticks = self.now - start;
            }
            if all_committed && self.converged() {
                self.report.converge_ticks = self.now - start;
                self.report.committed = self.chain.len() as u64;
                let stats = self.nodes.iter().map(|n| n.raft.snapshot_and_stall_stats());
                (
                    self.report.snapshot_installs,
                    self.report.store_stalls,
                    self.report.store_recoveries,
                ) = stats.fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
                self.report.terms_with_leader = self.leaders.len() as u64;
                self.log(format_args!(
                    "converged after {} ticks, {} entries",
                    self.report.converge_ticks,
                    self.chain.len()
                ));
                return Ok(self.report);
            }
        }
        let status: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("{:?} sm={}", n.raft.status(), n.sm.index))
            .collect();
        Err(err(
            &self,
            format!(
                "liveness: no convergence after {} ticks: {status:?}",
                self.cfg.liveness_ticks_max
            ),
        ))
    }

    fn heal_all(&mut self) -> Check {
        self.log(format_args!("---- liveness phase: heal everything ----"));
        self.net.heal();
        self.net.set_faults(NetFaults::NONE);
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.restart(i)?;
            }
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        let len = self.chain.len() as u64;
        let leader = self.nodes.iter().any(|n| n.raft.status().leader);
        leader
            && self
                .nodes
                .iter()
                .all(|n| n.up && n.sm.index == len && n.raft.status().commit == len)
    }

    /// Current leader: the live leader with the highest term.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|n| n.up && n.raft.status().leader)
            .max_by_key(|n| n.raft.status().term)
            .map(|n| n.id)
    }

    /// Ticks elapsed.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether command `value` was applied by some node.
    pub fn is_committed(&self, value: u64) -> bool {
        self.committed_values.contains(&value)
    }

    /// Proposes `value` to the current leader; false if there is none or it refused.
    pub fn propose_value(&mut self, value: u64, pad_bytes: usize) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let mut data = value.to_le_bytes().to_vec();
        data.extend((0..pad_bytes).map(|i| (value as usize + i) as u8));
        let ok = self.nodes[(leader - 1) as usize].raft.propose(data);
        self.drain((leader - 1) as usize).is_ok() && ok
    }

    /// One tick: events, timers, deliveries, compaction, invariants.
    pub fn step_tick(&mut self) -> Check {
        self.now += 1;
        self.apply_events()?;
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                self.nodes[i].raft.tick();
                self.drain(i)?;
            }
        }
        self.deliver_due()?;
        self.compact_all()?;
        self.check_invariants()
    }

    fn apply_events(&mut self) -> Check {
        while let Some((t, event)) = self.schedule.events.get(self.next_event).cloned() {
            if t > self.now {
                break;
            }
            self.next_event += 1;
            self.log(format_args!("event {event:?}"));
            match event {
                Event::Partition { cut, .. } => self.net.set_cut(cut),
                Event::Heal => self.net.heal(),
                Event::Crash { node } => self.crash((node - 1) as usize),
                Event::DiskFault { node, ops } => {
                    let i = (node - 1) as usize;
                    if self.nodes[i].up {
                        self.nodes[i].raft.fail_disk(ops);
                    }
                }
                Event::Restart { node } => self.restart((node - 1) as usize)?,
                Event::Propose { value, pad_bytes } => {
                    self.propose_value(value, pad_bytes);
                    self.issue_reads()?;
                }
            }
        }
        Ok(())
    }

    fn crash(&mut self, i: usize) {
        if !self.nodes[i].up {
            return;
        }
        // Give the node something to persist first, so the crash can tear a real batch:
        // the next message in flight to it (often an append), or a proposal if it leads.
        for msg in self.net.take_to((i + 1) as u64) {
            self.nodes[i].raft.step(msg.0);
        }
        if self.nodes[i].raft.status().leader {
            for _ in 0..3 {
                self.nodes[i].raft.propose(vec![0xC5; 100]);
            }
        }
        self.nodes[i].raft.tick();
        self.nodes[i].raft.crash(&mut self.tear_rng);
        self.nodes[i].up = false;
        self.nodes[i].sm = Sm::default();
        self.report.crashes += 1;
    }

    fn restart(&mut self, i: usize) -> Check {
        if self.nodes[i].up {
            return Ok(());
        }
        let mut out = Output::default();
        self.nodes[i].raft.restart(&mut out);
        let stats = self.nodes.iter().map(|n| n.raft.disk_fault_stats());
        (self.report.torn_crashes, self.report.dirty_recoveries) =
            stats.fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        self.nodes[i].up = true;
        self.nodes[i].last_commit = 0;
        self.log(format_args!(
            "node {} restarted: {:?}",
            i + 1,
            self.nodes[i].raft.status()
        ));
        self.handle_output(i, out)
    }

    fn drain(&mut self, i: usize) -> Check {
        let mut out = Output::default();
        self.nodes[i].raft.drain(&mut out);
        self.handle_output(i, out)
    }

    fn handle_output(&mut self, i: usize, out: Output<R::Msg>) -> Check {
        for applied in out.applied {
            self.apply(i, applied)?;
        }
        for (ctx, index) in out.reads {
            self.check_read(i, ctx, index)?;
        }
        for msg in out.messages {
            self.send(msg)?;
        }
        Ok(())
    }

    fn send(&mut self, msg: R::Msg) -> Check {
        self.report.messages += 1;
        if let Some(bytes) = R::encoded_bytes(&msg) {
            self.report.max_message_bytes = self.report.max_message_bytes.max(bytes);
            if bytes >= MAX_MESSAGE_BYTES {
                return Err(format!(
                    "message of {bytes} bytes exceeds the envelope budget: {msg:?}"
                ));
            }
        }
        self.net.send(Routes(msg), self.now);
        Ok(())
    }

    fn deliver_due(&mut self) -> Check {
        // The network drops what a partition cut while in flight; a down node loses the rest.
        while let Some(Routes(msg)) = self.net.pop_due(self.now) {
            let i = (R::route(&msg).1 - 1) as usize;
            if !self.nodes[i].up {
                continue;
            }
            if self.verbose && std::env::var_os("SIM_TRACE_MESSAGES").is_some() {
                self.log(format_args!("deliver {msg:?}"));
            }
            self.nodes[i].raft.step(msg);
            self.drain(i)?;
        }
        Ok(())
    }

    fn compact_all(&mut self) -> Check {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                continue;
            }
            let status = self.nodes[i].raft.status();
            if status.applied != self.nodes[i].sm.index {
                return Err(format!(
                    "node {} raft applied {} but state machine at {}",
                    i + 1,
                    status.applied,
                    self.nodes[i].sm.index
                ));
            }
            if self.nodes[i].raft.wants_compaction(status.applied) {
                let data = self.nodes[i].sm.encode();
                self.nodes[i].raft.compact(status.applied, data);
            }
        }
        Ok(())
    }

    /// Issues a ReadIndex read on every node that believes it leads (a deposed leader that
    /// has not noticed yet included), remembering what was committed at that moment.
    fn issue_reads(&mut self) -> Check {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up || !self.nodes[i].raft.status().leader {
                continue;
            }
            self.next_read += 1;
            let ctx = self.next_read;
            // Registered first: a single-voter group may confirm the read synchronously.
            self.pending_reads.insert(ctx, self.chain.len() as u64);
            if !self.nodes[i].raft.read_index(ctx) {
                self.pending_reads.remove(&ctx);
            }
            self.drain(i)?;
        }
        Ok(())
    }

    /// Linearizability of ReadIndex: a read may be served at `index` only if every entry
    /// known committed when the read was issued is at or below `index`.
    fn check_read(&mut self, i: usize, ctx: u64, index: u64) -> Check {
        let Some(committed_at_issue) = self.pending_reads.remove(&ctx) else {
            return Err(format!(
                "node {} confirmed unknown or duplicate read {ctx}",
                i + 1
            ));
        };
        if index < committed_at_issue {
            return Err(format!("linearizability: read {ctx} on node {} at index {index} misses committed entry {committed_at_issue}", i + 1));
        }
        self.report.reads += 1;
        Ok(())
    }

    /// State-machine safety: every node applies the same entry at each index, in order.
    fn apply(&mut self, i: usize, applied: Applied) -> Check {
        let id = i + 1;
        match applied {
            Applied::Snapshot { index, data } => {
                let sm = Sm::decode(&data).ok_or(format!("node {id}: snapshot bytes corrupted"))?;
                let want = self.chain.get((index - 1) as usize).map(|c| c.hash);
                if sm.index != index || want != Some(sm.hash) {
                    return Err(format!(
                        "node {id}: snapshot at {index} differs from the applied history"
                    ));
                }
                self.log(format_args!("node {id} loaded snapshot at {index}"));
                self.nodes[i].sm = sm;
            }
            Applied::Entry { index, term, data } => {
                let sm = self.nodes[i].sm;
                if index != sm.index + 1 {
                    return Err(format!("node {id}: applied {index} after {}", sm.index));
                }
                let hash = mix(sm.hash, term, &data);
                if let Some(existing) = self.chain.get((index - 1) as usize) {
                    if existing.term != term || existing.hash != hash {
                        return Err(format!(
                            "state machine safety: node {id} applied a different entry at {index}"
                        ));
                    }
                } else {
                    let value = (data.len() >= 8)
                        .then(|| u64::from_le_bytes(data[0..8].try_into().expect("8")));
                    let observed_term = self.nodes[i].raft.status().term;
                    self.chain.push(ChainEntry {
                        term,
                        hash,
                        observed_term,
                    });
                    if let Some(v) = value {
                        self.committed_values.insert(v);
                    }
                }
                self.nodes[i].sm = Sm { index, hash };
            }
        }
        Ok(())
    }

    fn trace_roles(&mut self) {
        for i in 0..self.nodes.len() {
            let now = if self.nodes[i].up {
                Some(self.nodes[i].raft.status())
            } else {
                None
            };
            let key = now.map(|s| (s.term, s.leader));
            if key != self.nodes[i].traced {
                self.nodes[i].traced = key;
                if let Some(s) = now {
                    self.log(format_args!(
                        "node {} term {} {} commit {}",
                        i + 1,
                        s.term,
                        if s.leader {
                            "LEADER"
                        } else {
                            "follower/candidate"
                        },
                        s.commit
                    ));
                }
            }
        }
    }

    fn check_invariants(&mut self) -> Check {
        if self.verbose {
            self.trace_roles();
        }
        self.check_election_safety()?;
        self.check_commit_monotonic()?;
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        for (k, &a) in up.iter().enumerate() {
            for &b in &up[k + 1..] {
                self.check_log_matching(a, b)?;
            }
        }
        self.check_leader_completeness()?;
        self.check_durability()
    }

    fn check_election_safety(&mut self) -> Check {
        for n in self.nodes.iter().filter(|n| n.up) {
            let s = n.raft.status();
            if !s.leader {
                continue;
            }
            if self.report.first_leader_tick.is_none() {
                self.report.first_leader_tick = Some(self.now);
            }
            let leader = *self.leaders.entry(s.term).or_insert(n.id);
            if leader != n.id {
                return Err(format!(
                    "election safety: nodes {leader} and {} both lead term {}",
                    n.id, s.term
                ));
            }
        }
        Ok(())
    }

    fn check_commit_monotonic(&mut self) -> Check {
        for n in self.nodes.iter_mut().filter(|n| n.up) {
            let commit = n.raft.status().commit;
            if commit < n.last_commit {
                return Err(format!(
                    "node {} commit went back {} -> {commit}",
                    n.id, n.last_commit
                ));
            }
            n.last_commit = commit;
        }
        Ok(())
    }

    /// Log matching (§5.3): equal (index, term) implies equal terms at every earlier index.
    fn check_log_matching(&self, a: usize, b: usize) -> Check {
        let (ra, rb) = (&self.nodes[a].raft, &self.nodes[b].raft);
        let (sa, sb) = (ra.status(), rb.status());
        let lo = sa.snapshot_index.max(sb.snapshot_index) + 1;
        let mut i = sa.last_index.min(sb.last_index);
        while i >= lo && ra.log_term(i) != rb.log_term(i) {
            i -= 1;
        }
        while i >= lo {
            if ra.log_term(i) != rb.log_term(i) {
                return Err(format!(
                    "log matching: nodes {} and {} differ at {i} below a common entry",
                    a + 1,
                    b + 1
                ));
            }
            i -= 1;
        }
        Ok(())
    }

    /// Leader completeness (§5.4): a leader of a later term holds every committed entry.
    fn check_leader_completeness(&self) -> Check {
        for n in self.nodes.iter().filter(|n| n.up) {
            let s = n.raft.status();
            if !s.leader {
                continue;
            }
            for (k, c) in self
                .chain
                .iter()
                .enumerate()
                .skip(s.snapshot_index as usize)
            {
                let index = k as u64 + 1;
                if c.observed_term < s.term && n.raft.log_term(index) != Some(c.term) {
                    return Err(format!(
                        "leader completeness: leader {} of term {} lacks committed entry {index}",
                        n.id, s.term
                    ));
                }
            }
        }
        Ok(())
    }

    /// Durability: every committed entry is on the disks of a majority (up or crashed).
    fn check_durability(&self) -> Check {
        let quorum = self.nodes.len() / 2 + 1;
        for (k, c) in self.chain.iter().enumerate() {
            let index = k as u64 + 1;
            let holders = self
                .nodes
                .iter()
                .filter(|n| n.raft.durable_has(index, c.term))
                .count();
            if holders < quorum {
                let detail: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| {
                        if n.up {
                            format!(
                                "{}: up {:?} term@{index}={:?}",
                                n.id,
                                n.raft.status(),
                                n.raft.log_term(index)
                            )
                        } else {
                            format!("{}: down", n.id)
                        }
                    })
                    .collect();
                return Err(format!("durability: committed entry {index} (term {}) is on {holders} disks; {detail:?}", c.term));
            }
        }
        Ok(())
    }
}
