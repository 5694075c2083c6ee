//! The simulated cluster: nodes, network, operator, fault timeline, invariants, phases.
//!
//! A run is a **safety phase** (faults from [`crate::schedule`], payloads that exit and
//! crash, an operator issuing writes at random nodes) followed by a **liveness phase** (the
//! network heals, every node is restarted or resumed, payloads behave, draining marks are
//! cleared) that must converge within [`SimConfig::liveness_ms_max`]. One step is 10 ms of
//! real time; in each step: scheduled faults, message delivery, every node's tick, the
//! operator, then every invariant:
//!
//! - never two executing cells of one `(service, slot, epoch)`; never two of a fenced slot;
//! - a node spawns or stops a cell only with quorum (lease-expiry stops excepted), only for
//!   its committed binding, and never after being cut off for [`crate::record::ISOLATED_ACT_MS`];
//! - every node that applied the same index holds the same desired state, and the same entry
//!   at every index;
//! - a write answered "committed at index i" is entry i; "lost at i" is not;
//! - refills per minute stay within the budget (per leader term);
//! - service addresses (the front door, `xylem::frontdoor`): never two nodes answering for one
//!   address at the same owner epoch, and a node that has been in a minority (the running
//!   nodes it reaches over links that work both ways, directly or through others, are not a
//!   majority) for over [`MINORITY_ANSWER_MS`] answers for nothing.
//!
//! Liveness (converged when all hold at once): one leader every node agrees on, every node
//! `alive` in every view, every node caught up with the same desired state, and every service
//! at exactly its desired count of running cells on its bound nodes at the current epochs,
//! with no other cell of any service running; every service address answered by exactly one
//! node, its committed owner, which is not draining (the operate phase drains a worker: an
//! address it owned must have moved).

use std::collections::{BTreeMap, BTreeSet};

use cell::spec::RestartPolicy;
use consensus::Role;
use membership::swim::MemberState as Swim;
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use xylem::command::Command;
use xylem::config::{Config, Mutation};
use xylem::operate::{AutoscalePolicy, Maintenance};
use xylem::service::ServiceSpec;
use xylem::{NodeRole, Slot};

use crate::net::{Net, NetFaults};
use crate::node::{Clock, Ctx, Power, SimNode};
use crate::record::{hash, Counts, Recorder};
use crate::schedule::{self, CutKind, Fault};

/// Real milliseconds per step (the kernel's tick).
pub const STEP_MS: u64 = 10;

/// How long the calm cluster must stay converged before the operate phase starts: five
/// planning rounds (`plan_every_ms` is 100 ms), so a plan made just before is committed.
pub const STABLE_MS: u64 = 500;

/// A node in a minority for longer than this must answer for no service address. It
/// answers only with quorum (`ControlNode::has_quorum`: a leader it reaches, applied up to
/// that leader's last report, the report younger than `report_stale_ms`, 2 s) or within
/// `xylem::frontdoor::ANSWER_GRACE_MS` (1 s) after it last had it. Cut off from the
/// majority, its leader's reports go stale within 2 s (or its own leader, in the minority
/// with it, steps down by CheckQuorum within two election timeouts); then the grace runs
/// out; 500 ms more covers steps and clock rates (±1 %). The 10,000 seeds measure the
/// longest (`minority_answer_ms_max`, 2.3 s when this was written).
pub const MINORITY_ANSWER_MS: u64 = 3_500;

/// Size and shape of one run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Length of the safety phase.
    pub safety_ms: u64,
    /// The liveness phase must converge within this.
    pub liveness_ms_max: u64,
    /// Inject faults (off: a calm run, for the tests of the harness itself).
    pub faults: bool,
    /// A deliberately broken rule (the mutation test).
    pub mutation: Mutation,
    /// Force the node count (3 to 5); `None`: from the seed.
    pub nodes: Option<u64>,
}

impl SimConfig {
    /// The runs of the 10,000-seed test.
    pub fn short() -> Self {
        Self {
            safety_ms: 6_000,
            liveness_ms_max: 30_000,
            faults: true,
            mutation: Mutation::None,
            nodes: None,
        }
    }

    /// Longer runs (the soak, `SIM_CLUSTER_LONG=1`).
    pub fn long() -> Self {
        Self {
            safety_ms: 60_000,
            ..Self::short()
        }
    }
}

