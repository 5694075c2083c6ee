//! SWIM failure detector with Lifeguard refinements, as a sans-IO state machine.
//!
//! Follows Das, Gupta, Motivala, "SWIM: Scalable Weakly-consistent Infection-style
//! Process Group Membership Protocol" (DSN 2002) and Dadgar, Phillips, Currey,
//! "Lifeguard: Local Health Awareness for More Accurate Failure Detection" (2018):
//!
//! - §4.1 probing: one `Ping` per protocol period, then `PingReq` through k peers;
//! - §4.2 suspicion with incarnation numbers: a live node refutes with a higher one;
//! - §4.3 round-robin probe order over a shuffled member list, new members inserted at
//!   random positions;
//! - §4.4 piggybacked dissemination, each update sent `lambda * ceil(log2(n + 1))` times,
//!   plus memberlist-style gossip rounds while updates are pending;
//! - Lifeguard: local health multiplier (failed probes without nacks and refutations slow
//!   our own timers), dynamic suspicion timeouts, nacks from ping-req relays.
//!
//! Additions: join through a seed with a paged state sync (`Join` / `SyncReq` /
//! `SyncPage`), periodic anti-entropy sync, graceful leave, reconnect pings to Down members
//! so a healed partition or a restarted node comes back by refuting, and local stall
//! detection (a node that was paused does not blame its probe target for its own pause).
//!
//! Driving it (the kernel, or `tests/sim/swim`), in order:
//! 1. [`Swim::new`], then [`Swim::join`] a seed, or [`Swim::add_peer`] each static peer;
//! 2. on every received message call [`Swim::step`], on every timer [`Swim::tick`];
//! 3. after each call, [`Swim::drain_outputs`]: send each [`Output::Send`] (postcard),
//!    post each [`Output::Event`] to the kernel event queue;
//! 4. arm a timer for [`Swim::next_deadline_ms`].
//!
//! Key types: [`Swim`], [`Config`], [`Message`], [`Update`], [`Output`], [`Event`],
//! [`MemberState`]. Diagram and timing math: `docs/membership.md`.

mod config;
mod gossip;
mod handlers;
mod member;
mod message;
mod state;
mod suspicion;
mod timers;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

pub use config::{Config, ConfigError, MAX_META_BYTES};
pub use member::{Member, MemberState, MemberView};
pub use message::{Incarnation, Message, Update, HEADER_MAX_BYTES};
pub use suspicion::{ceil_log2, log2_milli, suspicion_min_ms};

use crate::NodeId;
use gossip::BroadcastQueue;
use suspicion::Suspicion;

/// Seeds remembered for join and rejoin.
const MAX_SEEDS: usize = 16;
/// Unanswered sync page requests before the session is abandoned.
const SYNC_MAX_RETRIES: u32 = 5;
/// Incarnation a node starts with; static peers are assumed at 0 so any real Alive wins.
pub const INITIAL_INCARNATION: Incarnation = 1;

/// How fast remembered lateness fades: a 100 ms stall stretches new suspicions for ~2 s.
const LATE_DECAY_MS_PER_S: u64 = 50;
/// Remembered lateness never stretches a suspicion by more than this: a node that is
/// always late is still detected in bounded time.
const LATE_RECENT_CAP_MS: u64 = 100;

/// What the state machine asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `msg` to node `to` (unreliable datagram is fine).
    Send { to: NodeId, msg: Message },
    /// A membership transition for the kernel event queue.
    Event(Event),
}

/// Membership transitions, in the order this node observed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member became known, or came back from Down/Left with a newer incarnation.
    NodeUp { id: NodeId },
    /// A member missed its probes and is suspected at `incarnation`.
    NodeSuspect {
        id: NodeId,
        incarnation: Incarnation,
    },
    /// A suspected member refuted: it is alive at `incarnation`.
    NodeAlive {
        id: NodeId,
        incarnation: Incarnation,
    },
    /// A member was declared failed.
    NodeDown { id: NodeId, reason: DownReason },
    /// A member left gracefully (no NodeDown is emitted for it).
    NodeLeft { id: NodeId },
    /// This node ran `late_ms` behind its own deadlines (its VM was not scheduled, or its
    /// driver was starved): until [`Event::SelfTrusted`] it withholds its own verdicts, so
    /// the silence it caused itself never becomes an accusation.
    SelfSuspect { late_ms: u64 },
    /// The self-suspicion window ended on time: this node's verdicts count again.
    SelfTrusted,
}

