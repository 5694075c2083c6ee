//! One simulated kernel: SWIM, the Raft core on its real disk format (an in-memory device),
//! the control node, and a cell table — driven the way `kernel/src/cluster/*` drives them.
//!
//! Handling order (the kernel's): an input (a tick, a message) goes to its machine; Raft's
//! Ready is persisted, then sent, then advanced, and only then are its committed entries,
//! snapshot and read states handed to the control node (so, as in the kernel, the control
//! node sees Raft's applied index already covering the batch); every control-node output is
//! carried out at once, in order, and its feedback (`on_proposed`, `on_spawned`, `on_read`)
//! given back before the next input.

use std::collections::BTreeMap;

use consensus::disk::mem::MemDevice;
use consensus::disk::DiskStore;
use consensus::{Config as RaftConfig, ProposeError, RawNode, Role};
use membership::swim::{
    Config as SwimConfig, MemberState as Swim, Output as SwimOutput, Swim as SwimNode,
};
use rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;
use xylem::config::Config;
use xylem::frontdoor::Answer;
use xylem::node::{ControlNode, Event, NodeConfig, Observed, Output, RaftView};
use xylem::service::PayloadCatalog;
use xylem::status::{MemberState, RaftRole};
use xylem::write::Refusal;
use xylem::{NodeRole, Slot};

use crate::cells::{SimCells, PAYLOADS};
use crate::net::{Net, Packet, Payload};
use crate::record::{Act, Recorder};

/// Sectors of each node's Raft disk (512 KiB).
pub const DISK_SECTORS: u64 = 1024;
/// Applied entries between log compactions (snapshots of the desired state).
pub const COMPACT_EVERY: u64 = 24;
/// One spawn in this many fails (out of memory or tasks), to exercise the failure path.
pub const SPAWN_FAIL_ONE_IN: u64 = 200;

/// Power state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Power {
    Up,
    /// Frozen (SIGSTOP): not driven, messages to it lost, its clock keeps running.
    Paused,
    /// Crashed: only the disk survives.
    Down,
}

/// A clock with an offset and a rate error (the lease assumption bounds the rate).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub offset_ms: u64,
    /// Rate error in parts per million (negative: slow).
    pub ppm: i64,
}

impl Clock {
    /// Local time at real time `real_ms`.
    pub fn at(&self, real_ms: u64) -> u64 {
        let skew = (real_ms as i128 * self.ppm as i128) / 1_000_000;
        (self.offset_ms as i128 + real_ms as i128 + skew) as u64
    }
}

/// The machines of a running node.
struct Machines {
    swim: SwimNode,
    raft: RawNode,
    store: DiskStore<MemDevice>,
    ctl: ControlNode,
    /// The Raft store failed: the node stops taking part (as the kernel does).
    failed: bool,
}

/// Everything a node's handlers touch besides the node.
pub struct Ctx<'a> {
    pub net: &'a mut Net,
    pub step: u64,
    pub real_ms: u64,
    pub rng: &'a mut Xoshiro256PlusPlus,
    pub rec: &'a mut Recorder,
    pub config: &'a Config,
    pub members: &'a [(u64, NodeRole)],
}

/// One simulated node.
pub struct SimNode {
    pub id: u64,
    pub role: NodeRole,
    pub power: Power,
    pub clock: Clock,
    pub boots: u64,
    seed: u64,
    machines: Option<Machines>,
    disk: Option<MemDevice>,
    pub cells: SimCells,
}

fn member_state(s: Swim) -> MemberState {
    match s {
        Swim::Alive => MemberState::Alive,
        Swim::Suspect => MemberState::Suspect,
        Swim::Down => MemberState::Dead,
        Swim::Left => MemberState::Left,
    }
}

fn refusal(e: ProposeError) -> Refusal {
    match e {
        ProposeError::NotLeader { leader } => Refusal::NotLeader { leader },
        ProposeError::Backpressure { .. } => Refusal::Backpressure,
        ProposeError::TooLarge { .. } => Refusal::TooLarge,
        _ => Refusal::Unavailable,
    }
}

impl SimNode {
    /// A node booted for the first time (blank disk).
    pub fn new(id: u64, role: NodeRole, clock: Clock, seed: u64, ctx: &mut Ctx) -> Self {
        let mut node = Self {
            id,
            role,
            power: Power::Down,
            clock,
            boots: 0,
            seed,
            machines: None,
            disk: Some(MemDevice::new(DISK_SECTORS)),
            cells: SimCells::new(),
        };
        node.boot(ctx);
        node
    }

