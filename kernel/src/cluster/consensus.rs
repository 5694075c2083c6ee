//! Consensus: the in-kernel Raft group that holds the cluster's desired state.
//!
//! The node loop is `consensus::driver::Driver` — the same code the 10,000-seed simulator
//! runs: inputs (10 ms ticks from the reactor, messages from the transport, local
//! proposals), then for each `Ready`: persist (snapshot, entries, hard state, flush)
//! **before** sending, send, hand the committed work to the state machine, advance. Every
//! voter in the configured peer list — workers and the witness alike — is a voter; a node
//! with no peers is a one-voter group that elects itself.
//!
//! The replicated state machine is a typed key/value map (`raft put` / `raft get`, in
//! [`Applied`]) plus the control plane's desired state (`cluster::control`). Entries carry a
//! one-byte tag so both live in one log. Applying happens outside the Raft lock, strictly
//! in log order, by one task at a time (the applier lock), because applying a control
//! command reconciles cells, which reads Raft's status.
//!
//! Compaction (docs/raft.md): once the applied log after the snapshot passes
//! [`COMPACTION`], the state machine is serialized at the applied index ([`StateSnapshot`]:
//! the key/value map and `DesiredState::snapshot`), the log before it is dropped and the
//! disk store is rewritten around it. Followers behind the compacted prefix receive the
//! snapshot in chunks and load it ([`Apply::Snapshot`]); a restarted node loads its own.
//!
//! A failing disk stalls the node (it promises nothing, answers nothing) and the reactor
//! retries the store with backoff until it works again — it never stops voting for good.
//! Disk I/O runs with interrupts enabled under a sleeping mutex (`sched::mutex`), so a
//! host `fdatasync` behind a flush never freezes the network or the clock.

use ::consensus::disk::{DiskError, RecoveryReport};
use ::consensus::driver::{Apply, CompactFailure, CompactionPolicy, Driver, OpenError, Output};
use ::consensus::{Config, Message, ProposeError, Role};
use ::membership::NodeId;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::{control, peers, storage};
use crate::arch::cpu;
use crate::events::{self, EventKind};
use crate::netstack::transport;
use crate::sched::mutex::Mutex;
use crate::{node, time};

/// Entry tag: a key/value put, postcard `(String, String)`.
pub const TAG_KV: u8 = 1;
/// Entry tag: a control-plane command (`xylem::command::Command::encode`).
pub const TAG_CONTROL: u8 = 2;
const MESSAGE_BUF_BYTES: usize = 1400;

/// When the kernel compacts: 1024 applied entries or 64 KiB of applied log, whichever
/// comes first. With `MAX_SNAPSHOT_BYTES` and `Config::max_uncommitted_bytes` (256 KiB)
/// this keeps the store well inside one region of the 2 MiB disk (1 MiB each).
pub const COMPACTION: CompactionPolicy = CompactionPolicy {
    entries_max: 1024,
    log_bytes_max: 64 << 10,
};
/// Largest snapshot this node produces or accepts (the desired state of a large cluster
/// is tens of KiB).
pub const MAX_SNAPSHOT_BYTES: usize = 256 << 10;
/// First and longest wait between retries of a failed store.
const RETRY_FIRST_MS: u64 = 100;
const RETRY_MAX_MS: u64 = 5000;
/// Format byte of [`StateSnapshot`] encodings.
const STATE_SNAPSHOT_V1: u8 = 1;

/// What committed key/value entries built.
#[derive(Default, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub kv: BTreeMap<String, String>,
}

/// The whole replicated state at one log index: what a Raft snapshot carries.
#[derive(Serialize, Deserialize)]
struct StateSnapshot {
    kv: BTreeMap<String, String>,
    /// `xylem::desired::DesiredState::snapshot` bytes.
    desired: Vec<u8>,
}

/// A store failure the node is stalled on, and when to try again.
struct Stall {
    error: DiskError,
    since_us: u64,
    retry_at_us: u64,
    backoff_ms: u64,
}

struct Consensus {
    driver: Driver<storage::Device>,
    device: &'static str,
    applied: Applied,
    /// Work handed out by the driver and not yet applied, in log order.
    to_apply: VecDeque<Apply>,
    /// The index the state machine (key/value map and desired state) applied through.
    sm_applied: u64,
    /// Reads waiting for their index to be applied: ctx -> index (u64::MAX until known).
    reads: BTreeMap<u64, u64>,
    last_role: (Role, Option<NodeId>, u64),
    /// Set when the state machine cannot go on (a snapshot that does not load): this node
    /// takes no further part rather than diverge.
    failed: Option<String>,
    stall: Option<Stall>,
    /// The commit index and when (`time::now_us`) it last advanced (`raft bench` reads it:
    /// the shell wakes on 10 ms ticks, far coarser than a commit).
    commit_seen: (u64, u64),
}