/// Why a member was declared Down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// Our own suspicion of it timed out.
    SuspicionTimeout,
    /// Another node's suspicion timed out and it told us.
    ReportedBy { reporter: NodeId },
}

/// Operating errors of the public API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The config failed validation.
    InvalidConfig(ConfigError),
    /// Metadata longer than [`MAX_META_BYTES`].
    MetaTooLarge { len: usize },
    /// A node cannot be its own peer or seed.
    SelfAsPeer,
    /// The member table or seed list is full.
    TableFull,
    /// The node already called [`Swim::leave`].
    Leaving,
}

/// Counters for `members`/`netstat`-style shell output and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every `Output::Send` produced.
    pub messages_sent: u64,
    /// Direct probes (one per protocol period with a target).
    pub probes_sent: u64,
    /// Ping-reqs sent after a direct probe timed out.
    pub ping_reqs_sent: u64,
    /// Lifeguard nacks received for our probes.
    pub nacks_received: u64,
    /// Probes with no ack by the end of their period.
    pub probe_failures: u64,
    /// Times we raised our incarnation to refute a suspicion, death or leave.
    pub refutations: u64,
    /// Late calls: we were driven more than `late_tolerance_ms` after our own deadline,
    /// or the driver reported its own timer that late.
    pub stalls: u64,
    /// The worst lateness seen, in ms.
    pub late_max_ms: u64,
    /// Own verdicts (a suspicion, a confirmation, a Down) withheld because this node
    /// suspected itself at the time.
    pub verdicts_withheld: u64,
    /// Outputs dropped because the driver did not drain (`max_outputs`).
    pub outputs_dropped: u64,
    /// Ping-req relays evicted because `max_relays` were in flight.
    pub relays_dropped: u64,
    /// New members refused because the table was full of live members.
    pub members_dropped: u64,
    /// Messages or updates rejected as malformed (oversized metadata or lists).
    pub malformed: u64,
    /// Messages addressed to another identity, or from ourselves.
    pub misrouted: u64,
    /// Dead verdicts taken as suspicions because the member itself spoke to us too
    /// recently to have died (a healed partition's stale gossip).
    pub deaths_doubted: u64,
}

/// The probe of the current protocol period.
#[derive(Clone, Copy, Debug)]
struct Probe {
    target: NodeId,
    seq: u32,
    started_ms: u64,
    /// When the direct ping is given up and ping-reqs go out.
    timeout_at_ms: u64,
    /// End of the protocol period: no ack by then means suspect.
    period_end_ms: u64,
    /// How many ping-reqs went out (0 = not yet).
    indirect_sent: u32,
    nacks: u32,
    /// Its deadlines were pushed back once already because we ran late (once only: a
    /// driver with a coarse tick is always a little late).
    deferred: bool,
}

/// A ping we send on behalf of another node's ping-req.
#[derive(Clone, Copy, Debug)]
struct Relay {
    seq: u32,
    requester: NodeId,
    requester_seq: u32,
    target: NodeId,
    expires_ms: u64,
}

/// A paged state transfer in progress.
#[derive(Clone, Copy, Debug)]
struct SyncSession {
    peer: NodeId,
    after: Option<NodeId>,
    sent_ms: u64,
    retries: u32,
}

