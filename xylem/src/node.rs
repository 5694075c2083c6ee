//! One node's whole control plane as a sans-IO state machine: [`ControlNode`].
//!
//! The kernel (`kernel/src/cluster/control.rs`) and the cluster simulator (`tests/sim/cluster`)
//! drive exactly this code. It owns the node's copy of the desired state, its reports and the
//! other nodes' latest ones, the cells it started for slots, the leader's scheduler state, the
//! write requests in flight and both halves of the lease protocol. It never touches a device,
//! a clock or a global: every input carries an [`Observed`] snapshot of the world (time, Raft's
//! view, SWIM's view, the node's cell table, its load and free memory), and every effect is an
//! [`Output`] the driver carries out.
//!
//! Driving it, in order (the driver's loop):
//! 1. Inputs: [`ControlNode::on_committed`] for every committed Raft entry in log order
//!    (`Some(bytes)` for control entries, `None` for the others), [`ControlNode::on_message`]
//!    for each control message, [`ControlNode::tick`] every 10 ms,
//!    [`ControlNode::on_membership_change`] on a SWIM verdict, [`ControlNode::submit`] for an
//!    operator write.
//! 2. [`ControlNode::drain`] the outputs and carry them out in order: `Propose` (then report
//!    the index or refusal with [`ControlNode::on_proposed`]), `ReadIndex` (report with
//!    [`ControlNode::on_read`]), `Send`, `Spawn` (report with [`ControlNode::on_spawned`]),
//!    `Stop`, `Event` (log it). Feedback may produce more outputs: drain until empty.
//!
//! What it decides (docs/control-plane.md has the prose):
//! - every node applies committed commands to its [`DesiredState`] and reconciles its own
//!   cells ([`crate::reconcile`]), only with quorum (in contact with the leader and caught up);
//! - only the leader plans ([`crate::placement`]), from the nodes' reports and SWIM's view, and
//!   not again until its last proposals applied (or a timeout);
//! - a done cell is reported, and the leader re-places its slot ([`crate::refill`]);
//! - writes answer only with their outcome ([`crate::write`]);
//! - fenced cells run only under a valid lease, and stop when it runs out, quorum or not
//!   ([`crate::lease`]).

use crate::command::{Command, Reason};
use crate::config::Config;
use crate::desired::{Applied, ApplyError, DesiredState, SnapshotError};
use crate::lease::{FenceCheck, LeaseClient, LeaseServer};
use crate::name::CellName;
use crate::placement::{self, NodeView, Pending, Refill};
use crate::reconcile::{self, Action, CellId, LocalCell, StopReason};
use crate::report::{CellReport, NodeReport, PanicNote};
use crate::service::PayloadCatalog;
use crate::status::{self, MemberState, NodeRow, QuorumView, RaftRole, StatusInput};
use crate::wire::ControlMsg;
use crate::write::{check_members, check_static, validate_write, Invalid, Refusal, WriteError};
use crate::{CellState, Epoch, NodeId, NodeRole, Slot};
use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use cell::spec::RestartPolicy;

/// Operator writes of this node in flight at once.
pub const LOCAL_REQUESTS_MAX: usize = 16;
/// Forwarded writes the leader tracks at once (all followers together).
pub const REMOTE_REQUESTS_MAX: usize = 64;
/// Committed control entries remembered to answer writes.
pub const RECENT_COMMITS_MAX: usize = 256;
/// A finished write's answer is kept this long for its caller (or a duplicate forward).
const ANSWER_KEEP_MS: u64 = 10_000;

/// How this node is set up (identical on every boot except `boot_seed`).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Every member of the cluster with its role, this node included (configuration, not
    /// hearsay: roles never come from reports).
    pub members: Vec<(NodeId, NodeRole)>,
    /// The tunables.
    pub config: Config,
    /// Differs per boot (request ids and lease sequence numbers start from it).
    pub boot_seed: u64,
}

/// Raft as the node sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftView {
    pub term: u64,
    pub leader: Option<NodeId>,
    pub role: RaftRole,
    pub commit: u64,
    pub applied: u64,
    /// The Raft store failed: the node takes no part any more.
    pub failed: bool,
}

/// One row of the node's cell table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalCellRow {
    pub id: CellId,
    pub state: CellState,
    pub restarts: u32,
    pub uptime_ms: u64,
    /// CPU the cell used recently (the driver's measure, e.g. over the last second),
    /// thousandths of a CPU.
    pub cpu_milli: u32,
    /// The TCP ports the cell accepts connections on now (its listening sockets).
    pub listening: ListenPorts,
}

/// Most listening ports a cell row carries (a service cell listens on its one port; more are
/// left out, which only makes a cell look not ready).
pub const LISTEN_PORTS_MAX: usize = 4;

/// The TCP ports one cell listens on, at most [`LISTEN_PORTS_MAX`], distinct, never 0 (a
/// fixed array keeps [`LocalCellRow`] `Copy` and allocation-free).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenPorts {
    ports: [u16; LISTEN_PORTS_MAX],
    len: u8,
}

impl ListenPorts {
    /// The first [`LISTEN_PORTS_MAX`] distinct non-zero ports of `ports`.
    pub fn new(ports: impl IntoIterator<Item = u16>) -> Self {
        let mut out = Self::default();
        for port in ports {
            if port == 0 || out.contains(port) {
                continue;
            }
            if usize::from(out.len) == LISTEN_PORTS_MAX {
                break;
            }
            out.ports[usize::from(out.len)] = port;
            out.len += 1;
        }
        out
    }

    /// Whether the cell listens on `port`.
    pub fn contains(&self, port: u16) -> bool {
        self.as_slice().contains(&port)
    }

    /// The ports, in the order given.
    pub fn as_slice(&self) -> &[u16] {
        &self.ports[..usize::from(self.len)]
    }
}

/// The world as the driver sees it at one input.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The node's monotonic clock.
    pub now_ms: u64,
    pub raft: RaftView,
    /// SWIM's verdict per member (this node may be absent: it is alive to itself).
    pub members: &'a BTreeMap<NodeId, MemberState>,
    /// The node's whole cell table, when the driver read it for this input (those this plane
    /// did not start are ignored; one it started that is missing has ended). `None` when the
    /// driver did not read it (the last known states are kept).
    pub cells: Option<&'a [LocalCellRow]>,
    /// Run-queue load, thousandths of a CPU.
    pub load_milli: u32,
    /// Free memory, MiB.
    pub free_mib: u32,
}

/// Identifies a proposal so its index (or refusal) comes back to the right place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Token {
    /// The leader's scheduler.
    Plan,
    /// An operator write of this node.
    Local(u64),
    /// A write forwarded by `from` with its request id.
    Remote { from: NodeId, req: u64 },
}