static CONSENSUS: Mutex<Option<Consensus>> = Mutex::new(None);
/// Held while applying, so entries reach the state machine one task at a time, in order.
static APPLIER: Mutex<()> = Mutex::new(());

/// Starts the Raft group member with the configured peers as voters. A node without peers
/// is a one-voter group (it elects itself), which keeps single-node runs useful.
pub fn init() {
    let me = node::config();
    let mut voters: Vec<NodeId> = peers::get().iter().map(|p| p.id).collect();
    if !voters.contains(&me.id) {
        voters.push(me.id);
    }
    let seed = me.id.wrapping_mul(0xd134_2543_de82_ef95) ^ cpu::rdtsc();
    let mut config = Config::new(me.id, &voters, seed);
    config.max_snapshot_bytes = MAX_SNAPSHOT_BYTES;
    let device = storage::open();
    let description = device.describe();
    let (driver, report, snapshot) = match Driver::open(config, device, COMPACTION) {
        Ok(opened) => opened,
        Err(OpenError::Disk(err)) => {
            log::error!("raft: cannot open its store: {err:?}; consensus disabled");
            return;
        }
        Err(OpenError::Node(err)) => {
            log::error!("raft: cannot start from its store: {err:?}; consensus disabled");
            return;
        }
    };
    log_recovery(description, &report);
    log::info!("raft: voters {voters:?}, store on {description}");
    let mut to_apply = VecDeque::new();
    if let Some(snapshot) = snapshot {
        log::info!(
            "raft: loading the snapshot at index {} ({} bytes) before replaying the log",
            snapshot.meta.index,
            snapshot.data.len()
        );
        // Applied by the reactor's first pass, once the control plane is up.
        to_apply.push_back(Apply::Snapshot(snapshot));
    }
    let consensus = Consensus {
        driver,
        device: description,
        applied: Applied::default(),
        to_apply,
        sm_applied: 0,
        reads: BTreeMap::new(),
        last_role: (Role::Follower, None, 0),
        failed: None,
        stall: None,
        commit_seen: (0, 0),
    };
    *CONSENSUS.lock() = Some(consensus);
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

/// A Raft message arrived (from the reactor).
pub fn on_message(_from: NodeId, bytes: &[u8]) {
    let Ok(msg) = postcard::from_bytes::<Message>(bytes) else {
        return;
    };
    drive(|raft, _| raft.driver.step(msg));
}

/// A reactor tick (10 ms): Raft's clock, or a retry of a failed store when it is due.
pub fn on_tick() {
    drive(|raft, out| match &raft.stall {
        None => raft.driver.tick(),
        Some(stall) if time::now_us() >= stall.retry_at_us => {
            // Success shows as the stall ending (see `note_store`); failure backs off.
            let _ = raft.driver.retry(out);
        }
        Some(_) => {}
    });
}

/// Why a proposal or read was not accepted.
#[derive(Debug)]
pub enum ConsensusError {
    /// Consensus is not running on this node.
    Unavailable,
    /// Raft refused (not leader, backpressure, a stalled store…).
    Refused(ProposeError),
}

/// Proposes a tagged entry; returns its log index.
pub fn propose(tag: u8, payload: &[u8]) -> Result<u64, ConsensusError> {
    let mut data = Vec::with_capacity(payload.len() + 1);
    data.push(tag);
    data.extend_from_slice(payload);
    let mut result = Err(ConsensusError::Unavailable);
    drive(|raft, _| result = raft.driver.propose(data).map_err(ConsensusError::Refused));
    result
}

/// Starts a linearizable read; poll [`read_ready`] with the same `ctx`.
pub fn read_index(ctx: u64) -> Result<(), ConsensusError> {
    let mut result = Err(ConsensusError::Unavailable);
    drive(|raft, _| {
        result = raft.driver.read_index(ctx).map_err(ConsensusError::Refused);
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
            .is_some_and(|&index| index != u64::MAX && raft.sm_applied >= index)
    })
    .unwrap_or(false)
}

/// Forgets a read (served or abandoned).
pub fn read_done(ctx: u64) {
    with(|raft| raft.reads.remove(&ctx));
}

/// Runs `f` on the applied key/value state.
pub fn with_applied<R>(f: impl FnOnce(&Applied) -> R) -> Option<R> {
    with(|raft| f(&raft.applied))
}

fn with<R>(f: impl FnOnce(&mut Consensus) -> R) -> Option<R> {
    CONSENSUS.lock().as_mut().map(f)
}

/// Feeds one input, then hands every pending `Ready` to the driver. Messages are sent,
/// events published and entries applied after the lock is released.
fn drive(input: impl FnOnce(&mut Consensus, &mut Output)) {
    let mut role_change = None;
    let mut store_change = None;
    let ran = with(|raft| {
        if raft.failed.is_some() {
            return None;
        }
        let mut out = Output::default();
        input(raft, &mut out);
        let _ = raft.driver.drain(&mut out);
        store_change = note_store(raft);
        for read in &out.read_states {
            if let Some(slot) = raft.reads.get_mut(&read.ctx) {
                *slot = read.index;
            }
        }
        raft.to_apply.extend(out.apply);
        let node = raft.driver.node();
        if node.commit_index() > raft.commit_seen.0 {
            raft.commit_seen = (node.commit_index(), time::now_us());
        }
        let role = (node.role(), node.leader(), node.term());
        if role != raft.last_role {
            raft.last_role = role;
            role_change = Some(role);
        }
        Some(out.messages)
    })
    .flatten();
    let Some(messages) = ran else {
        return;
    };
    send_all(messages);
    if let Some(event) = store_change {
        events::push(event);
    }
    if let Some((role, leader, term)) = role_change {
        events::push(EventKind::RaftRole {
            role: role_name(role),
            term,
            leader: leader.unwrap_or(0),
        });
    }
    apply_pending();
}

/// Tracks the driver's stall state: starts or ends a [`Stall`] (with its retry backoff)
/// and returns the event that announces a change.
fn note_store(raft: &mut Consensus) -> Option<EventKind> {
    let now_us = time::now_us();
    match (raft.driver.stalled(), raft.stall.as_mut()) {
        (None, None) => None,
        (Some(error), None) => {
            log::error!("raft: store failed ({error:?}); this node stalls and retries");
            raft.stall = Some(Stall {
                error,
                since_us: now_us,
                retry_at_us: now_us + RETRY_FIRST_MS * 1000,
                backoff_ms: RETRY_FIRST_MS,
            });
            Some(EventKind::RaftStore {
                state: "stalled",
                error: disk_error_name(&error),
            })
        }
        (Some(error), Some(stall)) => {
            if now_us >= stall.retry_at_us {
                stall.error = error;
                stall.backoff_ms = (stall.backoff_ms * 2).min(RETRY_MAX_MS);
                stall.retry_at_us = now_us + stall.backoff_ms * 1000;
            }
            None
        }
        (None, Some(stall)) => {
            let stalled_ms = now_us.saturating_sub(stall.since_us) / 1000;
            log::warn!("raft: store works again after {stalled_ms} ms; this node resumes");
            raft.stall = None;
            Some(EventKind::RaftStore {
                state: "resumed",
                error: "none",
            })
        }
    }
}

/// A one-word name for a store error (COM2 values have no spaces).
pub fn disk_error_name(error: &DiskError) -> &'static str {
    use ::consensus::disk::DeviceError;
    match error {
        DiskError::Device(DeviceError::Io { .. }) => "io",
        DiskError::Device(DeviceError::OutOfRange { .. }) => "out_of_range",
        DiskError::TooSmall { .. } => "too_small",
        DiskError::NoValidSuperblock => "no_valid_superblock",
        DiskError::Full { .. } => "full",
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

/// Applies queued work in log order, then compacts if the policy asks. One task at a time:
/// a task that finds the applier busy leaves its items to it (the holder drains the queue
/// until it is empty, and looks again after letting go).
fn apply_pending() {
    loop {
        let Some(guard) = APPLIER.try_lock() else {
            return;
        };
        while let Some(item) = with(|raft| raft.to_apply.pop_front()).flatten() {
            let index = item.index();
            let loaded = match item {
                Apply::Snapshot(snapshot) => load_snapshot(snapshot.meta.index, &snapshot.data),
                Apply::Entry(entry) => {
                    apply_entry(entry.index, &entry.data);
                    Ok(())
                }
            };
            let stop = with(|raft| match loaded {
                Ok(()) => {
                    raft.sm_applied = index;
                    false
                }
                Err(why) => {
                    log::error!("raft: {why}; this node stops taking part");
                    raft.failed = Some(why);
                    true
                }
            });
            if stop != Some(false) {
                return;
            }
        }
        maybe_compact();
        drop(guard);
        if with(|raft| raft.to_apply.is_empty()).unwrap_or(true) {
            return;
        }
    }
}

fn apply_entry(index: u64, data: &[u8]) {
    match data.split_first() {
        Some((&TAG_KV, rest)) => {
            if let Ok((key, value)) = postcard::from_bytes::<(String, String)>(rest) {
                with(|raft| raft.applied.kv.insert(key, value));
            }
        }
        Some((&TAG_CONTROL, rest)) => control::apply(index, rest),
        // The leader's no-op, and unknown tags: skipped on every node alike.
        _ => {}
    }
}

/// Replaces the whole state machine with a snapshot's (from the leader, or this node's own
/// at boot).
fn load_snapshot(index: u64, data: &[u8]) -> Result<(), String> {
    let state = match data.split_first() {
        Some((&STATE_SNAPSHOT_V1, rest)) => postcard::from_bytes::<StateSnapshot>(rest)
            .map_err(|e| format!("the snapshot at index {index} does not decode: {e}"))?,
        _ => {
            return Err(format!(
                "the snapshot at index {index} has an unknown format"
            ))
        }
    };
    control::restore_desired(index, &state.desired)
        .map_err(|e| format!("the snapshot at index {index} does not load: {e}"))?;
    with(|raft| raft.applied.kv = state.kv);
    let from_leader = with(|raft| raft.driver.stats().snapshots_installed > 0).unwrap_or(false);
    events::push(EventKind::RaftSnapshot {
        action: if from_leader { "installed" } else { "loaded" },
        index,
        bytes: data.len() as u64,
    });
    Ok(())
}

/// Serializes the state machine at the applied index and compacts, when the policy asks.
/// Runs with the applier held, so nothing is applied meanwhile.
fn maybe_compact() {
    let Some((index, kv, log_bytes)) = with(|raft| {
        let wants = raft.driver.wants_compaction(raft.sm_applied);
        let log_bytes = raft.driver.node().log_bytes() as u64;
        wants.then(|| (raft.sm_applied, raft.applied.kv.clone(), log_bytes))
    })
    .flatten() else {
        return;
    };
    let Some(desired) = control::snapshot_desired() else {
        return;
    };
    let mut data = alloc::vec![STATE_SNAPSHOT_V1];
    let snapshot = StateSnapshot { kv, desired };
    let data = match postcard::to_extend(&snapshot, core::mem::take(&mut data)) {
        Ok(bytes) => bytes,
        Err(err) => {
            log::error!("raft: cannot serialize the state at {index}: {err}");
            return;
        }
    };
    let bytes = data.len() as u64;
    let mut store_change = None;
    let result = with(|raft| {
        let result = raft.driver.compact(index, data);
        store_change = note_store(raft);
        result
    });
    match result {
        Some(Ok(())) => events::push(EventKind::RaftCompact {
            index,
            snapshot_bytes: bytes,
            log_bytes,
        }),
        Some(Err(CompactFailure::Refused(err))) => {
            log::warn!("raft: compaction at {index} refused: {err:?}");
        }
        Some(Err(CompactFailure::Store(_) | CompactFailure::Stalled)) | None => {}
    }
    if let Some(event) = store_change {
        events::push(event);
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
    /// What the state machine applied (not merely what Raft handed out).
    pub applied: u64,
    pub last_index: u64,
    pub device: &'static str,
    pub failed: Option<String>,
    /// The store failure this node is stalled on, and for how long (ms).
    pub stalled: Option<(DiskError, u64)>,
    /// The compacted prefix: (index, snapshot bytes).
    pub snapshot: (u64, u64),
    /// Entries and bytes the log holds after the snapshot.
    pub log_entries: u64,
    pub log_bytes: u64,
    /// The store: generation, sectors used of the region's.
    pub disk_generation: u64,
    pub disk_used_sectors: u64,
    pub disk_region_sectors: u64,
    pub stats: ::consensus::driver::DriverStats,
}

/// The current Raft state; `None` when consensus is not running.
pub fn status() -> Option<Status> {
    let now_us = time::now_us();
    with(|raft| {
        let node = raft.driver.node();
        let store = raft.driver.store();
        Status {
            id: node.id(),
            role: node.role(),
            term: node.term(),
            leader: node.leader(),
            commit: node.commit_index(),
            applied: raft.sm_applied,
            last_index: node.last_index(),
            device: raft.device,
            failed: raft.failed.clone(),
            stalled: raft
                .stall
                .as_ref()
                .map(|s| (s.error, now_us.saturating_sub(s.since_us) / 1000)),
            snapshot: (node.snapshot_meta().index, node.snapshot_bytes() as u64),
            log_entries: node.last_index() - node.snapshot_meta().index,
            log_bytes: node.log_bytes() as u64,
            disk_generation: store.generation(),
            disk_used_sectors: store.used_sectors(),
            disk_region_sectors: store.region_sectors(),
            stats: raft.driver.stats(),
        }
    })
}

/// The commit index and the `time::now_us` at which it last advanced.
pub fn last_commit_advance() -> Option<(u64, u64)> {
    with(|raft| raft.commit_seen)
}

/// Whether this node is the leader now.
pub fn is_leader() -> bool {
    with(|raft| raft.driver.node().role() == Role::Leader).unwrap_or(false)
}
