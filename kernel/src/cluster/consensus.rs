//! Consensus: the in-kernel Raft group that holds the cluster's desired state.
//!
//! Follows the handling order in `consensus`'s docs: inputs (10 ms ticks from the
//! reactor, messages from the transport, local proposals), then for each `Ready`: persist
//! (snapshot, entries, hard state, flush) **before** sending, send, apply committed entries
//! to the state machine, serve reads, advance. Every voter in the configured peer list —
//! workers and the witness alike — is a voter.
//!
//! The replicated state machine ([`Applied`]) holds a typed key/value map (for `raft put` /
//! `raft get`) and the control plane's commands, which are handed to `cluster::control`
//! in log order. Entries carry a one-byte tag so both live in one log.

use ::consensus::disk::{DiskStore, RecoveryReport};
use ::consensus::{Config, DurableState, Message, ProposeError, RawNode, Role};
use ::membership::NodeId;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use spin::Mutex;

use super::{peers, storage};
use crate::arch::cpu::{self, without_interrupts};
use crate::events::{self, EventKind};
use crate::netstack::transport;
use crate::node;

/// Entry tag: a key/value put, postcard `(String, String)`.
pub const TAG_KV: u8 = 1;
/// Entry tag: a control-plane command (`xylem::command::Command::encode`).
pub const TAG_CONTROL: u8 = 2;
const MESSAGE_BUF_BYTES: usize = 1400;

/// What committed entries built.
#[derive(Default, Serialize, Deserialize)]
pub struct Applied {
    pub kv: BTreeMap<String, String>,
}

struct Consensus {
    node: RawNode,
    store: DiskStore<storage::Device>,
    device: &'static str,
    applied: Applied,
    /// Reads waiting for their index to be applied: ctx -> index (u64::MAX until known).
    reads: BTreeMap<u64, u64>,
    last_role: (Role, Option<NodeId>, u64),
    failed: Option<String>,
    /// The commit index and when (`time::now_us`) it last advanced (`raft bench` reads it:
    /// the shell wakes on 10 ms ticks, far coarser than a commit).
    commit_seen: (u64, u64),
}

static CONSENSUS: Mutex<Option<Consensus>> = Mutex::new(None);

/// Starts the Raft group member with the configured peers as voters. A node without peers
/// is a one-voter group (it elects itself), which keeps single-node runs useful.
pub fn init() {
    let me = node::config();
    let mut voters: Vec<NodeId> = peers::get().iter().map(|p| p.id).collect();
    if !voters.contains(&me.id) {
        voters.push(me.id);
    }
    let seed = me.id.wrapping_mul(0xd134_2543_de82_ef95) ^ cpu::rdtsc();
    let device = storage::open();
    let description = device.describe();
    let (store, report) = match DiskStore::open(device) {
        Ok(opened) => opened,
        Err(err) => {
            log::error!("raft: cannot open its store: {err:?}; consensus disabled");
            return;
        }
    };
    log_recovery(description, &report);
    let durable: DurableState = store.state().clone();
    let node = match RawNode::restart(Config::new(me.id, &voters, seed), durable) {
        Ok(node) => node,
        Err(err) => {
            log::error!("raft: cannot start: {err:?}; consensus disabled");
            return;
        }
    };
    log::info!("raft: voters {voters:?}, store on {description}");
    let consensus = Consensus {
        node,
        store,
        device: description,
        applied: Applied::default(),
        reads: BTreeMap::new(),
        last_role: (Role::Follower, None, 0),
        failed: None,
        commit_seen: (0, 0),
    };
    without_interrupts(|| *CONSENSUS.lock() = Some(consensus));
    transport::set_consumer(net::Kind::Raft, on_message);
}

/// Logs what recovery found and announces it (`kind=raft_recovery` on COM2).
fn log_recovery(description: &'static str, report: &RecoveryReport) {
    let clean = report.stop.is_clean();
    if clean {
        log::info!(
            "raft: recovered {} records from {description}: {report:?}",
            report.records_replayed
        );
    } else {
        log::warn!("raft: recovery discarded data on {description}: {report:?}");
    }
    let device = if description.starts_with("virtio-blk") {
        "disk"
    } else {
        "ram"
    };
    events::push(EventKind::RaftRecovery {
        device,
        generation: report.generation,
        replayed: report.records_replayed,
        discarded: report.records_discarded,
        clean,
    });
}

/// A Raft message arrived (from the reactor). `from` is the sender the transport
/// authenticated; the core refuses (and counts) a message claiming anyone else, a
/// non-member, or one that would break a log invariant.
pub fn on_message(from: NodeId, bytes: &[u8]) {
    let Ok(msg) = postcard::from_bytes::<Message>(bytes) else {
        return;
    };
    drive(|raft| {
        let _ = raft.node.step_from(from, msg);
    });
}

/// Peer messages the Raft core refused, per reason (for `raft`).
pub fn rejected() -> Option<::consensus::RejectCounters> {
    with(|raft| *raft.node.rejected())
}

/// A reactor tick (10 ms).
pub fn on_tick() {
    drive(|raft| raft.node.tick());
}

/// Why a proposal or read was not accepted.
#[derive(Debug)]
pub enum ConsensusError {
    /// Consensus is not running on this node.
    Unavailable,
    /// Raft refused (not leader, backpressure, too large…).
    Refused(ProposeError),
}

