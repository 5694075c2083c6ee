//! The one test network of every Raft test (behind the `testing` feature; always in this
//! crate's own tests).
//!
//! [`Network`] is the message transport: messages in flight keyed by (delivery tick, send
//! order), directed links that can be cut (a cut also eats what is already in flight on
//! it), and seeded loss, duplication and delay ([`NetFaults`]). With [`NetFaults::NONE`] it
//! is a perfect FIFO link; with faults it is the packet simulator of `tests/sim/raft`.
//! Every run is a pure function of the seed.
//!
//! [`Cluster`] is the synchronous harness over it that the paper-mapped unit tests
//! (`src/tests.rs`) and the golden transcripts (`tests/sim/raft/tests/transcript.rs`) share:
//! `RawNode`s handled in the crate's documented order (persist is implicit, send, apply,
//! advance) until the network is quiet, with an [`Observer`] to watch every step.
//! `driver::tests` runs `Driver`s over the same [`Network`]; `tests/sim/raft` runs both
//! implementations behind its adapter over it.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::{Config, Entry, Message, MessageBody, NodeId, RawNode, ReadState, Ready, Role};

/// Something with a sender and a receiver.
pub trait Routed {
    /// (from, to).
    fn route(&self) -> (NodeId, NodeId);
}

impl Routed for Message {
    fn route(&self) -> (NodeId, NodeId) {
        (self.from, self.to)
    }
}

/// Fault rates of a [`Network`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetFaults {
    pub loss_pct: u32,
    pub dup_pct: u32,
    /// Messages take 1..=max_delay_ticks ticks (reordering comes from the spread).
    pub max_delay_ticks: u64,
}

impl NetFaults {
    /// A perfect network: no loss, no duplicates, every message one tick.
    pub const NONE: NetFaults = NetFaults {
        loss_pct: 0,
        dup_pct: 0,
        max_delay_ticks: 1,
    };
}

/// Messages in flight between test nodes. Deterministic: same seed, same sends, same
/// deliveries.
#[derive(Clone, Debug)]
pub struct Network<M> {
    in_flight: BTreeMap<(u64, u64), M>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: NetFaults,
    rng: Xoshiro256PlusPlus,
}