    /// Boots from the disk (first boot or restart after a crash).
    pub fn boot(&mut self, ctx: &mut Ctx) {
        let dev = self.disk.take().expect("booting a node that is running");
        let (store, _report) = DiskStore::open(dev).expect("the disk recovers");
        let boot_seed = self.seed ^ (self.boots << 40) ^ 0xb007;
        self.boots += 1;
        let voters: Vec<u64> = ctx.members.iter().map(|(id, _)| *id).collect();
        let raft_cfg = RaftConfig::new(self.id, &voters, boot_seed);
        let durable = store.state().clone();
        let snapshot = durable.snapshot.clone();
        let raft = RawNode::restart(raft_cfg, durable).expect("recovered state is consistent");
        let swim_cfg = SwimConfig::lan().with_seed(boot_seed.rotate_left(17));
        let mut swim = SwimNode::new(swim_cfg, self.id, b"").expect("valid SWIM config");
        for (peer, _) in ctx.members.iter().filter(|(p, _)| *p != self.id) {
            swim.add_peer(*peer).expect("peer table has room");
        }
        let node_cfg = NodeConfig {
            id: self.id,
            members: ctx.members.to_vec(),
            config: ctx.config.clone(),
            boot_seed: boot_seed << 20,
        };
        let mut ctl = ControlNode::new(node_cfg, PayloadCatalog::new(&PAYLOADS));
        if snapshot.meta.index > 0 {
            ctl.restore(snapshot.meta.index, &snapshot.data)
                .expect("a snapshot we wrote restores");
        }
        self.machines = Some(Machines {
            swim,
            raft,
            store,
            ctl,
            failed: false,
        });
        self.cells = SimCells::new();
        self.power = Power::Up;
    }

    /// Power loss: the machines and cells are gone, unflushed disk writes lost or torn.
    pub fn crash(&mut self, tear: &mut Xoshiro256PlusPlus) {
        let m = self.machines.take().expect("crash of a running node");
        let mut dev = m.store.into_device();
        dev.crash(tear);
        self.disk = Some(dev);
        self.cells = SimCells::new();
        self.power = Power::Down;
    }

    /// The control node (running nodes only).
    pub fn ctl(&self) -> Option<&ControlNode> {
        self.machines.as_ref().map(|m| &m.ctl)
    }

    pub fn ctl_mut(&mut self) -> Option<&mut ControlNode> {
        self.machines.as_mut().map(|m| &mut m.ctl)
    }

    /// Raft's view, for the checks (running nodes only).
    pub fn raft(&self) -> Option<&RawNode> {
        self.machines.as_ref().map(|m| &m.raft)
    }

    /// SWIM's verdict on `peer` (running nodes only).
    pub fn member(&self, peer: u64) -> Option<Swim> {
        self.machines
            .as_ref()
            .and_then(|m| m.swim.member(peer).map(|p| p.state))
    }

    pub fn local_ms(&self, real_ms: u64) -> u64 {
        self.clock.at(real_ms)
    }

    fn raft_view(m: &Machines) -> RaftView {
        RaftView {
            term: m.raft.term(),
            leader: m.raft.leader(),
            role: match m.raft.role() {
                Role::Leader => RaftRole::Leader,
                Role::Follower => RaftRole::Follower,
                _ => RaftRole::Candidate,
            },
            commit: m.raft.commit_index(),
            applied: m.raft.applied_index(),
            failed: m.failed,
        }
    }

    /// Runs `f` on the control node with a fresh observation, then carries out its outputs.
    pub fn call(&mut self, ctx: &mut Ctx, f: impl FnOnce(&mut ControlNode, &Observed)) {
        let now = self.local_ms(ctx.real_ms);
        let Some(m) = self.machines.as_mut() else {
            return;
        };
        let members: BTreeMap<u64, MemberState> = ctx
            .members
            .iter()
            .filter(|(id, _)| *id != self.id)
            .map(|(id, _)| {
                let state = m
                    .swim
                    .member(*id)
                    .map_or(MemberState::Dead, |p| member_state(p.state));
                (*id, state)
            })
            .collect();
        let rows = self.cells.rows(now);
        let live = self.cells.live() as u32;
        let obs = Observed {
            now_ms: now,
            raft: Self::raft_view(m),
            members: &members,
            cells: Some(&rows),
            load_milli: 100 * live,
            free_mib: 256u32.saturating_sub(4 * live),
        };
        f(&mut m.ctl, &obs);
        self.outputs(ctx);
    }

    /// Carries out every output of the control node, in order, until it has no more.
    fn outputs(&mut self, ctx: &mut Ctx) {
        loop {
            let outs = match self.machines.as_mut() {
                Some(m) => m.ctl.drain(),
                None => return,
            };
            if outs.is_empty() {
                return;
            }
            for out in outs {
                self.output(ctx, out);
            }
        }
    }