/// The control-plane tunables of the simulation: the real ones, with the slow refill
/// policy compressed so a run sees several refills (the lease timing is the real one).
pub fn control_config(mutation: Mutation) -> Config {
    let mut config = Config::default();
    config.placement.free_mib_min = 4;
    config.refill.exit_delay_ms = 200;
    config.refill.crashloop_delay_ms = 1_000;
    config.refill.delay_max_ms = 4_000;
    config.refill.reset_after_ms = 20_000;
    config.refill.budget_per_minute = 60;
    config.refill.budget_burst = 10;
    config.lease.mutation = mutation;
    config
}

/// What a successful run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub nodes: u64,
    pub steps: u64,
    /// Liveness phase: ms until converged.
    pub converge_ms: u64,
    /// Operate phase (a drain and a rollout of every service): ms until done.
    pub operate_ms: u64,
    pub counts: Counts,
    pub net: crate::net::NetStats,
    /// Longest time a node kept answering for an address while in a minority (ms).
    pub minority_answer_ms_max: u64,
    /// Hash of every act and commit (same seed, same trace).
    pub trace: u64,
}

/// An operator write in flight: (node, request id, entry hash, forwarded, step).
type Pending = (u64, u64, u64, bool, u64);

/// One simulated cluster.
pub struct Sim {
    seed: u64,
    cfg: SimConfig,
    verbose: bool,
    pub nodes: Vec<SimNode>,
    members: Vec<(u64, NodeRole)>,
    config: Config,
    net: Net,
    rng: Xoshiro256PlusPlus,
    tear: Xoshiro256PlusPlus,
    pub rec: Recorder,
    faults: Vec<(u64, Fault)>,
    next_fault: usize,
    step: u64,
    writes: Vec<Pending>,
    /// Desired-state hash per applied index, and the last index each node was checked at.
    states: BTreeMap<u64, u64>,
    checked: BTreeMap<u64, u64>,
    calm: bool,
    /// The operate phase (after the first convergence): its writes, and each service's
    /// replica count when it started.
    operating: bool,
    operate_queue: Vec<Command>,
    floor: BTreeMap<String, u16>,
    /// Per node: since when (real ms) it has been in a minority and answering for an
    /// address at the same time.
    minority_answering_since: BTreeMap<u64, u64>,
    minority_answer_ms_max: u64,
    /// (address, epoch) pairs seen answered.
    owner_epochs: BTreeSet<([u8; 4], u64)>,
}

