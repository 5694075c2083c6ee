//! The event-driven simulator: N [`Swim`] nodes over a seeded lossy, delaying,
//! partitionable network, with crashes, pauses, starvation and restarts.
//!
//! A *pause* is a hung VM whose inbound traffic is lost; *starvation* is a VM the host does
//! not schedule for a while: inbound messages wait in its socket buffer and it runs again
//! at a known time, handling its overdue timer first and the queued messages after (the
//! order that tempts it most to blame its peers for its own silence).
//!
//! Everything comes from one seed (a Xoshiro256++ for the network, and per-node seeds
//! derived from it), and the event queue is ordered by (time, insertion seq), so a run
//! replays bit for bit. Nodes are ticked exactly at their `next_deadline_ms`, which keeps
//! 1000-node runs cheap: no fixed-step polling.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use membership::swim::{Config, Event, MemberState, Message, Output, Swim};
use membership::NodeId;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Network behaviour for every link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Per-message loss, in parts per million.
    pub loss_ppm: u32,
    /// Base one-way delay.
    pub delay_ms: u64,
    /// Uniform extra delay in 0..=jitter_ms.
    pub jitter_ms: u64,
}

impl NetConfig {
    /// A LAN: 1-2 ms one way, no loss.
    pub fn lan() -> Self {
        Self {
            loss_ppm: 0,
            delay_ms: 1,
            jitter_ms: 1,
        }
    }

    /// The LAN with `percent` % loss.
    pub fn lossy(percent: u32) -> Self {
        Self {
            loss_ppm: percent * 10_000,
            ..Self::lan()
        }
    }
}

/// How the cluster forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Everyone starts knowing everyone (a pre-formed cluster).
    Static,
    /// Node 0 starts alone; node i joins through node 0 at `i * stagger_ms`.
    Seed { stagger_ms: u64 },
    /// The kernel's way: node i boots at `i * stagger_ms` knowing every other node as a
    /// static peer (`add_peer`, assumed alive at incarnation 0), so the early nodes probe
    /// peers that are not up yet.
    StaticPeers { stagger_ms: u64 },
}

/// One simulation's parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub n: usize,
    pub seed: u64,
    pub swim: Config,
    pub net: NetConfig,
    pub bootstrap: Bootstrap,
    /// Ticks only on multiples of this (the kernel's reactor ticks every 10 ms), so every
    /// deadline is seen up to one quantum late; 1 = exactly on time.
    pub tick_quantum_ms: u64,
}

impl SimConfig {
    /// `n` static LAN nodes with default SWIM timing.
    pub fn lan(n: usize, seed: u64) -> Self {
        Self {
            n,
            seed,
            swim: Config::lan(),
            net: NetConfig::lan(),
            bootstrap: Bootstrap::Static,
            tick_quantum_ms: 1,
        }
    }
}

/// One membership event as observed by one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub t_ms: u64,
    pub observer: NodeId,
    pub event: Event,
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: NodeId,
        epoch: u32,
        msg: Message,
    },
    Tick {
        node: usize,
        generation: u64,
    },
    Join {
        node: usize,
        seed: NodeId,
    },
    Boot {
        node: usize,
    },
}

struct Queued {
    t_ms: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.t_ms, self.seq) == (other.t_ms, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.t_ms, self.seq).cmp(&(other.t_ms, other.seq))
    }
}

struct Node {
    swim: Option<Swim>,
    paused: bool,
    /// Not scheduled until then: inbound messages wait, ticks are deferred.
    starved_until: Option<u64>,
    /// Bumped on every crash so in-flight messages to the old life are dropped.
    epoch: u32,
    tick_generation: u64,
    tick_at_ms: Option<u64>,
}

/// Message counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub blocked: u64,
}

/// The simulator.
pub struct Sim {
    pub config: SimConfig,
    now_ms: u64,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    rng: Xoshiro256PlusPlus,
    /// Partition group per node: two nodes talk iff their groups are equal.
    group: Vec<u32>,
    /// One-way blocked links (from, to): asymmetric partitions.
    blocked: BTreeSet<(usize, usize)>,
    pub log: Vec<Record>,
    pub net_stats: NetStats,
    /// Print every event as it happens (the `seed N` replay).
    pub verbose: bool,
}