/// One node's SWIM state machine.
pub struct Swim {
    config: Config,
    self_id: NodeId,
    incarnation: Incarnation,
    meta: Vec<u8>,
    rng: Xoshiro256PlusPlus,
    members: BTreeMap<NodeId, Member>,
    suspicions: BTreeMap<NodeId, Suspicion>,
    /// Alive and Suspect members in probe order (SWIM §4.3).
    probe_list: Vec<NodeId>,
    probe_index: usize,
    probe: Option<Probe>,
    relays: Vec<Relay>,
    broadcasts: BroadcastQueue,
    outputs: Vec<Output>,
    seeds: Vec<NodeId>,
    joined: bool,
    sync: Option<SyncSession>,
    /// Lifeguard local health multiplier, 0..=awareness_max.
    lhm: u32,
    seq: u32,
    leaving: bool,
    started: bool,
    last_call_ms: u64,
    /// Our earliest deadline as of the end of the last call: the timer we asked for. A call
    /// much later than this means we, not our peers, were slow.
    armed_ms: u64,
    /// While `last_call_ms` is before this, we suspect ourselves (we ran late recently) and
    /// our own probe failures and suspicion timeouts accuse nobody.
    distrust_until_ms: Option<u64>,
    /// The worst recent lateness and when it was seen: it decays by
    /// [`LATE_DECAY_MS_PER_S`] per second and stretches new suspicion timeouts.
    late_peak: (u64, u64),
    next_probe_ms: u64,
    next_gossip_ms: u64,
    next_reconnect_ms: u64,
    next_sync_ms: u64,
    next_join_ms: u64,
    stats: Stats,
}

impl Swim {
    /// A node `self_id` carrying `meta` (<= [`MAX_META_BYTES`]), alone until it joins.
    pub fn new(config: Config, self_id: NodeId, meta: &[u8]) -> Result<Self, Error> {
        config.validate().map_err(Error::InvalidConfig)?;
        if meta.len() > MAX_META_BYTES {
            return Err(Error::MetaTooLarge { len: meta.len() });
        }
        let rng = Xoshiro256PlusPlus::seed_from_u64(config.seed ^ self_id.rotate_left(32));
        Ok(Self {
            broadcasts: BroadcastQueue::new(config.max_pending_updates),
            config,
            self_id,
            incarnation: INITIAL_INCARNATION,
            meta: meta.to_vec(),
            rng,
            members: BTreeMap::new(),
            suspicions: BTreeMap::new(),
            probe_list: Vec::new(),
            probe_index: 0,
            probe: None,
            relays: Vec::new(),
            outputs: Vec::new(),
            seeds: Vec::new(),
            joined: false,
            sync: None,
            lhm: 0,
            seq: 0,
            leaving: false,
            started: false,
            last_call_ms: 0,
            armed_ms: 0,
            distrust_until_ms: None,
            late_peak: (0, 0),
            next_probe_ms: 0,
            next_gossip_ms: 0,
            next_reconnect_ms: 0,
            next_sync_ms: 0,
            next_join_ms: 0,
            stats: Stats::default(),
        })
    }

    /// Joins through `seed`: sends `Join` now and retries every `join_retry_ms` until a
    /// `SyncPage` arrives. Call once per seed for several seeds.
    pub fn join(&mut self, seed: NodeId) -> Result<(), Error> {
        if seed == self.self_id {
            return Err(Error::SelfAsPeer);
        }
        if self.leaving {
            return Err(Error::Leaving);
        }
        if !self.seeds.contains(&seed) {
            if self.seeds.len() == MAX_SEEDS {
                return Err(Error::TableFull);
            }
            self.seeds.push(seed);
        }
        self.joined = false;
        self.send_join(seed);
        self.next_join_ms = self.last_call_ms + self.config.join_retry_ms;
        Ok(())
    }

    /// Adds a static peer, assumed alive at incarnation 0 (its first real Alive wins),
    /// and queues our own Alive so it learns our metadata.
    pub fn add_peer(&mut self, id: NodeId) -> Result<(), Error> {
        self.add_member(id, 0, &[])?;
        let me = self.self_alive();
        self.broadcasts.push(me);
        Ok(())
    }

    /// Adds a member known to be alive at `incarnation` (pre-formed clusters, restoring a
    /// committed member list). No-op if it is already known. Emits `NodeUp`.
    pub fn add_member(
        &mut self,
        id: NodeId,
        incarnation: Incarnation,
        meta: &[u8],
    ) -> Result<(), Error> {
        if id == self.self_id {
            return Err(Error::SelfAsPeer);
        }
        if meta.len() > MAX_META_BYTES {
            return Err(Error::MetaTooLarge { len: meta.len() });
        }
        if self.members.contains_key(&id) {
            return Ok(());
        }
        if !self.insert_member(id, incarnation, meta.to_vec(), self.last_call_ms) {
            return Err(Error::TableFull);
        }
        Ok(())
    }