/// A cell to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnCell {
    pub name: CellName,
    pub payload: String,
    pub args: Vec<String>,
    pub restart: RestartPolicy,
    /// Its memory limit in MiB (the spec's `memory_mib`, already validated).
    pub memory_mib: u32,
}

/// What happened, for the event log and `xylem events`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A committed command was applied (or refused by apply: a no-op).
    Committed {
        index: u64,
        command: Command,
        result: Result<Applied, ApplyError>,
    },
    /// A committed control entry did not decode (skipped on every node alike).
    Undecodable { index: u64 },
    /// This node became leader of `term` (its scheduler starts fresh).
    Leading { term: u64 },
    /// Raft refused one of the scheduler's proposals.
    PlanRefused(Refusal),
    /// The lease ran out: this node stopped its fenced cells.
    LeaseExpired { cells: u32 },
}

/// An effect for the driver to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Propose `bytes` (a control entry) to Raft; answer with [`ControlNode::on_proposed`].
    Propose { token: Token, bytes: Vec<u8> },
    /// Start a ReadIndex round with `ctx`; answer with [`ControlNode::on_read`].
    ReadIndex { ctx: u64 },
    /// Send a control message.
    Send { to: NodeId, bytes: Vec<u8> },
    /// Start a cell; answer with [`ControlNode::on_spawned`].
    Spawn(SpawnCell),
    /// Close the cell's listening sockets and keep its open connections: the first half of
    /// a graceful stop (the `Stop` follows [`crate::config::OperateConfig::stop_grace_ms`]
    /// later; meanwhile the cell reports `stopping`).
    Quiesce { cell: CellId, name: CellName },
    /// Stop (or reap) a cell.
    Stop {
        cell: CellId,
        name: CellName,
        why: StopReason,
    },
    /// Log it.
    Event(Event),
}

/// Counters for `xylem stats` and the tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Spawns and stops reconcile withheld for lack of quorum.
    pub withheld_spawns: u64,
    pub withheld_stops: u64,
    /// Fenced spawns withheld for lack of a lease.
    pub lease_withheld_spawns: u64,
    /// Fenced cells stopped because the lease ran out.
    pub lease_expired_stops: u64,
    /// Spawns the driver could not carry out.
    pub spawn_failures: u64,
    /// Control messages dropped: undecodable, from a non-member, or out of place.
    pub messages_dropped: u64,
    /// Forwarded writes refused by the leader's validation.
    pub forwards_refused: u64,
    /// Writes refused because a request table was full.
    pub busy: u64,
}

/// An operator write of this node.
#[derive(Clone, Debug)]
struct LocalReq {
    deadline_ms: u64,
    hash: u64,
    state: ReqState,
}

#[derive(Clone, Debug)]
enum ReqState {
    /// Handed to the driver, index not known yet.
    Proposing,
    /// Proposed here at this index.
    Proposed(u64),
    /// Forwarded to this leader.
    Forwarded(NodeId),
    /// Finished (kept until taken or `ANSWER_KEEP_MS`).
    Done(Result<u64, WriteError>, u64),
}

/// A write forwarded to this leader.
#[derive(Clone, Debug)]
struct RemoteReq {
    deadline_ms: u64,
    hash: u64,
    index: Option<u64>,
    done: Option<Result<u64, WriteError>>,
    answered: bool,
}

/// The control plane of one node (see the module docs).
pub struct ControlNode {
    id: NodeId,
    /// How this node's previous boot ended, when in a panic: carried in every report.
    last_panic: Option<PanicNote>,
    role: NodeRole,
    members: BTreeMap<NodeId, NodeRole>,
    config: Config,
    desired: DesiredState,
    /// Every committed index handed in so far (control entries or not).
    applied_through: u64,
    /// The latest report of each member, and when it arrived.
    reports: BTreeMap<NodeId, (NodeReport, u64)>,
    report_seq: u64,
    /// Cells this node started for slots, by kernel id.
    mine: BTreeMap<CellId, CellName>,
    /// Spawns handed to the driver and not answered yet.
    spawning: BTreeSet<CellName>,
    /// Bindings this node could not start (reported as crash loops, never retried here).
    failed: BTreeSet<CellName>,
    /// Cells a stop was issued for (not issued twice).
    stopping: BTreeSet<CellId>,
    /// Cells stopping gracefully: quiesced (listeners closed), stopped at the ms, for the
    /// reason given (see [`Output::Quiesce`]).
    retiring: BTreeMap<CellId, (u64, StopReason)>,
    /// The last known state of each table row (for reports between inputs).
    rows: BTreeMap<CellId, LocalCellRow>,
    // Leader state.
    leading_term: Option<u64>,
    /// When (local ms) this node last had quorum, for the front door's answer grace
    /// (`crate::frontdoor::ANSWER_GRACE_MS`).
    quorum_seen_ms: Option<u64>,
    refill: Refill,
    pending: Vec<Pending>,
    inflight: Option<(u64, u64)>,
    lease_server: LeaseServer,
    // Node state.
    lease: LeaseClient,
    last_reconcile_ms: u64,
    last_report_ms: u64,
    last_plan_ms: u64,
    // Writes.
    next_req: u64,
    local: BTreeMap<u64, LocalReq>,
    remote: BTreeMap<(NodeId, u64), RemoteReq>,
    /// (index, hash of the entry, apply verdict), the last [`RECENT_COMMITS_MAX`] control entries.
    recent: VecDeque<(u64, u64, Result<(), ApplyError>)>,
    /// Highest index evicted from `recent` (answers below it are unknown).
    recent_floor: u64,
    stats: Stats,
    out: Vec<Output>,
}

/// FNV-1a: a deterministic, dependency-free hash to recognise our own entry in the log.
fn entry_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn is_up(state: Option<MemberState>) -> bool {
    matches!(state, Some(MemberState::Alive | MemberState::Suspect))
}

impl ControlNode {
    /// A node with an empty desired state (Raft replays the log into it).
    /// Records how this node's previous boot ended (a crash record found at boot); every
    /// report from now on carries it, so the leader's `xylem status` shows it.
    pub fn set_last_panic(&mut self, note: Option<PanicNote>) {
        self.last_panic = note;
    }