impl Sim {
    /// Builds and bootstraps the cluster at t = 0.
    pub fn new(config: SimConfig) -> Self {
        assert!(config.n >= 1);
        let rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
        let n = config.n;
        let mut sim = Self {
            now_ms: 0,
            nodes: Vec::with_capacity(n),
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            group: vec![0; n],
            blocked: BTreeSet::new(),
            log: Vec::new(),
            net_stats: NetStats::default(),
            verbose: false,
            config,
        };
        for i in 0..n {
            let swim = sim.fresh_swim(i, 0);
            sim.nodes.push(Node {
                swim: Some(swim),
                paused: false,
                starved_until: None,
                epoch: 0,
                tick_generation: 0,
                tick_at_ms: None,
            });
        }
        sim.bootstrap();
        sim
    }

    fn fresh_swim(&self, i: usize, epoch: u32) -> Swim {
        let seed = self.config.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ ((i as u64) << 20)
            ^ u64::from(epoch);
        let meta = format!("node-{i}");
        Swim::new(
            self.config.swim.clone().with_seed(seed),
            i as NodeId,
            meta.as_bytes(),
        )
        .expect("valid config")
    }

    fn bootstrap(&mut self) {
        let n = self.config.n;
        match self.config.bootstrap {
            Bootstrap::Static => {
                for (i, node) in self.nodes.iter_mut().enumerate() {
                    let swim = node.swim.as_mut().unwrap();
                    for j in 0..n {
                        if i != j {
                            let meta = format!("node-{j}");
                            swim.add_member(
                                j as NodeId,
                                membership::swim::INITIAL_INCARNATION,
                                meta.as_bytes(),
                            )
                            .expect("add member");
                        }
                    }
                    // Pre-formed: the NodeUp of bootstrap are not interesting.
                    swim.drain_outputs().for_each(drop);
                }
                for i in 0..n {
                    self.schedule_tick(i, 0);
                }
            }
            Bootstrap::Seed { stagger_ms } => {
                self.schedule_tick(0, 0);
                for i in 1..n {
                    self.push(i as u64 * stagger_ms, Ev::Join { node: i, seed: 0 });
                }
            }
            Bootstrap::StaticPeers { stagger_ms } => {
                for i in 0..n {
                    // Not booted yet: no state machine until its boot event.
                    self.nodes[i].swim = None;
                    self.push(i as u64 * stagger_ms, Ev::Boot { node: i });
                }
            }
        }
    }

    fn boot(&mut self, i: usize) {
        let mut swim = self.fresh_swim(i, self.nodes[i].epoch);
        for j in (0..self.config.n).filter(|&j| j != i) {
            swim.add_peer(j as NodeId).expect("add peer");
        }
        self.nodes[i].swim = Some(swim);
        self.after_call(i, false);
    }