    fn output(&mut self, ctx: &mut Ctx, out: Output) {
        let id = self.id;
        match out {
            Output::Propose { token, bytes } => {
                let m = self.machines.as_mut().expect("running");
                let result = if m.failed {
                    Err(Refusal::Unavailable)
                } else {
                    m.raft.propose(bytes).map_err(refusal)
                };
                self.call(ctx, |c, o| c.on_proposed(token, result, o));
            }
            Output::ReadIndex { ctx: read } => {
                let m = self.machines.as_mut().expect("running");
                if m.failed || m.raft.read_index(read).is_err() {
                    self.call(ctx, |c, o| c.on_read(read, false, o));
                }
            }
            Output::Send { to, bytes } => ctx.net.send(
                ctx.step,
                Packet {
                    from: id,
                    to,
                    payload: Payload::Control(bytes),
                },
            ),
            Output::Spawn(spawn) => {
                self.check_act(ctx, Act::Spawn(spawn.name.clone()));
                let now = self.local_ms(ctx.real_ms);
                let m = self.machines.as_mut().expect("running");
                let fenced = m
                    .ctl
                    .desired()
                    .service(&spawn.name.service)
                    .is_some_and(|s| s.fenced);
                let cell = if ctx.rng.next_u64().is_multiple_of(SPAWN_FAIL_ONE_IN) {
                    ctx.rec.counts.spawn_failures += 1;
                    None
                } else {
                    let c = self.cells.spawn(
                        spawn.name.clone(),
                        &spawn.payload,
                        spawn.restart,
                        fenced,
                        now,
                    );
                    Some(c)
                };
                let m = self.machines.as_mut().expect("running");
                m.ctl.on_spawned(&spawn.name, cell);
            }
            Output::Stop { cell, name, why } => {
                self.check_act(ctx, Act::Stop(name, why));
                self.cells.stop(cell);
            }
            Output::Event(event) => {
                if let Event::Committed {
                    command,
                    result: Ok(_),
                    index,
                } = &event
                {
                    let desired = self.machines.as_ref().expect("running").ctl.desired();
                    ctx.rec.check_operate(id, *index, command, desired);
                }
                ctx.rec.event(id, ctx.step, ctx.real_ms, event)
            }
        }
    }

    /// Records a spawn or stop with what the checks need: whether the node had quorum by
    /// its own inputs, and whether the binding acted on is the committed one.
    fn check_act(&mut self, ctx: &mut Ctx, act: Act) {
        let now = self.local_ms(ctx.real_ms);
        let m = self.machines.as_ref().expect("running");
        let members: BTreeMap<u64, MemberState> = ctx
            .members
            .iter()
            .filter(|(id, _)| *id != self.id)
            .map(|(id, _)| {
                let state = m
                    .swim
                    .member(*id)
                    .map_or(MemberState::Dead, |p| member_state(p.state));
                (*id, state)
            })
            .collect();
        let obs = Observed {
            now_ms: now,
            raft: Self::raft_view(m),
            members: &members,
            cells: None,
            load_milli: 0,
            free_mib: 0,
        };
        let quorum = m.ctl.has_quorum(&obs);
        let binding = match &act {
            Act::Spawn(name) => {
                m.ctl
                    .desired()
                    .assignment(&name.service, name.slot)
                    .is_some_and(|a| a.node == self.id && a.epoch == name.epoch)
                    || m.ctl
                        .desired()
                        .surge(&name.service, name.slot)
                        .is_some_and(|s| s.node == self.id && s.epoch == name.epoch)
            }
            Act::Stop(..) => true,
        };
        ctx.rec
            .act(self.id, ctx.step, ctx.real_ms, act, quorum, binding);
    }

    /// Hands Raft's Ready to disk, network and the control node (the kernel's order).
    fn pump(&mut self, ctx: &mut Ctx) {
        loop {
            let Some(m) = self.machines.as_mut() else {
                return;
            };
            if m.failed || !m.raft.has_ready() {
                break;
            }
            let rd = m.raft.ready();
            if let Err(e) =
                m.store
                    .persist(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref())
            {
                // As the kernel: stop taking part rather than promise what is not durable.
                m.failed = true;
                ctx.rec.disk_failure(self.id, format!("{e:?}"));
                return;
            }
            for msg in rd.messages.iter().cloned() {
                let to = msg.to;
                ctx.net.send(
                    ctx.step,
                    Packet {
                        from: self.id,
                        to,
                        payload: Payload::Raft(msg),
                    },
                );
            }
            let snapshot = rd.snapshot.clone();
            let committed: Vec<(u64, Vec<u8>)> = rd
                .committed_entries
                .iter()
                .map(|e| (e.index, e.data.clone()))
                .collect();
            let reads: Vec<u64> = rd.read_states.iter().map(|r| r.ctx).collect();
            m.raft.advance(rd);
            if let Some(s) = snapshot {
                let (index, data) = (s.meta.index, s.data);
                let m = self.machines.as_mut().expect("running");
                m.ctl
                    .restore(index, &data)
                    .expect("a leader's snapshot restores");
                ctx.rec.snapshot_installed(self.id);
            }
            for (index, data) in committed {
                ctx.rec.committed(self.id, index, &data, ctx.real_ms);
                let bytes = (!data.is_empty()).then_some(data);
                self.call(ctx, |c, o| c.on_committed(index, bytes.as_deref(), o));
            }
            for read in reads {
                self.call(ctx, |c, o| c.on_read(read, true, o));
            }
        }
        self.compact(ctx);
    }