    pub fn new(cfg: NodeConfig, catalog: PayloadCatalog) -> Self {
        let mut members: BTreeMap<NodeId, NodeRole> = cfg.members.iter().copied().collect();
        let role = *members.entry(cfg.id).or_insert(NodeRole::Worker);
        let now = 0;
        Self {
            id: cfg.id,
            role,
            members,
            refill: Refill::new(&cfg.config, now),
            config: cfg.config,
            desired: DesiredState::new(catalog),
            applied_through: 0,
            reports: BTreeMap::new(),
            report_seq: 0,
            last_panic: None,
            mine: BTreeMap::new(),
            spawning: BTreeSet::new(),
            failed: BTreeSet::new(),
            stopping: BTreeSet::new(),
            retiring: BTreeMap::new(),
            rows: BTreeMap::new(),
            leading_term: None,
            quorum_seen_ms: None,
            pending: Vec::new(),
            inflight: None,
            lease_server: LeaseServer::new(),
            lease: LeaseClient::new(cfg.boot_seed),
            last_reconcile_ms: 0,
            last_report_ms: 0,
            last_plan_ms: 0,
            next_req: cfg.boot_seed,
            local: BTreeMap::new(),
            remote: BTreeMap::new(),
            recent: VecDeque::new(),
            recent_floor: 0,
            stats: Stats::default(),
            out: Vec::new(),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// A member's configured role.
    pub fn role_of(&self, id: NodeId) -> Option<NodeRole> {
        self.members.get(&id).copied()
    }

    /// Every member, in id order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members.keys().copied()
    }

    /// The desired state as applied here.
    pub fn desired(&self) -> &DesiredState {
        &self.desired
    }

    /// The tunables.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The scheduler's pending slots from its last round (leader only).
    pub fn pending(&self) -> &[Pending] {
        &self.pending
    }

    /// Takes every output produced so far, in order.
    pub fn drain(&mut self) -> Vec<Output> {
        core::mem::take(&mut self.out)
    }

    /// The local cell serving `name`, if this node runs it.
    pub fn cell_named(&self, name: &CellName) -> Option<CellId> {
        self.mine
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(id, _)| *id)
    }

    /// The cluster-wide name of a local cell, if it serves a slot.
    pub fn name_of(&self, cell: CellId) -> Option<&CellName> {
        self.mine.get(&cell)
    }

    /// Milliseconds of fenced-cell lease left (0 without one).
    pub fn lease_left_ms(&self, now_ms: u64) -> u64 {
        self.lease.left_ms(now_ms)
    }

    /// Serialises the desired state (Raft log compaction).
    pub fn snapshot(&self) -> Vec<u8> {
        self.desired.snapshot()
    }

    /// Replaces the desired state with a snapshot taken at `index` (Raft snapshot install).
    pub fn restore(&mut self, index: u64, bytes: &[u8]) -> Result<(), SnapshotError> {
        let restored = DesiredState::restore(bytes, self.desired.catalog().clone())?;
        self.desired = restored;
        self.applied_through = self.applied_through.max(index);
        // The entries up to `index` are not seen one by one: a write waiting on one of them
        // cannot learn its fate here (it times out, "outcome unknown"), never "lost".
        self.recent_floor = self.recent_floor.max(index);
        Ok(())
    }

    /// Whether this node may act authoritatively: Raft works, a leader exists and is
    /// reachable (it is us, or SWIM has not declared it down), we applied everything Raft
    /// handed us, and — a ReadIndex-style check — at least as far as the leader's latest
    /// report (younger than `report_stale_ms`) says it applied. A follower's own commit index
    /// is not enough: a node back from a crash, or long cut off, learns only the entries the
    /// leader matched with its log, and would act on assignments the cluster moved on from.
    pub fn has_quorum(&self, obs: &Observed) -> bool {
        let r = &obs.raft;
        let Some(leader) = r.leader else {
            return false;
        };
        if r.failed || r.applied < r.commit {
            return false;
        }
        if leader == self.id {
            return true;
        }
        is_up(obs.members.get(&leader).copied())
            && self
                .fresh_report(leader, obs.now_ms)
                .is_some_and(|report| self.desired.applied_index() >= report.applied_index)
    }

    fn leading(&self, obs: &Observed) -> bool {
        obs.raft.role == RaftRole::Leader && obs.raft.leader == Some(self.id) && !obs.raft.failed
    }

    /// Tracks leadership changes: a new term of ours starts the scheduler and lease server
    /// fresh (full refill budget, no history; no lease of an earlier leader is known).
    fn observe(&mut self, obs: &Observed) {
        if self.has_quorum(obs) {
            self.quorum_seen_ms = Some(obs.now_ms);
        }
        if let Some(table) = obs.cells {
            for &id in self.mine.keys() {
                let row = table.iter().find(|r| r.id == id).copied();
                // Gone from the table (purged after it finished): it ended.
                let row = row.unwrap_or(LocalCellRow {
                    id,
                    state: CellState::Exited,
                    restarts: self.rows.get(&id).map_or(0, |r| r.restarts),
                    uptime_ms: 0,
                    cpu_milli: 0,
                    listening: ListenPorts::default(),
                });
                self.rows.insert(id, row);
            }
        }
        let leading = self.leading(obs);
        if leading && self.leading_term != Some(obs.raft.term) {
            self.leading_term = Some(obs.raft.term);
            self.refill = Refill::new(&self.config, obs.now_ms);
            self.lease_server.became_leader(obs.now_ms);
            self.inflight = None;
            self.pending.clear();
            self.out.push(Output::Event(Event::Leading {
                term: obs.raft.term,
            }));
            // Followers need a fresh report of the new leader before they act (has_quorum):
            // send one now rather than at the next period.
            self.last_report_ms = obs.now_ms;
            self.broadcast_report(obs);
        } else if !leading && self.leading_term.is_some() {
            self.leading_term = None;
            self.lease_server.lost_leadership();
            self.pending.clear();
        }
    }

    // ---------------------------------------------------------------------------------------
    // Inputs

    /// A committed Raft entry, in log order: `Some(bytes)` for a control entry, `None` for
    /// any other (a leader's no-op, another tag), so writes can tell theirs was overwritten.
    pub fn on_committed(&mut self, index: u64, bytes: Option<&[u8]>, obs: &Observed) {
        // The entry handed in is applied by the time this node acts on it, whatever the
        // driver's applied counter says yet (the kernel advances it after this call):
        // otherwise `has_quorum` reads "behind", the reconcile below withholds the spawn
        // the entry asked for, and the cell starts one reconcile period (100 ms) later.
        let raft = RaftView {
            applied: obs.raft.applied.max(index),
            ..obs.raft
        };
        let obs = &Observed { raft, ..*obs };
        self.observe(obs);
        if index <= self.applied_through {
            return;
        }
        self.applied_through = index;
        let Some(bytes) = bytes else {
            self.resolve_writes();
            return;
        };
        if self.inflight.is_some_and(|(idx, _)| index >= idx) {
            self.inflight = None;
        }
        let hash = entry_hash(bytes);
        let verdict = match Command::decode(bytes) {
            Err(_) => {
                self.out.push(Output::Event(Event::Undecodable { index }));
                Err(ApplyError::UnknownService)
            }
            Ok(command) => {
                let result = self.desired.apply(index, &command);
                let verdict = result.as_ref().map(|_| ()).map_err(Clone::clone);
                self.out.push(Output::Event(Event::Committed {
                    index,
                    command,
                    result,
                }));
                verdict
            }
        };
        let applied = verdict.is_ok();
        if self.recent.len() == RECENT_COMMITS_MAX {
            if let Some((old, _, _)) = self.recent.pop_front() {
                self.recent_floor = old;
            }
        }
        self.recent.push_back((index, hash, verdict));
        self.resolve_writes();
        if applied {
            self.reconcile(obs);
        }
    }