impl<M: Routed + Clone> Network<M> {
    /// A network whose loss, duplication and delay draw from `seed`.
    pub fn new(seed: u64, faults: NetFaults) -> Network<M> {
        Network {
            in_flight: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            faults,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// A perfect FIFO network (nothing random happens on it).
    pub fn reliable() -> Network<M> {
        Network::new(0, NetFaults::NONE)
    }

    /// Replaces the fault rates (e.g. healing them for a liveness phase).
    pub fn set_faults(&mut self, faults: NetFaults) {
        self.faults = faults;
    }

    /// Replaces the set of cut directed links.
    pub fn set_cut(&mut self, cut: BTreeSet<(NodeId, NodeId)>) {
        self.cut = cut;
    }

    /// Cuts every link between `id` and each of `peers`, both ways.
    pub fn isolate(&mut self, id: NodeId, peers: impl IntoIterator<Item = NodeId>) {
        for other in peers {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether the directed link `from -> to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Sends `msg` at tick `now`: dropped if its link is cut or by the loss rate, else
    /// queued once (or twice, by the duplication rate), each copy with its own delay.
    /// The random draws happen in a fixed order, so a seed replays exactly.
    pub fn send(&mut self, msg: M, now: u64) {
        let (from, to) = msg.route();
        if self.is_cut(from, to) || self.rng.next_u32() % 100 < self.faults.loss_pct {
            return;
        }
        let copies = if self.rng.next_u32() % 100 < self.faults.dup_pct {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = 1 + self.rng.next_u64() % self.faults.max_delay_ticks.max(1);
            self.seq += 1;
            self.in_flight.insert((now + delay, self.seq), msg.clone());
        }
    }

    /// The next message due at or before tick `now`, in (due tick, send order); messages
    /// on a link cut since they were sent are lost on the way.
    pub fn pop_due(&mut self, now: u64) -> Option<M> {
        while let Some(entry) = self.in_flight.first_entry() {
            if entry.key().0 > now {
                return None;
            }
            let msg = entry.remove();
            let (from, to) = msg.route();
            if !self.is_cut(from, to) {
                return Some(msg);
            }
        }
        None
    }

    /// The next message whatever its delay (synchronous harnesses, where time stands still
    /// while the network drains: FIFO on a perfect network).
    pub fn pop_next(&mut self) -> Option<M> {
        self.pop_due(u64::MAX)
    }

    /// Removes and returns every message in flight to `to`, in delivery order.
    pub fn take_to(&mut self, to: NodeId) -> Vec<M> {
        let keys: Vec<(u64, u64)> = self
            .in_flight
            .iter()
            .filter(|(_, m)| m.route().1 == to)
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.in_flight.remove(&k))
            .collect()
    }

    /// Drops everything in flight.
    pub fn clear(&mut self) {
        self.in_flight.clear();
    }

    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

/// Upper bound of postcard's encoding of `m` (varints ≤ 10 bytes each): enough for size
/// checks without a serializer in this crate.
pub fn approx_encoded_len(m: &Message) -> usize {
    let fixed = 3 * 10 + 1;
    fixed
        + match &m.body {
            MessageBody::Append { entries, .. } => {
                40 + entries.iter().map(|e| e.batch_cost_bytes()).sum::<usize>()
            }
            MessageBody::Snapshot { data, .. } => 60 + data.len(),
            _ => 40,
        }
}

/// Watches a [`Cluster`] at work (transcripts, assertions on every message).
pub trait Observer {
    /// Node `id` produced `rd` (before the harness sends and advances it).
    fn ready(&mut self, _id: NodeId, _rd: &Ready) {}
    /// Every node's pending Ready was handled.
    fn settled(&mut self, _nodes: &BTreeMap<NodeId, RawNode>) {}
    /// `m` is about to be stepped into its receiver.
    fn deliver(&mut self, _m: &Message) {}
}

/// Watches nothing.
impl Observer for () {}

/// Messages one `stabilize` may deliver before the harness calls the cluster stuck.
const QUIESCE_DELIVERIES_MAX: usize = 10_000;

/// `RawNode`s over a perfect [`Network`], driven synchronously: time moves only in
/// [`Cluster::tick`], and every call drains the network before it returns.
pub struct Cluster {
    pub nodes: BTreeMap<NodeId, RawNode>,
    pub net: Network<Message>,
    /// Every node's committed entries, in order (reset when it installs a snapshot).
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Every node's confirmed reads.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// Largest message sent so far ([`approx_encoded_len`]).
    pub max_message_bytes: usize,
}

impl Cluster {
    /// `n` voters (ids 1..=n) whose election timeouts draw from `seed`.
    pub fn new(n: u64, seed: u64) -> Cluster {
        Cluster::with(n, seed, |_| {})
    }

    /// Like [`Cluster::new`], with `tweak` applied to every node's config.
    pub fn with(n: u64, seed: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let voters: Vec<u64> = (1..=n).collect();
        let mut nodes = BTreeMap::new();
        for &id in &voters {
            let mut cfg = Config::new(id, &voters, seed);
            tweak(&mut cfg);
            nodes.insert(id, RawNode::new(cfg).expect("valid config"));
        }
        Cluster {
            nodes,
            net: Network::reliable(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            max_message_bytes: 0,
        }
    }

    /// Node `id` (which must exist).
    pub fn node(&mut self, id: NodeId) -> &mut RawNode {
        self.nodes.get_mut(&id).expect("node")
    }

    /// Cuts `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        let peers: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.net.isolate(id, peers);
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.net.heal();
    }

    /// Handles every node's pending Readys (send, record applies and reads, advance).
    pub fn process_ready(&mut self) {
        self.process_ready_with(&mut ());
    }

    /// [`Cluster::process_ready`], showing each Ready to `obs`.
    pub fn process_ready_with(&mut self, obs: &mut impl Observer) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.nodes[&id].has_ready() {
                let rd = self.node(id).ready();
                obs.ready(id, &rd);
                if rd.snapshot.is_some() {
                    // The state machine here is the list of applied entries; a snapshot resets it.
                    self.applied.insert(id, Vec::new());
                }
                for m in &rd.messages {
                    self.max_message_bytes = self.max_message_bytes.max(approx_encoded_len(m));
                    self.net.send(m.clone(), 0);
                }
                self.applied
                    .entry(id)
                    .or_default()
                    .extend(rd.committed_entries.iter().cloned());
                self.reads
                    .entry(id)
                    .or_default()
                    .extend(rd.read_states.iter().copied());
                self.node(id).advance(rd);
            }
        }
    }

    /// Delivers until nothing is left to handle or deliver.
    pub fn stabilize(&mut self) {
        self.stabilize_with(|_| true, &mut ());
    }

    /// Like [`Cluster::stabilize`], but delivers only the messages `keep` accepts (the rest
    /// are lost).
    pub fn stabilize_only(&mut self, keep: impl FnMut(&Message) -> bool) {
        self.stabilize_with(keep, &mut ());
    }

    /// [`Cluster::stabilize_only`] under `obs`. Panics if the cluster does not quiesce.
    pub fn stabilize_with(
        &mut self,
        mut keep: impl FnMut(&Message) -> bool,
        obs: &mut impl Observer,
    ) {
        for _ in 0..QUIESCE_DELIVERIES_MAX {
            self.process_ready_with(obs);
            obs.settled(&self.nodes);
            let Some(m) = self.net.pop_next() else {
                return;
            };
            if keep(&m) {
                if let Some(node) = self.nodes.get_mut(&m.to) {
                    obs.deliver(&m);
                    node.step(m);
                }
            }
        }
        panic!("network did not quiesce");
    }

    /// `ticks` ticks of every node, stabilizing after each.
    pub fn tick(&mut self, ticks: u32) {
        self.tick_with(ticks, &mut ());
    }

    /// [`Cluster::tick`] under `obs`.
    pub fn tick_with(&mut self, ticks: u32, obs: &mut impl Observer) {
        for _ in 0..ticks {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.stabilize_with(|_| true, obs);
        }
    }

    /// Every node that believes it leads.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .map(|n| n.id())
            .collect()
    }

    /// Ticks until exactly one node leads; returns it. Panics after 200 ticks.
    pub fn elect(&mut self) -> NodeId {
        for _ in 0..200 {
            self.tick(1);
            if let [leader] = self.leaders()[..] {
                return leader;
            }
        }
        panic!("no leader elected");
    }

    /// `id` campaigns (no pre-vote in the clusters that use this) until it leads, with
    /// `keep` filtering the traffic; a first try may only teach it a newer term.
    pub fn campaign_until_leader(&mut self, id: NodeId, keep: impl Fn(&Message) -> bool) {
        for _ in 0..3 {
            self.node(id).campaign();
            self.stabilize_only(&keep);
            if self.nodes[&id].role() == Role::Leader {
                return;
            }
        }
        panic!("node {id} was not elected");
    }
}