    /// Current simulated time.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Number of nodes (crashed ones included).
    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    fn push(&mut self, t_ms: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            t_ms,
            seq: self.seq,
            ev,
        }));
    }

    fn schedule_tick(&mut self, i: usize, t_ms: u64) {
        let node = &mut self.nodes[i];
        if node.tick_at_ms.is_some_and(|at| at <= t_ms) {
            return;
        }
        node.tick_generation += 1;
        node.tick_at_ms = Some(t_ms);
        let generation = node.tick_generation;
        self.push(
            t_ms,
            Ev::Tick {
                node: i,
                generation,
            },
        );
    }

    /// Processes every event up to and including `t_ms`, then sets the clock to it.
    pub fn run_until(&mut self, t_ms: u64) {
        while let Some(Reverse(head)) = self.queue.peek() {
            if head.t_ms > t_ms {
                break;
            }
            let Reverse(item) = self.queue.pop().unwrap();
            assert!(item.t_ms >= self.now_ms, "time went backwards");
            self.now_ms = item.t_ms;
            self.process(item.ev);
        }
        self.now_ms = self.now_ms.max(t_ms);
    }

    /// Runs in `step_ms` slices until `done` holds or `deadline_ms`; returns the time it
    /// first held (checked at slice ends).
    pub fn run_until_pred(
        &mut self,
        deadline_ms: u64,
        step_ms: u64,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<u64> {
        loop {
            if done(self) {
                return Some(self.now_ms);
            }
            if self.now_ms >= deadline_ms {
                return None;
            }
            let next = (self.now_ms + step_ms).min(deadline_ms);
            self.run_until(next);
        }
    }

    fn process(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                from,
                epoch,
                msg,
            } => {
                let node = &mut self.nodes[to];
                if node.epoch != epoch || node.paused || node.swim.is_none() {
                    self.net_stats.lost += 1;
                    return;
                }
                if let Some(until) = node.starved_until {
                    // Waits in the socket buffer; queued behind the resume tick.
                    let msg = Ev::Deliver {
                        to,
                        from,
                        epoch,
                        msg,
                    };
                    self.push(until, msg);
                    return;
                }
                self.net_stats.delivered += 1;
                node.swim.as_mut().unwrap().step(from, msg, self.now_ms);
                self.after_call(to, false);
            }
            Ev::Tick {
                node: i,
                generation,
            } => {
                let node = &mut self.nodes[i];
                if node.tick_generation != generation {
                    return;
                }
                node.tick_at_ms = None;
                if node.paused || node.swim.is_none() {
                    return;
                }
                if let Some(until) = node.starved_until {
                    if self.now_ms < until {
                        // The timer fires, but the VM is not running: it is seen at `until`.
                        self.schedule_tick(i, until);
                        return;
                    }
                    node.starved_until = None;
                }
                node.swim.as_mut().unwrap().tick(self.now_ms);
                self.after_call(i, true);
            }
            Ev::Boot { node: i } => self.boot(i),
            Ev::Join { node: i, seed } => {
                if let Some(swim) = self.nodes[i].swim.as_mut() {
                    swim.join(seed).expect("join");
                    self.after_call(i, false);
                }
            }
        }
    }

    /// Routes a node's outputs and re-arms its timer.
    fn after_call(&mut self, i: usize, ticked: bool) {
        let mut outputs = Vec::new();
        let swim = self.nodes[i].swim.as_mut().expect("live node");
        outputs.extend(swim.drain_outputs());
        let deadline = swim.next_deadline_ms();
        for output in outputs {
            match output {
                Output::Send { to, msg } => self.route(i, to as usize, msg),
                Output::Event(event) => {
                    if self.verbose {
                        println!("t_ms={} node={} {:?}", self.now_ms, i, event);
                    }
                    self.log.push(Record {
                        t_ms: self.now_ms,
                        observer: i as NodeId,
                        event,
                    });
                }
            }
        }
        if deadline == u64::MAX {
            return;
        }
        let earliest = if ticked { self.now_ms + 1 } else { self.now_ms };
        let q = self.config.tick_quantum_ms.max(1);
        self.schedule_tick(i, deadline.max(earliest).div_ceil(q) * q);
    }

    fn route(&mut self, from: usize, to: usize, msg: Message) {
        assert!(to < self.nodes.len(), "send to unknown node {to}");
        self.net_stats.sent += 1;
        if self.group[from] != self.group[to] || self.blocked.contains(&(from, to)) {
            self.net_stats.blocked += 1;
            return;
        }
        if self.config.net.loss_ppm > 0
            && (self.rng.next_u64() % 1_000_000) < u64::from(self.config.net.loss_ppm)
        {
            self.net_stats.lost += 1;
            return;
        }
        let jitter = self.rng.next_u64() % (self.config.net.jitter_ms + 1);
        let t_ms = self.now_ms + self.config.net.delay_ms + jitter;
        let epoch = self.nodes[to].epoch;
        self.push(
            t_ms,
            Ev::Deliver {
                to,
                from: from as NodeId,
                epoch,
                msg,
            },
        );
    }

    // ----- faults -----

    /// Kills node `i`: its state is gone, messages to it are lost.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.swim = None;
        node.paused = false;
        node.starved_until = None;
        node.epoch += 1;
        node.tick_at_ms = None;
        node.tick_generation += 1;
    }

    /// Restarts a crashed node from scratch; it rejoins through `seed`.
    pub fn restart(&mut self, i: usize, seed: NodeId) {
        assert!(self.nodes[i].swim.is_none(), "restart of a running node");
        let epoch = self.nodes[i].epoch;
        let mut swim = self.fresh_swim(i, epoch);
        swim.join(seed).expect("join");
        self.nodes[i].swim = Some(swim);
        self.after_call(i, false);
    }

    /// Freezes node `i`: no ticks, inbound messages dropped (a hung VM).
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].paused = true;
    }

    /// Starves node `i` for `duration_ms` from now: the host does not run it, so its timers
    /// fire late and inbound messages wait, in order, until it runs again; then its overdue
    /// timer is handled first. Unlike [`Sim::pause`] nothing is lost.
    pub fn starve(&mut self, i: usize, duration_ms: u64) {
        let until = self.now_ms + duration_ms;
        let node = &mut self.nodes[i];
        if node.swim.is_none() || node.paused {
            return;
        }
        let until = node.starved_until.map_or(until, |u| u.max(until));
        node.starved_until = Some(until);
        // The resume tick is queued before any message deferred to the same instant.
        node.tick_at_ms = None;
        self.schedule_tick(i, until);
    }

    /// True while node `i` is starved.
    pub fn is_starved(&self, i: usize) -> bool {
        self.nodes[i].starved_until.is_some()
    }

    /// Unfreezes node `i` and ticks it now.
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].paused = false;
        if self.nodes[i].swim.is_some() {
            self.nodes[i].tick_at_ms = None;
            self.schedule_tick(i, self.now_ms);
        }
    }

    /// Splits the cluster: `groups[i]` is node i's side.
    pub fn partition(&mut self, groups: Vec<u32>) {
        assert_eq!(groups.len(), self.nodes.len());
        self.group = groups;
    }

    /// Removes every partition and blocked link.
    pub fn heal(&mut self) {
        self.group.iter_mut().for_each(|g| *g = 0);
        self.blocked.clear();
    }

    /// Drops every message from `from` to `to` (the reverse direction still works).
    pub fn block_link(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    /// Runs `f` on a live node's state machine and routes what it produced.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Swim) -> R) -> R {
        let out = f(self.nodes[i].swim.as_mut().expect("live node"));
        self.after_call(i, false);
        out
    }

    // ----- observation -----

    /// Node `i`'s state machine, if it runs.
    pub fn node(&self, i: usize) -> Option<&Swim> {
        self.nodes[i].swim.as_ref()
    }

    /// True if node `i` runs and is not paused.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].swim.is_some() && !self.nodes[i].paused
    }

    /// How `observer` sees `subject` (None: unknown or observer down).
    pub fn view(&self, observer: usize, subject: usize) -> Option<MemberState> {
        self.node(observer)?.state_of(subject as NodeId)
    }

    /// True if every running node other than `subject` sees it as `state`.
    pub fn all_see(&self, subject: usize, state: MemberState) -> bool {
        (0..self.n())
            .filter(|&o| o != subject && self.is_up(o))
            .all(|o| self.view(o, subject) == Some(state))
    }

    /// First and last time (after `since_ms`) a running observer logged NodeDown for
    /// `subject`; None unless every running observer did.
    pub fn down_times(&self, subject: usize, since_ms: u64) -> Option<(u64, u64)> {
        let mut first_seen = vec![None; self.n()];
        for r in self.log.iter().rev().take_while(|r| r.t_ms >= since_ms) {
            if let Event::NodeDown { id, .. } = r.event {
                if id == subject as NodeId {
                    first_seen[r.observer as usize] = Some(r.t_ms);
                }
            }
        }
        let observers = (0..self.n()).filter(|&o| o != subject && self.is_up(o));
        let times: Option<Vec<u64>> = observers.map(|o| first_seen[o]).collect();
        let times = times?;
        Some((*times.iter().min()?, *times.iter().max()?))
    }

    /// A digest of the event log (determinism checks).
    pub fn log_digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for r in &self.log {
            let text = format!("{}:{}:{:?}", r.t_ms, r.observer, r.event);
            for b in text.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        }
        h
    }

    /// A uniformly random value below `n` from the simulator's generator.
    pub fn rand_below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }
}