    fn compact(&mut self, ctx: &mut Ctx) {
        let Some(m) = self.machines.as_mut() else {
            return;
        };
        let applied = m.raft.applied_index();
        if m.failed || applied < m.raft.snapshot_meta().index + COMPACT_EVERY {
            return;
        }
        let data = m.ctl.snapshot();
        if let Ok(snapshot) = m.raft.compact(applied, data) {
            let snapshot = snapshot.clone();
            if let Err(e) = m.store.save_snapshot(&snapshot) {
                m.failed = true;
                ctx.rec.disk_failure(self.id, format!("{e:?}"));
            }
            ctx.rec.counts.compactions += 1;
        }
    }

    /// A message arrived.
    pub fn deliver(&mut self, ctx: &mut Ctx, from: u64, payload: Payload) {
        let now = self.local_ms(ctx.real_ms);
        match payload {
            Payload::Swim(msg) => {
                let m = self.machines.as_mut().expect("running");
                m.swim.step(from, msg, now);
                self.swim_outputs(ctx);
            }
            Payload::Raft(msg) => {
                let m = self.machines.as_mut().expect("running");
                if !m.failed {
                    m.raft.step(msg);
                }
                self.pump(ctx);
            }
            Payload::Control(bytes) => {
                self.call(ctx, |c, o| c.on_message(from, &bytes, o));
                self.pump(ctx);
            }
        }
    }

    fn swim_outputs(&mut self, ctx: &mut Ctx) {
        let m = self.machines.as_mut().expect("running");
        let outs: Vec<SwimOutput> = m.swim.drain_outputs().collect();
        let mut verdict = false;
        for out in outs {
            match out {
                SwimOutput::Send { to, msg } => ctx.net.send(
                    ctx.step,
                    Packet {
                        from: self.id,
                        to,
                        payload: Payload::Swim(msg),
                    },
                ),
                SwimOutput::Event(e) => {
                    use membership::swim::Event as E;
                    ctx.rec.counts.membership_events += 1;
                    verdict |= !matches!(e, E::NodeSuspect { .. });
                }
            }
        }
        if verdict {
            self.call(ctx, |c, o| c.on_membership_change(o));
            self.pump(ctx);
        }
    }

    /// One 10 ms step of the node's timers: SWIM, Raft, cells, the control loop.
    pub fn tick(&mut self, ctx: &mut Ctx) {
        let now = self.local_ms(ctx.real_ms);
        let Some(m) = self.machines.as_mut() else {
            return;
        };
        m.swim.tick(now);
        self.swim_outputs(ctx);
        let m = self.machines.as_mut().expect("running");
        if !m.failed {
            m.raft.tick();
        }
        self.pump(ctx);
        self.cells.tick(now, ctx.rng);
        self.call(ctx, |c, o| c.tick(o));
        self.pump(ctx);
    }

    /// The service addresses this node answers for now (`ControlNode::answering`, what the
    /// kernel hands its `net` task after every control input): none while it is down.
    pub fn answering(&self, real_ms: u64, members: &[(u64, NodeRole)]) -> Vec<Answer> {
        let Some(m) = self.machines.as_ref() else {
            return Vec::new();
        };
        if m.ctl.desired().addresses().is_empty() {
            // Nothing to answer for (most steps of most runs): skip the observation.
            return Vec::new();
        }
        let states: BTreeMap<u64, MemberState> = members
            .iter()
            .filter(|(id, _)| *id != self.id)
            .map(|(id, _)| {
                let state = m
                    .swim
                    .member(*id)
                    .map_or(MemberState::Dead, |p| member_state(p.state));
                (*id, state)
            })
            .collect();
        let obs = Observed {
            now_ms: self.local_ms(real_ms),
            raft: Self::raft_view(m),
            members: &states,
            cells: None,
            load_milli: 0,
            free_mib: 0,
        };
        m.ctl.answering(&obs)
    }

    /// The cell of `(service, slot)` this node's control node knows by name.
    pub fn bound_here(&self, service: &str, slot: Slot) -> Option<u64> {
        let ctl = self.ctl()?;
        let a = ctl.desired().assignment(service, slot)?;
        (a.node == self.id).then_some(a.epoch)
    }
}