impl Sim {
    pub fn new(seed: u64, cfg: SimConfig, verbose: bool) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let count = cfg.nodes.unwrap_or(match rng.next_u64() % 10 {
            0..=5 => 3,
            6 | 7 => 4,
            _ => 5,
        });
        let members: Vec<(u64, NodeRole)> = (1..=count)
            .map(|id| {
                let role = if id == count {
                    NodeRole::Witness
                } else {
                    NodeRole::Worker
                };
                (id, role)
            })
            .collect();
        let config = control_config(cfg.mutation);
        let mut rec = Recorder::default();
        rec.refill_policy = Some(config.refill.clone());
        rec.verbose = verbose;
        let mut net = Net::new(Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x4e47));
        let mut tear = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x7ea4);
        let mut nodes = Vec::new();
        for &(id, role) in &members {
            // Clocks: any offset, a rate within the lease assumption (±1 %).
            let clock = Clock {
                offset_ms: rng.next_u64() % 100_000,
                ppm: (rng.next_u64() % 20_001) as i64 - 10_000,
            };
            let node_seed = rng.next_u64();
            let mut ctx = Ctx {
                net: &mut net,
                step: 0,
                real_ms: 0,
                rng: &mut tear,
                rec: &mut rec,
                config: &config,
                members: &members,
            };
            nodes.push(SimNode::new(id, role, clock, node_seed, &mut ctx));
        }
        let ids: Vec<u64> = members.iter().map(|(id, _)| *id).collect();
        let faults = if cfg.faults {
            schedule::generate(seed, &ids, cfg.safety_ms / STEP_MS)
        } else {
            Vec::new()
        };
        Self {
            seed,
            cfg,
            verbose,
            nodes,
            members,
            config,
            net,
            rng,
            tear,
            rec,
            faults,
            next_fault: 0,
            step: 0,
            writes: Vec::new(),
            states: BTreeMap::new(),
            checked: BTreeMap::new(),
            calm: false,
            operating: false,
            operate_queue: Vec::new(),
            floor: BTreeMap::new(),
            minority_answering_since: BTreeMap::new(),
            minority_answer_ms_max: 0,
            owner_epochs: BTreeSet::new(),
        }
    }

    fn real_ms(&self) -> u64 {
        self.step * STEP_MS
    }

    fn log(&self, text: impl FnOnce() -> String) {
        if self.verbose {
            println!("[{:>6} ms] {}", self.real_ms(), text());
        }
    }

    /// Runs `f` on node `i` with a context.
    fn with_node(&mut self, i: usize, f: impl FnOnce(&mut SimNode, &mut Ctx)) {
        let real_ms = self.real_ms();
        let mut ctx = Ctx {
            net: &mut self.net,
            step: self.step,
            real_ms,
            rng: &mut self.tear,
            rec: &mut self.rec,
            config: &self.config,
            members: &self.members,
        };
        f(&mut self.nodes[i], &mut ctx);
    }

    fn index(&self, id: u64) -> usize {
        (id - 1) as usize
    }

    /// Runs the two phases; `Err` names the first broken invariant.
    pub fn run(mut self) -> Result<Report, String> {
        let safety_steps = self.cfg.safety_ms / STEP_MS;
        while self.step < safety_steps {
            self.step_once()?;
        }
        self.calm_down();
        let start = self.step;
        let max = self.cfg.liveness_ms_max / STEP_MS;
        let mut stable_since: Option<u64> = None;
        loop {
            self.step_once()?;
            // Converged, no write of the fault phase still in flight (it could change the
            // services under the operate phase's feet), and every node active again — and
            // still so [`STABLE_MS`] later: a node resumed in the calm looks converged for a
            // moment while the leader's move of its cells (planned when it seemed lost) is
            // still in flight, and that move is not the operate phase's to judge.
            if self.converged().is_ok() && self.writes.is_empty() && self.no_maintenance() {
                let since = *stable_since.get_or_insert(self.step);
                if (self.step - since) * STEP_MS >= STABLE_MS {
                    break;
                }
            } else {
                stable_since = None;
            }
            if self.step - start > max {
                let why = self.converged().err().unwrap_or_else(|| {
                    "converged, but not for long, or writes or maintenance left".to_string()
                });
                return Err(format!(
                    "no convergence within {} ms of calm: {why}",
                    self.cfg.liveness_ms_max
                ));
            }
        }
        let converge_ms = (stable_since.unwrap_or(self.step) - start) * STEP_MS;
        // Operate on the converged cluster: a drain and a rollout, make-before-break.
        self.start_operate();
        let start_operate = self.step;
        loop {
            self.step_once()?;
            self.check_floor();
            if self.operate_done().is_ok() {
                break;
            }
            if self.step - start_operate > max {
                let why = self.operate_done().unwrap_err();
                return Err(format!(
                    "drain and rollout did not finish within {} ms: {why}",
                    self.cfg.liveness_ms_max
                ));
            }
        }
        self.rec.check_writes();
        if let Some(v) = self.rec.violations.first() {
            return Err(v.clone());
        }
        Ok(Report {
            nodes: self.nodes.len() as u64,
            steps: self.step,
            converge_ms,
            operate_ms: (self.step - start_operate) * STEP_MS,
            counts: self.rec.counts,
            net: self.net.stats,
            minority_answer_ms_max: self.minority_answer_ms_max,
            trace: self.rec.trace,
        })
    }

    fn step_once(&mut self) -> Result<(), String> {
        self.step += 1;
        self.apply_faults();
        self.deliver();
        self.isolation();
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        // A different node order every step: more interleavings, same seed same order.
        for i in (1..order.len()).rev() {
            let j = (self.rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        for i in order {
            if self.nodes[i].power == Power::Up {
                self.with_node(i, |n, ctx| n.tick(ctx));
            }
        }
        self.operator();
        self.check()?;
        match self.rec.violations.first() {
            Some(v) => Err(v.clone()),
            None => Ok(()),
        }
    }

    fn apply_faults(&mut self) {
        while let Some((at, fault)) = self.faults.get(self.next_fault).cloned() {
            if at > self.step {
                break;
            }
            self.next_fault += 1;
            self.fault(fault);
        }
    }

    fn fault(&mut self, fault: Fault) {
        self.log(|| format!("fault {fault:?}"));
        match fault {
            Fault::Weather(w) => self.net.faults = w,
            Fault::Cut { kind, links } => {
                match kind {
                    CutKind::Split => self.rec.counts.partitions += 1,
                    CutKind::OneWay => self.rec.counts.one_way += 1,
                    CutKind::Isolate => self.rec.counts.isolations += 1,
                }
                self.net.set_cut(links);
            }
            Fault::Heal => self.net.set_cut(BTreeSet::new()),
            Fault::Crash(id) => {
                let i = self.index(id);
                if self.nodes[i].power != Power::Down {
                    self.rec.counts.crashes += 1;
                    self.nodes[i].crash(&mut self.tear);
                    self.writes.retain(|w| w.0 != id);
                }
            }
            Fault::Restart(id) => {
                let i = self.index(id);
                if self.nodes[i].power == Power::Down {
                    self.rec.counts.restarts += 1;
                    self.with_node(i, |n, ctx| n.boot(ctx));
                }
            }
            Fault::Pause(id) => {
                let i = self.index(id);
                if self.nodes[i].power == Power::Up {
                    self.rec.counts.pauses += 1;
                    self.nodes[i].power = Power::Paused;
                }
            }
            Fault::Resume(id) => {
                let i = self.index(id);
                if self.nodes[i].power == Power::Paused {
                    self.nodes[i].power = Power::Up;
                }
            }
        }
    }

    fn deliver(&mut self) {
        for packet in self.net.due(self.step) {
            let i = self.index(packet.to);
            if self.nodes[i].power != Power::Up {
                self.net.dropped_to_down();
                continue;
            }
            self.with_node(i, |n, ctx| n.deliver(ctx, packet.from, packet.payload));
        }
    }

    /// Ground truth for the isolation check: since when each node has had no link either way
    /// to any other node.
    fn isolation(&mut self) {
        let now = self.real_ms();
        let ids: Vec<u64> = self.members.iter().map(|(id, _)| *id).collect();
        for &a in &ids {
            let cut_off = ids
                .iter()
                .filter(|&&b| b != a)
                .all(|&b| !self.net.linked(a, b) && !self.net.linked(b, a));
            let entry = self.rec.isolated_since.entry(a).or_insert(None);
            match (cut_off, *entry) {
                (true, None) => *entry = Some(now),
                (false, _) => *entry = None,
                _ => {}
            }
        }
    }

    /// The end of the faults: heal, calm weather, every node up, payloads behave, drains off.
    fn calm_down(&mut self) {
        self.log(|| "calm: heal, restart, resume".to_string());
        self.calm = true;
        self.rec.calm = true;
        self.net.set_cut(BTreeSet::new());
        self.net.faults = NetFaults::calm();
        for i in 0..self.nodes.len() {
            match self.nodes[i].power {
                Power::Down => {
                    self.rec.counts.restarts += 1;
                    self.with_node(i, |n, ctx| n.boot(ctx));
                }
                Power::Paused => self.nodes[i].power = Power::Up,
                Power::Up => {}
            }
        }
        for node in &mut self.nodes {
            node.cells.faulty = false;
        }
    }

    // ---------------------------------------------------------------------------------------
    // The operator

    fn random_command(&mut self) -> Command {
        const NAMES: [&str; 4] = ["web", "api", "job", "lock"];
        let r = self.rng.next_u64();
        let name = NAMES[(r % 4) as usize].to_string();
        match (r >> 8) % 14 {
            0..=4 => {
                let payload = match (r >> 16) % 20 {
                    0..=9 => "steady",
                    10..=13 => "exits",
                    14..=16 => "flaky",
                    _ => "crash",
                };
                let mut spec = ServiceSpec::new(&name, payload, ((r >> 24) % 4) as u16);
                spec.restart = match (r >> 28) % 3 {
                    0 => RestartPolicy::Always,
                    1 => RestartPolicy::OnFailure,
                    _ => RestartPolicy::Never,
                };
                // "lock" is a fenced singleton; others are fenced now and then.
                spec.fenced = name == "lock" || (r >> 32).is_multiple_of(5);
                if name == "lock" {
                    spec.replicas = 1;
                }
                // A new version now and then (a rolling update, or a rollback when it
                // crashes), and autoscaling bounds.
                spec.args = match (r >> 36) % 3 {
                    0 => Vec::new(),
                    v => vec![format!("v{v}")],
                };
                if (r >> 40).is_multiple_of(3) {
                    spec.replicas = spec.replicas.max(1);
                    spec.min_replicas = 1;
                    spec.max_replicas = 4;
                }
                Command::ApplyService(spec)
            }
            5..=7 => Command::Scale {
                name,
                replicas: ((r >> 24) % 4) as u16,
            },
            8 => Command::Delete { name },
            // The front door: a port (and so an address) for a service; ports collide now
            // and then (refused: `PortTaken`), and a service that does not exist has none.
            9 => Command::Expose {
                service: name,
                port: [80, 8080, 443][((r >> 24) % 3) as usize],
            },
            10 => Command::RolloutUndo { service: name },
            11 => Command::SetAutoscale {
                service: name,
                policy: (!(r >> 24).is_multiple_of(4)).then_some(AutoscalePolicy {
                    target_load_pct: [50, 30, 90, 4][((r >> 28) % 4) as usize],
                }),
            },
            12 | 13 => {
                let node = 1 + (r >> 24) % (self.members.len() as u64 + 1);
                let mode = [
                    Maintenance::Active,
                    Maintenance::Cordoned,
                    Maintenance::Draining,
                    Maintenance::Drained,
                ][((r >> 32) % 4) as usize];
                Command::Maintain { node, mode }
            }
            _ => {
                let workers: Vec<u64> = self
                    .members
                    .iter()
                    .filter(|(_, r)| *r == NodeRole::Worker)
                    .map(|(id, _)| *id)
                    .collect();
                let node = workers[((r >> 24) % workers.len() as u64) as usize];
                Command::SetDraining {
                    node,
                    draining: (r >> 32).is_multiple_of(2),
                }
            }
        }
    }

    /// Submits writes now and then at a random node, and collects their outcomes.
    fn operator(&mut self) {
        self.collect_writes();
        let submit = if self.calm {
            self.cleanup_command()
        } else if self.rng.next_u64().is_multiple_of(40)
            || (self.step.is_multiple_of(50) && self.step <= 300)
        {
            // The fenced singleton "lock" is applied early (a few times, in case the cluster
            // had no leader yet: re-applying the same spec changes nothing).
            // It gets an address too (steps 100, 200, 300), as `apply --port` does.
            let command = if self.step.is_multiple_of(100) && self.step <= 300 {
                Command::Expose {
                    service: "lock".to_string(),
                    port: 80,
                }
            } else if self.step.is_multiple_of(50) && self.step <= 300 {
                let mut spec = ServiceSpec::new("lock", "steady", 1);
                spec.fenced = true;
                Command::ApplyService(spec)
            } else {
                self.random_command()
            };
            let up: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].power == Power::Up)
                .collect();
            (!up.is_empty()).then(|| {
                let i = up[(self.rng.next_u64() % up.len() as u64) as usize];
                (i, command)
            })
        } else {
            None
        };
        let Some((i, command)) = submit else {
            return;
        };
        let bytes = command.encode().expect("operator commands encode");
        let h = hash(&bytes);
        let node_id = self.nodes[i].id;
        let leader = self.nodes[i].raft().and_then(|r| r.leader());
        let forwarded = leader != Some(node_id);
        let mut submitted = None;
        self.log(|| format!("node {node_id} submits {command:?}"));
        self.with_node(i, |n, ctx| {
            n.call(ctx, |c, o| submitted = Some(c.submit(command, o)))
        });
        match submitted {
            Some(Ok(req)) => self.writes.push((node_id, req, h, forwarded, self.step)),
            Some(Err(e)) => self.rec.write_result(node_id, h, forwarded, &Err(e)),
            None => {}
        }
    }

    /// The operate phase, on the converged cluster: drain one worker and roll every service
    /// to a new version at once, and check at every step that no (unfenced) service runs
    /// fewer replicas than it did when the phase started (or than desired, if lower): drains
    /// and rollouts are make-before-break.
    fn start_operate(&mut self) {
        let leader = (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .raft()
                .is_some_and(|r| r.role() == Role::Leader)
        });
        let Some(desired) = leader
            .and_then(|i| self.nodes[i].ctl())
            .map(|c| c.desired())
        else {
            return;
        };
        let workers: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, r)| *r == NodeRole::Worker)
            .map(|(id, _)| *id)
            .collect();
        let drain = workers[(self.rng.next_u64() % workers.len() as u64) as usize];
        let mut queue = vec![Command::Maintain {
            node: drain,
            mode: Maintenance::Draining,
        }];
        for spec in desired.services().filter(|s| !s.fenced) {
            let mut next = spec.clone();
            next.args = vec![format!("op{}", self.step)];
            queue.push(Command::ApplyService(next));
            self.floor.insert(spec.name.clone(), spec.replicas);
        }
        queue.reverse();
        self.log(|| format!("operate: drain {drain}, roll {:?}", self.floor));
        self.operate_queue = queue;
        self.operating = true;
    }

    /// Whether the leader's desired state has every node active (the calm's cleanup is done).
    fn no_maintenance(&self) -> bool {
        self.nodes
            .iter()
            .find(|n| n.raft().is_some_and(|r| r.role() == Role::Leader))
            .and_then(|n| n.ctl())
            .is_some_and(|c| c.desired().maintained_nodes().next().is_none())
    }

    /// Make-before-break: every unfenced service keeps `min(floor, replicas)` slots with a
    /// running cell (any generation, bound or replacement).
    fn check_floor(&mut self) {
        let leader = (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .raft()
                .is_some_and(|r| r.role() == Role::Leader)
        });
        let Some(desired) = leader
            .and_then(|i| self.nodes[i].ctl())
            .map(|c| c.desired())
        else {
            return;
        };
        let mut running: BTreeSet<(String, Slot)> = BTreeSet::new();
        for n in self.nodes.iter().filter(|n| n.power == Power::Up) {
            for c in n.cells.executing() {
                if c.state == xylem::CellState::Running {
                    running.insert((c.name.service.clone(), c.name.slot));
                }
            }
        }
        let mut short = Vec::new();
        for spec in desired.services().filter(|s| !s.fenced) {
            let floor = self.floor.get(&spec.name).copied().unwrap_or(0);
            let need = usize::from(floor.min(spec.replicas));
            let have = running
                .iter()
                .filter(|(s, slot)| *s == spec.name && *slot < spec.replicas)
                .count();
            if have < need {
                short.push(format!("{} runs {have} of {need}", spec.name));
            }
        }
        for why in short {
            self.rec.violation(format!(
                "step {}: during a drain/rollout {why} (make-before-break broken)",
                self.step
            ));
        }
    }

    /// Whether the operate phase is done: every write made, no replacement in flight, every
    /// slot at its service's current version, and the cluster converged.
    fn operate_done(&self) -> Result<(), String> {
        if !self.operate_queue.is_empty() || !self.writes.is_empty() {
            return Err("operate writes pending".to_string());
        }
        self.converged()?;
        let leader = self
            .nodes
            .iter()
            .find(|n| n.raft().is_some_and(|r| r.role() == Role::Leader))
            .ok_or("no leader")?;
        let desired = leader.ctl().ok_or("leader down")?.desired();
        if let Some((service, slot, _)) = desired.surges().next() {
            return Err(format!("{service}/{slot} still being replaced"));
        }
        for spec in desired.services() {
            if let Some(slot) = desired.ops(&spec.name).and_then(|o| o.outdated().next()) {
                return Err(format!("{}/{slot} not rolled", spec.name));
            }
        }
        Ok(())
    }

    /// In the calm: clear draining marks (every slot must be placeable), one write at a time.
    fn cleanup_command(&mut self) -> Option<(usize, Command)> {
        if !self.writes.is_empty() || !self.step.is_multiple_of(20) {
            return None;
        }
        let leader = (0..self.nodes.len()).find(|&i| {
            self.nodes[i]
                .raft()
                .is_some_and(|r| r.role() == Role::Leader)
        })?;
        let ctl = self.nodes[leader].ctl()?;
        if let Some(command) = self.operate_queue.pop() {
            return Some((leader, command));
        }
        if self.operating {
            return None;
        }
        let node = ctl.desired().maintained_nodes().next()?;
        Some((
            leader,
            Command::Maintain {
                node,
                mode: Maintenance::Active,
            },
        ))
    }

    fn collect_writes(&mut self) {
        let mut still = Vec::new();
        for (node, req, h, forwarded, step) in std::mem::take(&mut self.writes) {
            let i = self.index(node);
            let result = self.nodes[i].ctl_mut().and_then(|c| c.take_result(req));
            match result {
                Some(result) => {
                    self.log(|| format!("node {node} write {req}: {result:?}"));
                    self.rec.write_result(node, h, forwarded, &result);
                }
                None if self.step - step > 1_000 => self
                    .rec
                    .violation(format!("node {node}: write {req} never answered")),
                None => still.push((node, req, h, forwarded, step)),
            }
        }
        self.writes = still;
    }

    // ---------------------------------------------------------------------------------------
    // Invariants

    fn check(&mut self) -> Result<(), String> {
        self.check_cells();
        self.check_states();
        self.check_owners();
        self.rec.check_writes();
        Ok(())
    }

    /// The nodes `a` reaches through links that work both ways, directly or through
    /// others, itself included, among the running ones: its side of the partition.
    fn reachable(&self, a: u64) -> usize {
        let mut side = BTreeSet::from([a]);
        let mut frontier = vec![a];
        while let Some(x) = frontier.pop() {
            for n in self.nodes.iter().filter(|n| n.power == Power::Up) {
                if !side.contains(&n.id) && self.net.linked(x, n.id) && self.net.linked(n.id, x) {
                    side.insert(n.id);
                    frontier.push(n.id);
                }
            }
        }
        side.len()
    }

    /// Front door ownership: never two nodes answering for one address at one epoch; a
    /// node in a minority stops answering within [`MINORITY_ANSWER_MS`]. A paused node
    /// answers nothing (it executes nothing; when it resumes its control loop runs first,
    /// as for cells).
    fn check_owners(&mut self) {
        let now = self.real_ms();
        let majority = self.nodes.len() / 2 + 1;
        let mut by_ip: BTreeMap<[u8; 4], Vec<(u64, u64)>> = BTreeMap::new();
        let mut minority_answering = Vec::new();
        for n in self.nodes.iter().filter(|n| n.power == Power::Up) {
            let answers = n.answering(now, &self.members);
            if answers.is_empty() {
                continue;
            }
            for a in &answers {
                by_ip.entry(a.ip).or_default().push((n.id, a.epoch));
            }
            if self.reachable(n.id) < majority {
                minority_answering.push((n.id, answers));
            }
        }
        for (ip, owners) in &by_ip {
            for &(_, epoch) in owners {
                let moved = self.owner_epochs.iter().any(|(i, _)| i == ip);
                if self.owner_epochs.insert((*ip, epoch)) {
                    self.rec.counts.owner_epochs += 1;
                    if moved {
                        self.rec.counts.owner_takeovers += 1;
                    }
                }
            }
            if owners.len() > 1 {
                self.rec.counts.owner_overlaps += 1;
                let mut epochs: Vec<u64> = owners.iter().map(|o| o.1).collect();
                epochs.sort_unstable();
                epochs.dedup();
                if epochs.len() < owners.len() {
                    self.rec.violation(format!(
                        "step {}: two nodes answer for {ip:?} at one epoch: {owners:?}",
                        self.step
                    ));
                }
            }
        }
        let mut since = BTreeMap::new();
        for (id, answers) in minority_answering {
            let from = self
                .minority_answering_since
                .get(&id)
                .copied()
                .unwrap_or(now);
            since.insert(id, from);
            let long = now - from;
            self.minority_answer_ms_max = self.minority_answer_ms_max.max(long);
            if long > MINORITY_ANSWER_MS {
                self.rec.violation(format!(
                    "step {}: node {id}, in a minority for over {MINORITY_ANSWER_MS} ms, answers for {answers:?}",
                    self.step
                ));
            }
        }
        self.minority_answering_since = since;
    }

    /// Never two executing cells of one (service, slot, epoch), nor of a fenced slot. A
    /// paused node's cells do not execute; when it resumes, its control loop runs first.
    fn check_cells(&mut self) {
        let mut by_binding: BTreeMap<(String, Slot, u64), u64> = BTreeMap::new();
        let mut fenced: BTreeMap<(String, Slot), Vec<(u64, String)>> = BTreeMap::new();
        for node in self.nodes.iter().filter(|n| n.power == Power::Up) {
            for c in node.cells.executing() {
                let key = (c.name.service.clone(), c.name.slot, c.name.epoch);
                if let Some(other) = by_binding.insert(key, node.id) {
                    self.rec.violation(format!(
                        "step {}: {} runs on nodes {other} and {}",
                        self.step, c.name, node.id
                    ));
                }
                if c.fenced {
                    fenced
                        .entry((c.name.service.clone(), c.name.slot))
                        .or_default()
                        .push((node.id, c.name.to_string()));
                }
            }
        }
        for ((service, slot), cells) in fenced {
            if cells.len() > 1 {
                self.rec.violation(format!(
                    "step {}: fenced slot {service}/{slot} runs twice: {cells:?}",
                    self.step
                ));
            }
        }
    }

    /// Same applied index, same desired state, on every node.
    fn check_states(&mut self) {
        for node in self.nodes.iter().filter(|n| n.power != Power::Down) {
            let Some(ctl) = node.ctl() else { continue };
            let index = ctl.desired().applied_index();
            if self.checked.get(&node.id) == Some(&index) {
                continue;
            }
            self.checked.insert(node.id, index);
            let h = hash(&ctl.snapshot());
            match self.states.get(&index) {
                Some(&seen) if seen != h => self.rec.violation(format!(
                    "step {}: node {} has a different desired state at applied index {index}",
                    self.step, node.id
                )),
                Some(_) => {}
                None => {
                    self.states.insert(index, h);
                }
            }
        }
    }

    /// Whether the calm cluster converged; `Err` says what is still off.
    fn converged(&self) -> Result<(), String> {
        let leaders: Vec<&SimNode> = self
            .nodes
            .iter()
            .filter(|n| n.raft().is_some_and(|r| r.role() == Role::Leader))
            .collect();
        let [leader] = leaders[..] else {
            return Err(format!("{} leaders", leaders.len()));
        };
        let lr = leader.raft().expect("running");
        for n in &self.nodes {
            let r = n.raft().ok_or_else(|| format!("node {} is down", n.id))?;
            if r.leader() != Some(leader.id) || r.term() != lr.term() {
                return Err(format!("node {} follows {:?}", n.id, r.leader()));
            }
            if r.applied_index() != lr.commit_index() {
                return Err(format!(
                    "node {} applied {} of {}",
                    n.id,
                    r.applied_index(),
                    lr.commit_index()
                ));
            }
            for m in &self.nodes {
                if m.id != n.id && n.member(m.id) != Some(Swim::Alive) {
                    return Err(format!(
                        "node {} sees {} as {:?}",
                        n.id,
                        m.id,
                        n.member(m.id)
                    ));
                }
            }
        }
        let desired = leader.ctl().expect("running").desired();
        // Every service at exactly its count, on its bound nodes, at the current epochs.
        let mut running: BTreeSet<(String, Slot, u64, u64)> = BTreeSet::new();
        for n in &self.nodes {
            for c in n.cells.executing() {
                if c.state != xylem::CellState::Running {
                    return Err(format!("{} is still starting on {}", c.name, n.id));
                }
                running.insert((c.name.service.clone(), c.name.slot, c.name.epoch, n.id));
            }
        }
        let mut want: BTreeSet<(String, Slot, u64, u64)> = BTreeSet::new();
        for spec in desired.services() {
            for slot in 0..spec.replicas {
                let a = desired
                    .assignment(&spec.name, slot)
                    .ok_or_else(|| format!("{}/{slot} unbound", spec.name))?;
                want.insert((spec.name.clone(), slot, a.epoch, a.node));
            }
        }
        if running != want {
            let extra: Vec<_> = running.difference(&want).collect();
            let missing: Vec<_> = want.difference(&running).collect();
            return Err(format!("cells: missing {missing:?}, extra {extra:?}"));
        }
        // Every service address: exactly one node answers, its committed owner, alive
        // (every node is, above) and not draining (a live witness is never draining, so
        // `plan_owners` always has somewhere to move it).
        let now = self.real_ms();
        let mut answering: BTreeMap<[u8; 4], Vec<u64>> = BTreeMap::new();
        for n in &self.nodes {
            for a in n.answering(now, &self.members) {
                answering.entry(a.ip).or_default().push(n.id);
            }
        }
        for (service, addr) in desired.addresses().iter() {
            let owner = addr
                .owner
                .ok_or_else(|| format!("{service}'s address has no owner"))?;
            if desired.is_draining(owner.node) {
                return Err(format!(
                    "{service}'s address is owned by draining node {}",
                    owner.node
                ));
            }
            let who = answering.remove(&addr.ip()).unwrap_or_default();
            if who != [owner.node] {
                return Err(format!(
                    "{service}'s address is answered by {who:?}, owner {}",
                    owner.node
                ));
            }
        }
        if !answering.is_empty() {
            return Err(format!("addresses of no service answered: {answering:?}"));
        }
        Ok(())
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }
}