    /// A control message from `from`.
    pub fn on_message(&mut self, from: NodeId, bytes: &[u8], obs: &Observed) {
        self.observe(obs);
        if from == self.id || !self.members.contains_key(&from) {
            self.stats.messages_dropped += 1;
            return;
        }
        let Ok(msg) = ControlMsg::decode(bytes) else {
            self.stats.messages_dropped += 1;
            return;
        };
        match msg {
            ControlMsg::Report(bytes) => self.on_report(from, &bytes, obs.now_ms),
            ControlMsg::Forward { req, command } => self.on_forward(from, req, &command, obs),
            ControlMsg::Reply { req, result } => self.on_reply(from, req, result, obs.now_ms),
            ControlMsg::LeaseRequest { seq } => {
                if self.leading(obs) {
                    self.lease_server.on_request(from, seq);
                } else {
                    self.stats.messages_dropped += 1;
                }
            }
            ControlMsg::LeaseGrant { seq, index } => {
                self.lease.on_grant(&self.config.lease, seq, index);
            }
        }
    }

    fn on_report(&mut self, from: NodeId, bytes: &[u8], now_ms: u64) {
        let Ok(report) = NodeReport::decode(bytes) else {
            self.stats.messages_dropped += 1;
            return;
        };
        if report.node != from {
            self.stats.messages_dropped += 1;
            return;
        }
        let stale = self.config.timings.report_stale_ms;
        // Newer wins; a node that restarted counts from 1 again, so an old report that has
        // gone stale gives way to anything.
        let newer = self
            .reports
            .get(&from)
            .is_none_or(|(old, at)| report.seq > old.seq || now_ms.saturating_sub(*at) >= stale);
        if newer {
            self.reports.insert(from, (report, now_ms));
        }
    }

    /// The 10 ms timer: reconcile, reports, plans, leases and write deadlines, each at its pace.
    pub fn tick(&mut self, obs: &Observed) {
        self.observe(obs);
        let now = obs.now_ms;
        self.enforce_lease(obs);
        self.finish_retiring(obs);
        self.renew_lease(obs);
        if let Some(ctx) = self.lease_server.start_round(&self.config.lease, now) {
            self.out.push(Output::ReadIndex { ctx });
        }
        let t = self.config.timings.clone();
        if now.saturating_sub(self.last_reconcile_ms) >= t.reconcile_every_ms {
            self.reconcile(obs);
        }
        if now.saturating_sub(self.last_report_ms) >= t.report_every_ms {
            self.last_report_ms = now;
            self.broadcast_report(obs);
        }
        if now.saturating_sub(self.last_plan_ms) >= t.plan_every_ms {
            self.plan(obs);
        }
        self.expire_writes(now);
    }

    /// A SWIM verdict: plan and reconcile at once (edge-triggered).
    pub fn on_membership_change(&mut self, obs: &Observed) {
        self.observe(obs);
        self.plan(obs);
        self.reconcile(obs);
    }

    /// The driver's answer to `Output::Propose`.
    pub fn on_proposed(&mut self, token: Token, result: Result<u64, Refusal>, obs: &Observed) {
        self.observe(obs);
        let now = obs.now_ms;
        match (token, result) {
            (Token::Plan, Ok(index)) => {
                let deadline = now + self.config.timings.inflight_timeout_ms;
                let last = self.inflight.map_or(index, |(i, _)| i.max(index));
                // Already applied (a one-voter group commits synchronously): nothing in flight.
                self.inflight = (last > self.applied_through).then_some((last, deadline));
            }
            (Token::Plan, Err(refusal)) => {
                self.out.push(Output::Event(Event::PlanRefused(refusal)));
            }
            (Token::Local(id), result) => {
                if let Some(req) = self.local.get_mut(&id) {
                    req.state = match result {
                        Ok(index) => ReqState::Proposed(index),
                        Err(r) => ReqState::Done(Err(WriteError::Refused(r)), now),
                    };
                }
            }
            (Token::Remote { from, req }, result) => {
                if let Some(r) = self.remote.get_mut(&(from, req)) {
                    match result {
                        Ok(index) => r.index = Some(index),
                        Err(refusal) => r.done = Some(Err(WriteError::Refused(refusal))),
                    }
                }
                self.answer_remotes();
            }
        }
        self.resolve_writes();
    }

    /// The driver's answer to `Output::ReadIndex`: confirmed by a majority, or refused. The
    /// grants carry the applied index now (at least the round's read index).
    pub fn on_read(&mut self, ctx: u64, ok: bool, obs: &Observed) {
        self.observe(obs);
        let index = obs.raft.applied;
        for (node, seq) in self.lease_server.on_read(ctx, ok, obs.now_ms) {
            if node == self.id {
                self.lease.on_grant(&self.config.lease, seq, index);
            } else {
                self.send(node, &ControlMsg::LeaseGrant { seq, index });
            }
        }
    }