    /// Leaves gracefully: gossips `Left` for our incarnation and stops probing. Keep
    /// ticking until [`Swim::has_left`] so the news spreads.
    pub fn leave(&mut self) -> Result<(), Error> {
        if self.leaving {
            return Err(Error::Leaving);
        }
        self.leaving = true;
        self.probe = None;
        self.broadcasts.push(Update::Left {
            id: self.self_id,
            incarnation: self.incarnation,
        });
        // Gossip at the next tick rather than a period from now.
        self.next_gossip_ms = self.last_call_ms;
        Ok(())
    }

    /// True once `leave` was called and our `Left` has been fully transmitted.
    pub fn has_left(&self) -> bool {
        self.leaving && !self.broadcasts.has_update_about(self.self_id)
    }

    /// Replaces our metadata: bumps our incarnation and gossips the new Alive.
    pub fn set_meta(&mut self, meta: &[u8]) -> Result<(), Error> {
        if meta.len() > MAX_META_BYTES {
            return Err(Error::MetaTooLarge { len: meta.len() });
        }
        if self.leaving {
            return Err(Error::Leaving);
        }
        self.meta = meta.to_vec();
        self.incarnation += 1;
        let me = self.self_alive();
        self.broadcasts.push(me);
        Ok(())
    }

    /// Takes every pending output, oldest first.
    pub fn drain_outputs(&mut self) -> alloc::vec::Drain<'_, Output> {
        self.outputs.drain(..)
    }

    /// True once a seed answered our `join` (always false without seeds).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// Our id.
    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// Our current incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Our metadata blob.
    pub fn meta(&self) -> &[u8] {
        &self.meta
    }

    /// Lifeguard local health multiplier (0 = healthy).
    pub fn local_health(&self) -> u32 {
        self.lhm
    }

    /// True while this node suspects itself: it ran late recently (see
    /// [`Config::late_tolerance_ms`]) and withholds its own verdicts. A driver must not act
    /// on this node's view of others meanwhile (the kernel's planner waits).
    pub fn suspects_self(&self) -> bool {
        self.distrust_until_ms.is_some()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Updates evicted from the broadcast queue by overflow.
    pub fn gossip_dropped(&self) -> u64 {
        self.broadcasts.dropped
    }

    /// Updates waiting to be piggybacked.
    pub fn pending_updates(&self) -> usize {
        self.broadcasts.len()
    }

    /// One member's entry (never ourselves).
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    /// Alive + Suspect members, ourselves included (the `n` of the formulas).
    pub fn active_count(&self) -> usize {
        self.probe_list.len() + 1
    }

    /// Every row for the `members` shell command: ourselves first, then by id.
    pub fn members(&self) -> impl Iterator<Item = MemberView<'_>> + '_ {
        let me = MemberView {
            id: self.self_id,
            state: if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            incarnation: self.incarnation,
            last_heard_ms: self.last_call_ms,
            meta: &self.meta,
            is_self: true,
        };
        core::iter::once(me).chain(self.members.values().map(|m| MemberView {
            id: m.id,
            state: m.state,
            incarnation: m.incarnation,
            last_heard_ms: m.last_heard_ms,
            meta: &m.meta,
            is_self: false,
        }))
    }

    /// The earliest time [`Swim::tick`] has work to do (`u64::MAX`: nothing, which only
    /// happens once a leave is fully gossiped). The driver may tick earlier.
    pub fn next_deadline_ms(&self) -> u64 {
        if !self.started {
            return self.last_call_ms;
        }
        if self.leaving {
            // Only the gossip of our Left remains.
            return if self.broadcasts.is_empty() {
                u64::MAX
            } else {
                self.next_gossip_ms
            };
        }
        let mut deadline = self.next_reconnect_ms.min(self.next_probe_ms);
        if let Some(p) = &self.probe {
            let due = if p.indirect_sent == 0 {
                p.timeout_at_ms
            } else {
                p.period_end_ms
            };
            deadline = deadline.min(due);
        }
        if !self.broadcasts.is_empty() {
            deadline = deadline.min(self.next_gossip_ms);
        }
        for s in self.suspicions.values() {
            deadline = deadline.min(s.deadline_ms());
        }
        for r in &self.relays {
            deadline = deadline.min(r.expires_ms);
        }
        if !self.joined && !self.seeds.is_empty() {
            deadline = deadline.min(self.next_join_ms);
        }
        if let Some(s) = &self.sync {
            deadline = deadline.min(s.sent_ms + self.config.join_retry_ms);
        }
        if self.config.sync_interval_ms > 0 {
            deadline = deadline.min(self.next_sync_ms);
        }
        if let Some(until) = self.distrust_until_ms {
            deadline = deadline.min(until);
        }
        deadline
    }

    // ----- small helpers shared by the submodules -----

    fn self_alive(&self) -> Update {
        Update::Alive {
            id: self.self_id,
            incarnation: self.incarnation,
            meta: self.meta.clone(),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn rand_below(&mut self, n: usize) -> usize {
        assert!(n > 0, "empty range");
        (self.rng.next_u64() % n as u64) as usize
    }

    /// Current protocol period, stretched by the local health multiplier.
    fn probe_period_ms(&self) -> u64 {
        self.config.probe_interval_ms * u64::from(self.lhm + 1)
    }

    /// Times each update is piggybacked: lambda * ceil(log2(n + 1)).
    fn retransmit_limit(&self) -> u32 {
        let n = self.active_count() as u64;
        self.config.retransmit_mult * ceil_log2(n + 1).max(1)
    }

    fn adjust_health(&mut self, delta: i64) {
        let next = (i64::from(self.lhm) + delta).clamp(0, i64::from(self.config.awareness_max));
        self.lhm = next as u32;
        debug_assert!(self.lhm <= self.config.awareness_max);
    }

    fn push_output(&mut self, output: Output) {
        if self.outputs.len() >= self.config.max_outputs {
            self.stats.outputs_dropped += 1;
            return;
        }
        self.outputs.push(output);
    }

    fn emit(&mut self, event: Event) {
        self.push_output(Output::Event(event));
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        assert!(to != self.self_id, "never send to ourselves");
        assert!(
            msg.max_encoded_len() <= self.config.max_message_bytes,
            "message over budget"
        );
        self.stats.messages_sent += 1;
        self.push_output(Output::Send { to, msg });
    }

    fn send_join(&mut self, seed: NodeId) {
        let msg = Message::Join {
            incarnation: self.incarnation,
            meta: self.meta.clone(),
        };
        self.send(seed, msg);
    }

    /// Updates to piggyback on a message to `to`: first our view of `to` itself if it is
    /// not Alive (so a wrongly suspected or declared node learns it and refutes), then the
    /// least-transmitted pending updates that fit the byte budget.
    fn piggyback(&mut self, to: NodeId) -> Vec<Update> {
        let mut out = Vec::new();
        let mut budget = self.config.max_message_bytes - HEADER_MAX_BYTES;
        let mut skip = None;
        if let Some(m) = self.members.get(&to) {
            if m.state != MemberState::Alive {
                let u = m.to_update();
                budget -= u.max_encoded_len();
                out.push(u);
                skip = Some(to);
            }
        }
        let limit = self.retransmit_limit();
        let room = self.config.max_piggyback - out.len();
        self.broadcasts.select(limit, budget, room, skip, &mut out);
        debug_assert!(out.len() <= self.config.max_piggyback);
        out
    }

    /// Up to `k` distinct random active members other than `exclude`.
    fn sample_active(&mut self, k: usize, exclude: NodeId) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(k);
        let len = self.probe_list.len();
        if len == 0 || k == 0 {
            return out;
        }
        let want = k.min(len);
        let mut attempts = 0;
        while out.len() < want && attempts < want * 4 + 4 {
            attempts += 1;
            let pick = self.rand_below(len);
            let id = self.probe_list[pick];
            if id != exclude && !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }
}
