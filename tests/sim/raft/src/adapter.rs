//! The one adapter trait both Raft implementations are driven through.

/// Something the state machine must apply.
#[derive(Clone, Debug)]
pub enum Applied {
    /// A committed entry (empty data = leader no-op).
    Entry {
        index: u64,
        term: u64,
        data: Vec<u8>,
    },
    /// A snapshot to load (from the leader, or the durable one after a restart).
    Snapshot { index: u64, data: Vec<u8> },
}

/// What handling the pending `Ready`s produced.
#[derive(Debug)]
pub struct Output<M> {
    /// Messages to put on the simulated network (already persisted-before-send).
    pub messages: Vec<M>,
    /// State-machine work, in order.
    pub applied: Vec<Applied>,
    /// Confirmed linearizable reads: (request id, read index).
    pub reads: Vec<(u64, u64)>,
}

impl<M> Default for Output<M> {
    fn default() -> Self {
        Output {
            messages: Vec::new(),
            applied: Vec::new(),
            reads: Vec::new(),
        }
    }
}

/// Read-only view for the invariant checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    pub term: u64,
    pub leader: bool,
    pub commit: u64,
    pub applied: u64,
    pub snapshot_index: u64,
    pub last_index: u64,
}

/// A Raft implementation under simulation.
pub trait RaftImpl {
    /// Its message type.
    type Msg: Clone + std::fmt::Debug;
    /// Short name for reports.
    const NAME: &'static str;
    /// A fresh node `id` of `voters`; `seed` drives its election timeouts; the log is
    /// compacted every `compact_every` applied entries (implementations with a byte-based
    /// policy compact earlier; raft-rs never compacts).
    fn boot(id: u64, voters: &[u64], seed: u64, compact_every: u64) -> Self;
    /// (from, to) of a message.
    fn route(msg: &Self::Msg) -> (u64, u64);
    /// Encoded size when known (checked against the 1200-byte budget).
    fn encoded_bytes(msg: &Self::Msg) -> Option<usize>;
    /// One tick of logical time.
    fn tick(&mut self);
    /// Delivers a message.
    fn step(&mut self, msg: Self::Msg);
    /// Proposes a command; false when refused (not leader, backpressure).
    fn propose(&mut self, data: Vec<u8>) -> bool;
    /// Requests a ReadIndex read with id `ctx`; false when refused (not leader, not ready).
    fn read_index(&mut self, ctx: u64) -> bool;
    /// Handles every pending Ready: persist, then hand out messages and applies.
    fn drain(&mut self, out: &mut Output<Self::Msg>);
    /// Whether the log should be compacted now that the state machine applied `applied`.
    fn wants_compaction(&self, applied: u64) -> bool;
    /// Compacts the log through `applied` with state-machine bytes `data` (may be a no-op).
    fn compact(&mut self, applied: u64, data: Vec<u8>);
    /// The disk fails its next `ops` writes and flushes (no-op without a simulated disk).
    fn fail_disk(&mut self, _ops: u32) {}
    /// Power loss now: unhandled work is lost; `tear` decides what unflushed writes do.
    fn crash(&mut self, tear: &mut rand_xoshiro::Xoshiro256PlusPlus);
    /// Restart from durable state; `out.applied` receives the snapshot to load, if any.
    fn restart(&mut self, out: &mut Output<Self::Msg>);
    /// Current status (only called while up).
    fn status(&self) -> Status;
    /// Term of the entry at `index` in the in-memory log, if held.
    fn log_term(&self, index: u64) -> Option<u64>;
    /// Whether durable state holds entry (`index`, `term`) or a snapshot covering it.
    fn durable_has(&self, index: u64, term: u64) -> bool;
    /// (crashes that lost or tore unflushed writes, restarts whose recovery found torn or
    /// corrupt records). Zero for implementations without a simulated disk.
    fn disk_fault_stats(&self) -> (u64, u64) {
        (0, 0)
    }
    /// (snapshots installed from a leader, store failures that stalled the node, stalls
    /// ended by a successful retry), over the node's lives. Zero without such machinery.
    fn snapshot_and_stall_stats(&self) -> (u64, u64, u64) {
        (0, 0, 0)
    }
}