    /// The driver's answer to `Output::Spawn`: the new cell's id, or `None` if it could not
    /// start one (out of memory or tasks): the binding is then reported as crash-looping, so
    /// the leader re-places it, another node first.
    pub fn on_spawned(&mut self, name: &CellName, cell: Option<CellId>) {
        self.spawning.remove(name);
        match cell {
            Some(id) => {
                self.mine.insert(id, name.clone());
                let row = LocalCellRow {
                    id,
                    state: CellState::Starting,
                    restarts: 0,
                    uptime_ms: 0,
                    cpu_milli: 0,
                    listening: ListenPorts::default(),
                };
                self.rows.insert(id, row);
            }
            None => {
                self.stats.spawn_failures += 1;
                self.failed.insert(name.clone());
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // Local reconcile and leases

    /// The local cells serving slots, with their live state (a row gone from the table is a
    /// cell that ended).
    fn local_cells(&self) -> Vec<LocalCell> {
        self.mine
            .iter()
            .map(|(id, name)| LocalCell {
                id: *id,
                service: name.service.clone(),
                slot: name.slot,
                epoch: name.epoch,
                state: self.rows.get(id).map_or(CellState::Exited, |r| r.state),
            })
            .collect()
    }

    fn is_fenced(&self, service: &str) -> bool {
        self.desired.service(service).is_some_and(|s| s.fenced)
    }

    /// Makes this node's cells match its committed assignments (module docs of
    /// [`crate::reconcile`]), holding fenced spawns to the lease.
    fn reconcile(&mut self, obs: &Observed) {
        self.last_reconcile_ms = obs.now_ms;
        let quorum = self.has_quorum(obs);
        let local = self.local_cells();
        let plan = reconcile::reconcile(&self.desired, self.id, &local, quorum);
        self.stats.withheld_spawns += u64::from(plan.withheld_spawns);
        self.stats.withheld_stops += u64::from(plan.withheld_stops);
        for action in plan.actions {
            match action {
                Action::Stop { cell_id, why } => self.stop_or_retire(cell_id, why, obs.now_ms),
                Action::Spawn {
                    service,
                    slot,
                    epoch,
                    payload,
                    args,
                    restart,
                    memory_mib,
                } => {
                    let name = CellName::new(&service, slot, epoch);
                    self.spawn(name, (payload, args, restart, memory_mib), obs);
                }
            }
        }
        // Forget failed spawns whose binding moved on.
        let desired = &self.desired;
        let me = self.id;
        self.failed.retain(|n| {
            desired
                .assignment(&n.service, n.slot)
                .is_some_and(|a| a.node == me && a.epoch == n.epoch)
        });
    }

    /// A stop reconcile asked for: graceful for a running cell of a service with a port whose
    /// slot moved or went away (quiesce now, stop after `stop_grace_ms`: clients behind the
    /// front door see no failed request), at once otherwise (a fenced service's cell must
    /// not outlive its binding; a deleted service has no port to drain; a duplicate or a
    /// cell that is not running serves nobody).
    fn stop_or_retire(&mut self, cell: CellId, why: StopReason, now_ms: u64) {
        if let Some(&(at, _)) = self.retiring.get(&cell) {
            if now_ms >= at {
                self.stop(cell, why);
            }
            return;
        }
        let grace_ms = self.config.operate.stop_grace_ms;
        let moved = matches!(why, StopReason::Unassigned | StopReason::Fenced { .. });
        let name = self.mine.get(&cell).cloned();
        let graceful = grace_ms > 0
            && moved
            && self
                .rows
                .get(&cell)
                .is_some_and(|r| r.state == CellState::Running)
            && name.as_ref().is_some_and(|n| {
                self.desired.service(&n.service).is_some_and(|s| !s.fenced)
                    && self.desired.addresses().get(&n.service).is_some()
            });
        match name {
            Some(name) if graceful => {
                self.retiring
                    .insert(cell, (now_ms.saturating_add(grace_ms), why));
                self.out.push(Output::Quiesce { cell, name });
            }
            _ => self.stop(cell, why),
        }
    }

    /// Stops the retiring cells whose grace is over, with quorum only (as every stop:
    /// reconcile rule 3; a minority keeps running what it has), and forgets those that ended
    /// meanwhile.
    fn finish_retiring(&mut self, obs: &Observed) {
        let now_ms = obs.now_ms;
        let mine = &self.mine;
        self.retiring.retain(|cell, _| mine.contains_key(cell));
        if self.retiring.is_empty() || !self.has_quorum(obs) {
            return;
        }
        let due: Vec<(CellId, StopReason)> = self
            .retiring
            .iter()
            .filter(|(_, (at, _))| now_ms >= *at)
            .map(|(cell, (_, why))| (*cell, *why))
            .collect();
        for (cell, why) in due {
            self.stop(cell, why);
        }
    }

    fn stop(&mut self, cell: CellId, why: StopReason) {
        self.retiring.remove(&cell);
        let Some(name) = self.mine.remove(&cell) else {
            return;
        };
        self.rows.remove(&cell);
        self.stopping.remove(&cell);
        self.out.push(Output::Stop { cell, name, why });
    }

    fn spawn(
        &mut self,
        name: CellName,
        spec: (String, Vec<String>, RestartPolicy, u32),
        obs: &Observed,
    ) {
        let (payload, args, restart, memory_mib) = spec;
        let (now_ms, applied) = (obs.now_ms, obs.raft.applied);
        // A witness never runs cells, whatever an assignment says (placement never binds one).
        if self.role == NodeRole::Witness
            || self.spawning.contains(&name)
            || self.failed.contains(&name)
        {
            return;
        }
        if self.is_fenced(&name.service)
            && (self.lease.left_ms(now_ms) < self.config.lease.start_remaining_ms
                || applied < self.lease.grant_index())
        {
            self.stats.lease_withheld_spawns += 1;
            return;
        }
        self.spawning.insert(name.clone());
        self.out.push(Output::Spawn(SpawnCell {
            name,
            payload,
            args,
            restart,
            memory_mib,
        }));
    }

    /// Whether this node holds, or is bound to start, a fenced cell.
    fn needs_lease(&self) -> bool {
        let bound = self
            .desired
            .assignments()
            .any(|(service, _, a)| a.node == self.id && self.is_fenced(service));
        bound || self.live_fenced().next().is_some()
    }

    /// Live local cells of fenced services.
    fn live_fenced(&self) -> impl Iterator<Item = CellId> + '_ {
        self.mine
            .iter()
            .filter(|(id, name)| {
                self.is_fenced(&name.service)
                    && self.rows.get(id).is_some_and(|r| r.state.is_live())
            })
            .map(|(id, _)| *id)
    }

    /// Stops every live fenced cell once the lease ran out, quorum or not (the one action a
    /// node without quorum takes). The cell stays listed, done, so the leader re-places it.
    fn enforce_lease(&mut self, obs: &Observed) {
        #[cfg(feature = "mutation")]
        if self.config.lease.mutation == crate::config::Mutation::IgnoreLeaseExpiry {
            return;
        }
        if self.lease.valid(obs.now_ms) {
            return;
        }
        let expired: Vec<CellId> = self
            .live_fenced()
            .filter(|id| !self.stopping.contains(id))
            .collect();
        if expired.is_empty() {
            return;
        }
        for cell in &expired {
            let name = self.mine.get(cell).cloned().expect("listed above");
            self.stopping.insert(*cell);
            self.out.push(Output::Stop {
                cell: *cell,
                name,
                why: StopReason::LeaseExpired,
            });
        }
        self.stats.lease_expired_stops += expired.len() as u64;
        self.out.push(Output::Event(Event::LeaseExpired {
            cells: u32::try_from(expired.len()).unwrap_or(u32::MAX),
        }));
    }

    /// Asks the leader for a lease while this node needs one and has quorum.
    fn renew_lease(&mut self, obs: &Observed) {
        let cfg = &self.config.lease;
        if !self.lease.due(cfg, obs.now_ms) || !self.needs_lease() || !self.has_quorum(obs) {
            return;
        }
        let Some(leader) = obs.raft.leader else {
            return;
        };
        let seq = self.lease.request(obs.now_ms);
        if leader == self.id {
            self.lease_server.on_request(self.id, seq);
        } else {
            self.send(leader, &ControlMsg::LeaseRequest { seq });
        }
    }

    // ---------------------------------------------------------------------------------------
    // Reports

    fn my_report(&mut self, obs: &Observed) -> NodeReport {
        self.report_seq += 1;
        let report = self.report(obs, true);
        self.reports.insert(self.id, (report.clone(), obs.now_ms));
        report
    }

    /// This node's report as of now at the current sequence number; `failed` adds the slots
    /// whose cells could not be started (reported as crash-looped, for the leader's refills).
    fn report(&self, obs: &Observed, failed: bool) -> NodeReport {
        let mut cells: Vec<CellReport> = self
            .mine
            .iter()
            .map(|(id, name)| {
                let row = self.rows.get(id);
                CellReport {
                    cell_id: *id as u32,
                    service: name.service.clone(),
                    slot: name.slot,
                    epoch: name.epoch,
                    // A retiring cell still runs but is on its way out (no new
                    // connections, stopped after the grace): not a running replica.
                    state: match row {
                        Some(r)
                            if r.state == CellState::Running && self.retiring.contains_key(id) =>
                        {
                            CellState::Stopping
                        }
                        Some(r) => r.state,
                        None => CellState::Exited,
                    },
                    restarts: row.map_or(0, |r| r.restarts.min(u32::from(u16::MAX)) as u16),
                    uptime_s: row
                        .map_or(0, |r| (r.uptime_ms / 1000).min(u64::from(u32::MAX)) as u32),
                    cpu_pct: row.map_or(0, |r| (r.cpu_milli / 10).min(100) as u8),
                    listening: self
                        .desired
                        .addresses()
                        .get(&name.service)
                        .is_some_and(|a| row.is_some_and(|r| r.listening.contains(a.port))),
                }
            })
            .collect();
        if failed {
            cells.extend(self.failed.iter().map(|name| CellReport {
                cell_id: 0,
                service: name.service.clone(),
                slot: name.slot,
                epoch: name.epoch,
                state: CellState::CrashLoop,
                restarts: 0,
                uptime_s: 0,
                cpu_pct: 0,
                listening: false,
            }));
        }
        let mut report = NodeReport::new(
            self.id,
            self.report_seq,
            obs.load_milli,
            obs.free_mib,
            self.desired.applied_index(),
            cells,
        );
        report.last_panic = self.last_panic.clone();
        report
    }

    fn broadcast_report(&mut self, obs: &Observed) {
        let report = self.my_report(obs);
        let Ok(bytes) = report.encode() else {
            return;
        };
        let msg = ControlMsg::Report(bytes);
        let others: Vec<NodeId> = self
            .members
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect();
        for id in others {
            self.send(id, &msg);
        }
    }

    fn send(&mut self, to: NodeId, msg: &ControlMsg) {
        if let Some(bytes) = msg.encode() {
            self.out.push(Output::Send { to, bytes });
        }
    }

    /// Reports younger than `report_stale_ms`.
    fn fresh_report(&self, id: NodeId, now_ms: u64) -> Option<&NodeReport> {
        self.reports
            .get(&id)
            .filter(|(_, at)| now_ms.saturating_sub(*at) < self.config.timings.report_stale_ms)
            .map(|(r, _)| r)
    }

    // ---------------------------------------------------------------------------------------
    // The leader's scheduler

    fn views(&self, obs: &Observed) -> Vec<NodeView> {
        self.members
            .iter()
            .map(|(&id, &role)| {
                let alive = id == self.id || is_up(obs.members.get(&id).copied());
                let draining = self.desired.is_draining(id);
                match self.fresh_report(id, obs.now_ms) {
                    Some(report) => NodeView::from_report(report, role, alive, draining),
                    None => NodeView::unreported(id, role, alive, draining),
                }
            })
            .collect()
    }

    fn plan(&mut self, obs: &Observed) {
        self.last_plan_ms = obs.now_ms;
        if !self.leading(obs) || !self.has_quorum(obs) {
            return;
        }
        if self
            .inflight
            .is_some_and(|(_, deadline)| obs.now_ms < deadline)
        {
            return;
        }
        // The leader's own row is always fresh.
        self.my_report(obs);
        let views = self.views(obs);
        let nodes: Vec<NodeId> = self.members.keys().copied().collect();
        let gate = FenceCheck {
            cfg: &self.config.lease,
            desired: &self.desired,
            server: &self.lease_server,
            reports: &self.reports,
            nodes: &nodes,
            now_ms: obs.now_ms,
        };
        #[cfg(feature = "mutation")]
        let no_wait = self.config.lease.mutation == crate::config::Mutation::NoFenceWait;
        #[cfg(not(feature = "mutation"))]
        let no_wait = false;
        let fence: &dyn placement::FenceGate = if no_wait { &placement::NoFence } else { &gate };
        let plan = placement::plan(
            &self.desired,
            &views,
            &mut self.refill,
            fence,
            &self.config,
            obs.now_ms,
        );
        self.pending = plan.pending;
        let owners = self.plan_owners(&plan.commands, obs);
        for command in plan.commands.into_iter().chain(owners) {
            if let Ok(bytes) = command.encode() {
                self.out.push(Output::Propose {
                    token: Token::Plan,
                    bytes,
                });
            }
        }
    }

    /// Service addresses move in the same round as the cells (`crate::frontdoor`), with
    /// epochs after the ones `placed` uses.
    fn plan_owners(&self, placed: &[Command], obs: &Observed) -> Vec<Command> {
        use crate::frontdoor::{plan_owners, Candidate, Liveness};
        let used = placed
            .iter()
            .filter_map(|c| match c {
                Command::Assign { epoch, .. } => Some(*epoch),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let candidates: Vec<Candidate> = self
            .members
            .iter()
            .map(|(&id, &role)| Candidate {
                id,
                role,
                liveness: match (id == self.id, obs.members.get(&id)) {
                    (true, _) | (_, Some(MemberState::Alive)) => Liveness::Alive,
                    (_, Some(MemberState::Suspect)) => Liveness::Suspect,
                    _ => Liveness::Down,
                },
                draining: self.desired.is_draining(id),
            })
            .collect();
        let desired = &self.desired;
        let replicas = |s: &str| desired.assignments_of(s).map(|(_, a)| a.node).collect();
        let next = desired.epoch_high().max(used) + 1;
        plan_owners(desired.addresses(), &candidates, replicas, next)
            .into_iter()
            .map(|c| Command::SetOwner {
                service: c.service,
                node: c.node,
                epoch: c.epoch,
            })
            .collect()
    }

    /// The addresses this node answers for now: those committed to it, only while it may
    /// act (quorum, in contact with the leader and caught up; `crate::frontdoor::answering`)
    /// or had quorum within [`crate::frontdoor::ANSWER_GRACE_MS`] (a leader election, or
    /// the few ms between a commit and its apply, must not make the owner drop the address
    /// and reset every connection through it).
    pub fn answering(&self, obs: &Observed) -> Vec<crate::frontdoor::Answer> {
        #[cfg(feature = "mutation")]
        if self.config.lease.mutation == crate::config::Mutation::AnswerWithoutQuorum {
            return crate::frontdoor::answering(self.id, true, self.desired.addresses());
        }
        let quorum = self.has_quorum(obs)
            || self.quorum_seen_ms.is_some_and(|at| {
                obs.now_ms.saturating_sub(at) <= crate::frontdoor::ANSWER_GRACE_MS
            });
        crate::frontdoor::answering(self.id, quorum, self.desired.addresses())
    }

    // ---------------------------------------------------------------------------------------
    // Writes

    /// An operator write at this node: validated (nothing invalid is ever proposed) and
    /// proposed here if this node leads, or checked statically and forwarded to the leader,
    /// which validates it against its state. Poll [`ControlNode::take_result`].
    pub fn submit(&mut self, command: Command, obs: &Observed) -> Result<u64, WriteError> {
        self.observe(obs);
        check_static(&self.desired, &command)?;
        check_members(&self.members, &self.desired, &command)?;
        let leader = obs.raft.leader.ok_or(WriteError::NoQuorum)?;
        // A follower only forwards (the leader checks the state part), so it needs a leader it can
        // reach, not to have applied the newest entries itself: right after a commit it may
        // be a few ms behind, which must not read as "no quorum".
        let may_write = if leader == self.id {
            // Leading is enough: entries committed but not yet applied here are a few ms
            // behind, and apply (the log's order) has the last word on a write validated
            // against a state that missed them — its answer is then the apply's refusal.
            self.leading(obs)
        } else {
            !obs.raft.failed && is_up(obs.members.get(&leader).copied())
        };
        if !may_write {
            return Err(WriteError::NoQuorum);
        }
        // The leader checks against its state (authoritative); a follower leaves the state
        // part to the leader, whose answer comes back typed.
        let bytes = if leader == self.id {
            validate_write(&self.desired, &command)?
        } else {
            check_static(&self.desired, &command)?
        };
        self.prune_answers(obs.now_ms);
        if self.local.len() >= LOCAL_REQUESTS_MAX {
            self.stats.busy += 1;
            return Err(WriteError::Busy);
        }
        let id = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        let deadline_ms = obs.now_ms + self.config.timings.write_timeout_ms;
        let hash = entry_hash(&bytes);
        let state = if leader == self.id {
            self.out.push(Output::Propose {
                token: Token::Local(id),
                bytes,
            });
            ReqState::Proposing
        } else {
            self.send(
                leader,
                &ControlMsg::Forward {
                    req: id,
                    command: bytes,
                },
            );
            ReqState::Forwarded(leader)
        };
        self.local.insert(
            id,
            LocalReq {
                deadline_ms,
                hash,
                state,
            },
        );
        Ok(id)
    }

    /// The outcome of write `id`: `None` while it is pending (or unknown), then once
    /// `Some(Ok(committed_index))` or `Some(Err(why))`.
    pub fn take_result(&mut self, id: u64) -> Option<Result<u64, WriteError>> {
        match self.local.get(&id).map(|r| &r.state) {
            Some(ReqState::Done(..)) => match self.local.remove(&id)?.state {
                ReqState::Done(result, _) => Some(result),
                _ => None,
            },
            _ => None,
        }
    }

    /// What committed at `index`: ours (`hash`) applied or rejected, another entry, or not known.
    fn outcome(&self, index: u64, hash: u64) -> Option<Result<u64, WriteError>> {
        if index > self.applied_through || index <= self.recent_floor {
            return None;
        }
        match self.recent.iter().find(|(i, _, _)| *i == index) {
            Some((_, h, verdict)) if *h == hash => Some(match verdict {
                Ok(()) => Ok(index),
                Err(error) => Err(WriteError::Rejected {
                    index,
                    error: error.clone(),
                }),
            }),
            _ => Some(Err(WriteError::Lost { index })),
        }
    }

    fn resolve_writes(&mut self) {
        let ids: Vec<u64> = self.local.keys().copied().collect();
        for id in ids {
            let req = &self.local[&id];
            if let ReqState::Proposed(index) = req.state {
                if let Some(result) = self.outcome(index, req.hash) {
                    let deadline = req.deadline_ms;
                    let entry = self.local.get_mut(&id).expect("listed");
                    entry.state = ReqState::Done(result, deadline);
                }
            }
        }
        let keys: Vec<(NodeId, u64)> = self.remote.keys().copied().collect();
        for key in keys {
            let r = &self.remote[&key];
            if let (Some(index), None) = (r.index, &r.done) {
                if let Some(result) = self.outcome(index, r.hash) {
                    self.remote.get_mut(&key).expect("listed").done = Some(result);
                }
            }
        }
        self.answer_remotes();
    }

    /// Sends the answer of every finished forwarded write (once; the entry stays to answer a
    /// duplicate forward until it expires).
    fn answer_remotes(&mut self) {
        let mut replies = Vec::new();
        for ((from, req), r) in self.remote.iter_mut() {
            if let (Some(result), false) = (&r.done, r.answered) {
                replies.push((*from, *req, result.clone()));
                r.answered = true;
            }
        }
        for (from, req, result) in replies {
            self.reply(from, req, result);
        }
    }

    fn reply(&mut self, to: NodeId, req: u64, result: Result<u64, WriteError>) {
        self.send(to, &ControlMsg::Reply { req, result });
    }

    fn on_forward(&mut self, from: NodeId, req: u64, command: &[u8], obs: &Observed) {
        if let Some(r) = self.remote.get(&(from, req)) {
            // A duplicate: answer again if the answer is known, else keep waiting.
            if let Some(result) = r.done.clone() {
                self.reply(from, req, result);
            }
            return;
        }
        if !self.leading(obs) {
            let leader = obs.raft.leader;
            let refusal = Refusal::NotLeader { leader };
            return self.reply(from, req, Err(WriteError::Refused(refusal)));
        }
        // Exactly the validation a local write gets (a forged scheduler command is refused).
        let checked = Command::decode(command)
            .map_err(|_| WriteError::Invalid(Invalid::Undecodable))
            .and_then(|c| {
                check_members(&self.members, &self.desired, &c)?;
                validate_write(&self.desired, &c)
            });
        let bytes = match checked {
            // Leading (checked above) is enough, as for a local write (see `submit`).
            Ok(bytes) => bytes,
            Err(e) => {
                self.stats.forwards_refused += 1;
                return self.reply(from, req, Err(e));
            }
        };
        self.prune_answers(obs.now_ms);
        if self.remote.len() >= REMOTE_REQUESTS_MAX {
            self.stats.busy += 1;
            return self.reply(from, req, Err(WriteError::Busy));
        }
        let entry = RemoteReq {
            deadline_ms: obs.now_ms + self.config.timings.write_timeout_ms,
            hash: entry_hash(&bytes),
            index: None,
            done: None,
            answered: false,
        };
        self.remote.insert((from, req), entry);
        self.out.push(Output::Propose {
            token: Token::Remote { from, req },
            bytes,
        });
    }

    fn on_reply(&mut self, from: NodeId, req: u64, result: Result<u64, WriteError>, now_ms: u64) {
        let Some(r) = self.local.get_mut(&req) else {
            return;
        };
        match r.state {
            ReqState::Forwarded(leader) if leader == from => {
                r.state = ReqState::Done(result, now_ms);
            }
            _ => self.stats.messages_dropped += 1,
        }
    }

    /// Writes past their deadline answer "timed out, outcome unknown".
    fn expire_writes(&mut self, now_ms: u64) {
        let after_ms = self.config.timings.write_timeout_ms;
        for r in self.local.values_mut() {
            let pending = !matches!(r.state, ReqState::Done(..));
            if pending && now_ms >= r.deadline_ms {
                r.state = ReqState::Done(Err(WriteError::TimedOut { after_ms }), now_ms);
            }
        }
        self.prune_answers(now_ms);
    }

    /// Drops answers nobody took, and forwarded writes long past their deadline.
    fn prune_answers(&mut self, now_ms: u64) {
        self.local.retain(|_, r| match r.state {
            ReqState::Done(_, at) => now_ms.saturating_sub(at) < ANSWER_KEEP_MS,
            _ => true,
        });
        self.remote
            .retain(|_, r| now_ms < r.deadline_ms.saturating_add(ANSWER_KEEP_MS));
    }

    // ---------------------------------------------------------------------------------------
    // Status

    /// Everything `xylem status` shows, as this node knows it. `name` spells node ids.
    pub fn status(&self, obs: &Observed, name: &dyn Fn(NodeId) -> String) -> StatusInput {
        let quorum = self.has_quorum(obs);
        let leader = obs.raft.leader;
        let up = |id: NodeId| id == self.id || is_up(obs.members.get(&id).copied());
        let reachable = self.members.keys().filter(|&&id| up(id)).count();
        let lease_left_ms = self.needs_lease().then(|| self.lease.left_ms(obs.now_ms));
        let quorum_view = QuorumView {
            leader: leader.map(name),
            term: obs.raft.term,
            voters_reachable: u32::try_from(reachable).unwrap_or(u32::MAX),
            voters_total: u32::try_from(self.members.len()).unwrap_or(u32::MAX),
            quorum,
            lease_left_ms,
        };
        // Reports of nodes that are up and fresh; this node's own row is live.
        let mut reports: Vec<NodeReport> = self
            .members
            .keys()
            .filter(|&&id| id != self.id && up(id))
            .filter_map(|&id| self.fresh_report(id, obs.now_ms).cloned())
            .collect();
        let mut me = self.report(obs, false);
        me.load_milli = obs.load_milli;
        me.free_mib = obs.free_mib;
        reports.push(me);
        let nodes = self
            .members
            .iter()
            .map(|(&id, &role)| {
                let report = reports.iter().find(|r| r.node == id);
                NodeRow {
                    name: name(id),
                    role,
                    member: if id == self.id {
                        MemberState::Alive
                    } else {
                        obs.members.get(&id).copied().unwrap_or(MemberState::Dead)
                    },
                    raft: self.raft_role_of(id, obs),
                    load_milli: report.map_or(0, |r| r.load_milli),
                    free_mib: report.map_or(0, |r| r.free_mib),
                    cells: report.map_or(0, |r| r.cell_count),
                    maint: self.desired.maintenance(id),
                    last_panic: report.and_then(|r| r.last_panic.clone()),
                }
            })
            .collect();
        let services = status::service_rows(&self.desired, &reports, &self.pending);
        let cells = reports
            .iter()
            .flat_map(|r| status::cell_rows(&name(r.node), r))
            .collect();
        StatusInput {
            quorum: quorum_view,
            nodes,
            services,
            cells,
        }
    }

    /// A node's Raft role as this node can know it: its own exactly, the leader's, and for
    /// the others `follower` when a leader exists and SWIM sees them up (every node answers
    /// the same way when they agree on the leader).
    fn raft_role_of(&self, id: NodeId, obs: &Observed) -> RaftRole {
        if id == self.id {
            obs.raft.role
        } else if Some(id) == obs.raft.leader {
            RaftRole::Leader
        } else if obs.raft.leader.is_some() && is_up(obs.members.get(&id).copied()) {
            RaftRole::Follower
        } else {
            RaftRole::Unknown
        }
    }
}

/// Helpers shared by the drivers.
impl ControlNode {
    /// The slot bindings of this node (for `cell ls` and tests): (service, slot, epoch).
    pub fn bindings(&self) -> Vec<(String, Slot, Epoch)> {
        self.desired
            .assignments()
            .filter(|(_, _, a)| a.node == self.id)
            .map(|(s, slot, a)| (String::from(s), slot, a.epoch))
            .collect()
    }

    /// The reason text of a committed command for logs: `op service/slot -> node @epoch`.
    pub fn reason_of(command: &Command) -> Option<Reason> {
        match command {
            Command::Assign { reason, .. }
            | Command::Unassign { reason, .. }
            | Command::Surge { reason, .. }
            | Command::Promote { reason, .. }
            | Command::Unsurge { reason, .. } => Some(*reason),
            Command::Rollback { .. } => Some(Reason::Rollout),
            Command::AutoScale { .. } => Some(Reason::Autoscale),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