/// Proposes a tagged entry; returns its log index.
pub fn propose(tag: u8, payload: &[u8]) -> Result<u64, ConsensusError> {
    let mut data = Vec::with_capacity(payload.len() + 1);
    data.push(tag);
    data.extend_from_slice(payload);
    let mut result = Err(ConsensusError::Unavailable);
    drive(|raft| result = raft.node.propose(data).map_err(ConsensusError::Refused));
    result
}

/// Starts a linearizable read; poll [`read_ready`] with the same `ctx`.
pub fn read_index(ctx: u64) -> Result<(), ConsensusError> {
    let mut result = Err(ConsensusError::Unavailable);
    drive(|raft| {
        result = raft.node.read_index(ctx).map_err(ConsensusError::Refused);
        if result.is_ok() {
            raft.reads.insert(ctx, u64::MAX);
        }
    });
    result
}

/// Whether the read `ctx` may now be served from the applied state.
pub fn read_ready(ctx: u64) -> bool {
    with(|raft| {
        raft.reads
            .get(&ctx)
            .is_some_and(|&index| index != u64::MAX && raft.node.applied_index() >= index)
    })
    .unwrap_or(false)
}

/// Forgets a read (served or abandoned).
pub fn read_done(ctx: u64) {
    with(|raft| raft.reads.remove(&ctx));
}

/// Runs `f` on the applied state.
pub fn with_applied<R>(f: impl FnOnce(&Applied) -> R) -> Option<R> {
    with(|raft| f(&raft.applied))
}

fn with<R>(f: impl FnOnce(&mut Consensus) -> R) -> Option<R> {
    without_interrupts(|| CONSENSUS.lock().as_mut().map(f))
}

/// Feeds one input, then runs the Ready loop. Messages are sent and events published
/// after the lock is released.
fn drive(input: impl FnOnce(&mut Consensus)) {
    let mut outbound: Vec<Message> = Vec::new();
    let mut committed: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut role_change = None;
    let ran = with(|raft| {
        if raft.failed.is_some() {
            return;
        }
        input(raft);
        while raft.node.has_ready() {
            let rd = raft.node.ready();
            if let Err(err) =
                raft.store
                    .persist(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref())
            {
                // Sending now could promise what is not durable: stop taking part instead.
                raft.failed = Some(alloc::format!("{err:?}"));
                log::error!("raft: store failed ({err:?}); this node stops voting and replicating");
                return;
            }
            outbound.extend(rd.messages.iter().cloned());
            for entry in &rd.committed_entries {
                if !entry.data.is_empty() {
                    committed.push((entry.index, entry.data.clone()));
                }
            }
            for read in &rd.read_states {
                if let Some(slot) = raft.reads.get_mut(&read.ctx) {
                    *slot = read.index;
                }
            }
            raft.node.advance(rd);
        }
        if raft.node.commit_index() > raft.commit_seen.0 {
            raft.commit_seen = (raft.node.commit_index(), crate::time::now_us());
        }
        let role = (raft.node.role(), raft.node.leader(), raft.node.term());
        if role != raft.last_role {
            raft.last_role = role;
            role_change = Some(role);
        }
    });
    if ran.is_none() {
        return;
    }
    send_all(outbound);
    for (index, data) in committed {
        apply(index, &data);
    }
    if let Some((role, leader, term)) = role_change {
        events::push(EventKind::RaftRole {
            role: role_name(role),
            term,
            leader: leader.unwrap_or(0),
        });
    }
}

fn send_all(messages: Vec<Message>) {
    let mut buf = [0u8; MESSAGE_BUF_BYTES];
    for msg in messages {
        let to = msg.to;
        match postcard::to_slice(&msg, &mut buf) {
            Ok(bytes) => {
                // Loss is Raft's business: it retries.
                let _ = transport::send(net::Kind::Raft, to, bytes);
            }
            Err(err) => log::error!("raft: cannot encode a message to {to}: {err}"),
        }
    }
}

fn apply(index: u64, data: &[u8]) {
    match data.split_first() {
        Some((&TAG_KV, rest)) => {
            if let Ok((key, value)) = postcard::from_bytes::<(String, String)>(rest) {
                with(|raft| raft.applied.kv.insert(key, value));
            }
        }
        Some((&TAG_CONTROL, rest)) => super::control::apply(index, rest),
        // Unknown tags are skipped on every node alike, so state stays identical.
        _ => {}
    }
}

/// The name `raft` and `xylem status` show for a role.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "precandidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

/// A snapshot of the Raft state for `raft` and `xylem status`.
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub device: &'static str,
    pub failed: Option<String>,
}

/// The current Raft state; `None` when consensus is not running.
pub fn status() -> Option<Status> {
    with(|raft| Status {
        id: raft.node.id(),
        role: raft.node.role(),
        term: raft.node.term(),
        leader: raft.node.leader(),
        commit: raft.node.commit_index(),
        applied: raft.node.applied_index(),
        last_index: raft.node.last_index(),
        device: raft.device,
        failed: raft.failed.clone(),
    })
}

/// The commit index and the `time::now_us` at which it last advanced.
pub fn last_commit_advance() -> Option<(u64, u64)> {
    with(|raft| raft.commit_seen)
}

/// Whether this node is the leader now.
pub fn is_leader() -> bool {
    with(|raft| raft.node.role() == Role::Leader).unwrap_or(false)
}
