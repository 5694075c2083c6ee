//! Consensus: the in-kernel Raft group that holds the cluster's desired state.
//!
//! The node loop is `consensus::driver::Driver` — the same code the 10,000-seed simulator
//! runs: inputs (10 ms ticks, messages from the transport, local proposals), then for each
//! `Ready`: persist (snapshot, entries, hard state, flush) **before** sending, send, hand
//! the committed work to the state machine, advance. Every voter in the configured peer
//! list — workers and the witness alike — is a voter; a node with no peers is a one-voter
//! group that elects itself.
//!
//! Two tasks share the work, so a slow disk never stalls the control loop:
//! - the **`raft` task** owns the driver ([`Consensus`], behind a sleeping mutex) and does
//!   every disk write and flush. The reactor only queues for it ([`Inbound`]: messages and
//!   ticks) and wakes it; proposals and reads take the driver's lock briefly.
//! - the **reactor** applies committed work to the state machine ([`StateMachine`]: the
//!   key/value map of `raft put`/`raft get`, and the control plane's desired state via
//!   `cluster::control`), strictly in log order, on [`EventKind::RaftApply`] and on every
//!   tick. It never waits for the disk. Entries carry a one-byte tag ([`TAG_KV`],
//!   [`TAG_CONTROL`]) so both live in one log.
//!
//! Status for `raft`, `xylem status` and the control plane is published after every pass
//! of the `raft` task ([`status`] reads it without waiting for the disk).
//!
//! Compaction (docs/raft.md): when the applied log after the snapshot passes
//! [`COMPACTION`], the `raft` task asks the reactor for the state at its applied index
//! ([`StateSnapshot`]: the key/value map and `DesiredState::snapshot`), then compacts and
//! rewrites the disk store around it. Followers behind the compacted prefix receive the
//! snapshot in chunks; the reactor loads it ([`Apply::Snapshot`]), as it loads this node's
//! own at boot. A failing disk stalls the node (it promises nothing, answers nothing) and
//! the `raft` task retries with backoff until the store works again — it never stops
//! voting for good.

use ::consensus::disk::{DiskError, RecoveryReport};
use ::consensus::driver::{
    Apply, CompactFailure, CompactionPolicy, Driver, DriverStats, OpenError, Output,
};
use ::consensus::{Config, Message, ProposeError, Role};
use ::membership::NodeId;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::run_queue::Priority;
use serde::{Deserialize, Serialize};

use super::{control, peers, storage};
use crate::arch::cpu::{self, without_interrupts};
use crate::events::{self, EventKind};
use crate::netstack::transport;
use crate::sched::mutex::Mutex;
use crate::sched::wait::WaitQueue;
use crate::{node, sched, time};

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
/// Inputs queued for the `raft` task at most; more messages are dropped and counted (Raft
/// retries); ticks beyond it are dropped too (a task that far behind has bigger trouble).
const INBOUND_MAX: usize = 1024;
/// A leader whose `raft` task has been busy on its disk this long has its heartbeats sent
/// by the reactor instead (see [`cover_heartbeats`]): the heartbeat period.
const COVER_AFTER_US: u64 = 50_000;
/// ... but only for this long: a disk that hangs longer must cost the leadership, or a
/// leader stuck in I/O would keep the whole group from electing a working one.
const COVER_MAX_US: u64 = 1_000_000;
/// Consecutive ticks fed without a message between them, at most: fewer than a heartbeat
/// period (5), so a backlog after a slow disk write reads as a pause, not as silence.
const TICK_RUN_MAX: u32 = 4;
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

/// What the `raft` task owns.
struct Consensus {
    driver: Driver<storage::Device>,
    /// What the store is on (`raft` shows it).
    device: &'static str,
    stall: Option<Stall>,
    last_role: (Role, Option<NodeId>, u64),
    /// The core's (election timeouts, CheckQuorum step-downs) at the last role event.
    last_counts: (u64, u64),
    /// The commit index and when (`time::now_us`) it last advanced (`raft bench` reads it:
    /// the shell wakes on 10 ms ticks, far coarser than a commit).
    commit_seen: (u64, u64),
}

/// One input for the `raft` task, in arrival order.
enum Input {
    /// A message and the sender the transport authenticated.
    Message(NodeId, Message),
    Tick,
}

/// Work queued for the `raft` task by the reactor and the shell. Ticks and messages share
/// one queue so that, after the task waited on the disk, they are fed in the order they
/// happened: a heartbeat that arrived mid-wait resets the election timer before the ticks
/// that followed it, exactly as if the task had never been busy.
#[derive(Default)]
struct Inbound {
    inputs: VecDeque<Input>,
    /// A proposal or read was added: drain even without a message or tick.
    kicked: bool,
    dropped: u64,
}

/// The replicated state machine, applied by the reactor.
#[derive(Default)]
struct StateMachine {
    applied: Applied,
    /// The index the state machine (key/value map and desired state) applied through.
    index: u64,
    /// Work handed out by the driver and not yet applied, in log order.
    to_apply: VecDeque<Apply>,
    /// Reads waiting for their index to be applied: ctx -> index (u64::MAX until known).
    reads: BTreeMap<u64, u64>,
    /// The `raft` task wants the state serialized for a compaction.
    compaction_wanted: bool,
    /// The serialized state for it: (index, bytes).
    compaction_ready: Option<(u64, Vec<u8>)>,
    /// Set when the state machine cannot go on (a snapshot that does not load): this node
    /// takes no further part rather than diverge.
    failed: Option<String>,
}

static CONSENSUS: Mutex<Option<Consensus>> = Mutex::new(None);
static INBOUND: spin::Mutex<Inbound> = spin::Mutex::new(Inbound {
    inputs: VecDeque::new(),
    kicked: false,
    dropped: 0,
});
static SM: spin::Mutex<Option<StateMachine>> = spin::Mutex::new(None);
/// The last status the `raft` task published.
static STATUS: spin::Mutex<Option<Status>> = spin::Mutex::new(None);
/// The `raft` task waits here for work.
static RAFT_WAIT: WaitQueue = WaitQueue::new();
/// Set once consensus runs: before (or without) it, nothing is queued for a task that does
/// not exist.
static RUNNING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
/// When the `raft` task's current pass began (0 while it waits for work).
static PASS_SINCE_US: AtomicU64 = AtomicU64::new(0);
/// When the reactor last sent covering heartbeats, and how many rounds it sent.
static COVER_LAST_US: AtomicU64 = AtomicU64::new(0);
static COVER_ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Diagnostics: the longest gap between two messages from the leader this node follows,
/// and between two passes of the `raft` task, in µs (`raft` shows them).
static LEADER_GAP_MAX_US: AtomicU64 = AtomicU64::new(0);
static LEADER_LAST_US: AtomicU64 = AtomicU64::new(0);
static PASS_GAP_MAX_US: AtomicU64 = AtomicU64::new(0);
static LAST_PASS_US: AtomicU64 = AtomicU64::new(0);
/// A slow disk on demand (`raft stall-disk <ms>`): the next pass spins this long, as the
/// task does while the host takes its time over a flush.
static INJECTED_STALL_MS: AtomicU64 = AtomicU64::new(0);

/// Makes the `raft` task's next pass spin for `ms` milliseconds, like a flush that takes
/// that long (tests of the covering heartbeats and of leadership under slow disks).
pub fn inject_disk_stall(ms: u64) {
    INJECTED_STALL_MS.store(ms, Ordering::Relaxed);
    inbound(|q| q.kicked = true);
    RAFT_WAIT.wake_all();
}
/// Ticks dropped from long runs (see [`TICK_RUN_MAX`]).
static SKIPPED_TICKS: AtomicU64 = AtomicU64::new(0);
/// The longest pass of the `raft` task, in µs (disk waits included).
static PASS_MAX_US: AtomicU64 = AtomicU64::new(0);

fn sm<R>(f: impl FnOnce(&mut StateMachine) -> R) -> Option<R> {
    without_interrupts(|| SM.lock().as_mut().map(f))
}

fn inbound<R>(f: impl FnOnce(&mut Inbound) -> R) -> R {
    without_interrupts(|| f(&mut INBOUND.lock()))
}

/// Starts the Raft group member with the configured peers as voters, and its `raft` task.
/// A node without peers is a one-voter group (it elects itself).
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
    let mut state = StateMachine::default();
    if let Some(snapshot) = snapshot {
        log::info!(
            "raft: loading the snapshot at index {} ({} bytes) before replaying the log",
            snapshot.meta.index,
            snapshot.data.len()
        );
        // Applied by the reactor's first pass, once the control plane is up.
        state.to_apply.push_back(Apply::Snapshot(snapshot));
    }
    without_interrupts(|| {
        *SM.lock() = Some(state);
        INBOUND.lock().inputs.reserve(INBOUND_MAX);
    });
    let mut consensus = Consensus {
        driver,
        device: description,
        stall: None,
        last_role: (Role::Follower, None, 0),
        last_counts: (0, 0),
        commit_seen: (0, 0),
    };
    publish(&mut consensus);
    *CONSENSUS.lock() = Some(consensus);
    transport::set_consumer(net::Kind::Raft, on_message);
    match sched::spawn("raft", Priority::NORMAL, raft_task) {
        Ok(_) => RUNNING.store(true, Ordering::Release),
        Err(err) => {
            log::error!("raft: cannot start its task: {err:?}; consensus disabled");
            without_interrupts(|| *STATUS.lock() = None);
        }
    }
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

/// A Raft message arrived (from the reactor): queued for the `raft` task. `from` is the
/// sender the transport authenticated; the core refuses (and counts) a message claiming
/// anyone else, a non-member, or one that would break a log invariant.
pub fn on_message(from: NodeId, bytes: &[u8]) {
    if !RUNNING.load(Ordering::Acquire) {
        return;
    }
    let Ok(msg) = postcard::from_bytes::<Message>(bytes) else {
        return;
    };
    inbound(|q| {
        if q.inputs.len() >= INBOUND_MAX {
            q.dropped += 1;
        } else {
            q.inputs.push_back(Input::Message(from, msg));
        }
    });
    RAFT_WAIT.wake_all();
}

/// Peer messages the Raft core refused, per reason (for `raft`).
pub fn rejected() -> Option<::consensus::RejectCounters> {
    CONSENSUS
        .lock()
        .as_ref()
        .map(|raft| *raft.driver.node().rejected())
}

/// A reactor tick (10 ms): Raft's clock (for the `raft` task), covering heartbeats, and
/// the state machine's chance to apply what is waiting.
pub fn on_tick() {
    if !RUNNING.load(Ordering::Acquire) {
        return;
    }
    cover_heartbeats();
    inbound(|q| {
        if q.inputs.len() < INBOUND_MAX {
            q.inputs.push_back(Input::Tick);
        }
    });
    RAFT_WAIT.wake_all();
    apply_pending();
}

/// Heartbeats for a leader whose `raft` task is stuck in a slow disk write or flush.
///
/// Raft persists before it sends, so while the host takes its time over an `fdatasync` the
/// leader's task can neither tick nor send, and its followers, hearing nothing for an
/// election timeout (150–300 ms), depose a perfectly healthy leader. A heartbeat carries no
/// state that needs the disk — only "I lead term T" — so the reactor sends it on the
/// task's behalf (commit 0, which teaches nothing; read round 0, which confirms nothing),
/// every heartbeat period while the pass lasts, for at most [`COVER_MAX_US`]. Safety does
/// not depend on it: a follower at a newer term answers it as stale, and a leader that
/// stepped down in the same term has no successor in that term it could contradict.
fn cover_heartbeats() {
    let since_us = PASS_SINCE_US.load(Ordering::Acquire);
    let now_us = time::now_us();
    let busy_us = now_us.saturating_sub(since_us);
    if since_us == 0 || !(COVER_AFTER_US..COVER_MAX_US).contains(&busy_us) {
        return;
    }
    if now_us.saturating_sub(COVER_LAST_US.load(Ordering::Relaxed)) < COVER_AFTER_US {
        return;
    }
    let Some((me, term)) = without_interrupts(|| {
        STATUS
            .lock()
            .as_ref()
            .filter(|s| s.role == Role::Leader && s.stalled.is_none())
            .map(|s| (s.id, s.term))
    }) else {
        return;
    };
    COVER_LAST_US.store(now_us, Ordering::Relaxed);
    COVER_ROUNDS.fetch_add(1, Ordering::Relaxed);
    let heartbeats = peers::get()
        .iter()
        .filter(|p| p.id != me)
        .map(|p| Message {
            from: me,
            to: p.id,
            term,
            body: ::consensus::MessageBody::Heartbeat { commit: 0, ctx: 0 },
        })
        .collect();
    send_all(heartbeats);
}

/// The `raft` task: waits for work, then feeds it to the driver and handles every `Ready`.
fn raft_task() {
    // Swapped with the queue each pass, so both keep their capacity (no allocation while
    // interrupts are masked).
    let mut batch: VecDeque<Input> = VecDeque::with_capacity(INBOUND_MAX);
    loop {
        RAFT_WAIT.wait_until(|| {
            let queued = INBOUND.lock();
            let compaction = SM
                .lock()
                .as_ref()
                .is_some_and(|s| s.compaction_ready.is_some());
            !queued.inputs.is_empty() || queued.kicked || compaction
        });
        let started_us = time::now_us();
        let last_us = LAST_PASS_US.swap(started_us, Ordering::Relaxed);
        if last_us != 0 {
            PASS_GAP_MAX_US.fetch_max(started_us - last_us, Ordering::Relaxed);
        }
        PASS_SINCE_US.store(started_us, Ordering::Release);
        let alive = run_pass(&mut batch);
        PASS_SINCE_US.store(0, Ordering::Release);
        PASS_MAX_US.fetch_max(time::now_us() - started_us, Ordering::Relaxed);
        if !alive {
            // The state machine failed: this node takes no further part.
            loop {
                sched::sleep_ms(60_000);
            }
        }
    }
}

/// One pass of the `raft` task. Returns false once the node must stop.
fn run_pass(batch: &mut VecDeque<Input>) -> bool {
    debug_assert!(batch.is_empty());
    inbound(|q| {
        q.kicked = false;
        core::mem::swap(&mut q.inputs, batch);
    });
    let compaction = sm(|s| s.compaction_ready.take()).flatten();
    if let Some(why) = sm(|s| s.failed.clone()).flatten() {
        log::error!("raft: {why}; this node stops taking part");
        batch.clear();
        return false;
    }
    let mut guard = CONSENSUS.lock();
    let Some(raft) = guard.as_mut() else {
        batch.clear();
        return false;
    };
    let stall_ms = INJECTED_STALL_MS.swap(0, Ordering::Relaxed);
    if stall_ms > 0 {
        // Spin, as the driver does while it polls the disk for a flush's completion.
        let until_us = time::now_us() + stall_ms * 1000;
        while time::now_us() < until_us {
            core::hint::spin_loop();
        }
    }
    let mut out = Output::default();
    let mut events_out = Vec::new();
    let mut run = 0;
    for input in batch.drain(..) {
        match input {
            Input::Message(from, msg) => {
                run = 0;
                if Some(msg.from) == raft.driver.node().leader() {
                    let now_us = time::now_us();
                    let last_us = LEADER_LAST_US.swap(now_us, Ordering::Relaxed);
                    if last_us != 0 {
                        LEADER_GAP_MAX_US.fetch_max(now_us - last_us, Ordering::Relaxed);
                    }
                }
                raft.driver.step_from(from, msg);
            }
            // Ticks that piled up while this task waited on its own disk are time in which
            // nobody could answer it (it sent nothing): replaying them all at once would
            // fail CheckQuorum or fire an election against peers that did nothing wrong.
            // A long run of them counts as a pause (see TICK_RUN_MAX).
            Input::Tick if run >= TICK_RUN_MAX => {
                SKIPPED_TICKS.fetch_add(1, Ordering::Relaxed);
            }
            Input::Tick => {
                run += 1;
                tick_once(raft, &mut out);
            }
        }
    }
    if let Some((index, data)) = compaction {
        compact(raft, index, data, &mut events_out);
    }
    let _ = raft.driver.drain(&mut out);
    events_out.extend(note_store(raft));
    let role_event = note_role(raft);
    let wants = sm(|s| raft.driver.wants_compaction(s.index)).unwrap_or(false);
    publish(raft);
    drop(guard);
    let applies = !out.apply.is_empty() || !out.read_states.is_empty();
    sm(|s| {
        for read in &out.read_states {
            if let Some(slot) = s.reads.get_mut(&read.ctx) {
                *slot = read.index;
            }
        }
        s.to_apply.extend(out.apply);
        s.compaction_wanted |= wants;
    });
    send_all(out.messages);
    for event in events_out.into_iter().chain(role_event) {
        events::push(event);
    }
    if applies || wants {
        events::push(EventKind::RaftApply);
    }
    true
}

/// One tick of Raft's clock, or, while stalled, a retry of the store when it is due.
fn tick_once(raft: &mut Consensus, out: &mut Output) {
    match &raft.stall {
        None => raft.driver.tick(),
        Some(stall) if time::now_us() >= stall.retry_at_us => {
            // Success shows as the stall ending (see `note_store`); failure backs off.
            let _ = raft.driver.retry(out);
            if raft.driver.stalled().is_some() {
                if let Some(stall) = raft.stall.as_mut() {
                    stall.backoff_ms = (stall.backoff_ms * 2).min(RETRY_MAX_MS);
                    stall.retry_at_us = time::now_us() + stall.backoff_ms * 1000;
                }
            }
        }
        Some(_) => {}
    }
}

/// Compacts through `index` with the state the reactor serialized there.
fn compact(raft: &mut Consensus, index: u64, data: Vec<u8>, events_out: &mut Vec<EventKind>) {
    let log_bytes = raft.driver.node().log_bytes() as u64;
    let bytes = data.len() as u64;
    match raft.driver.compact(index, data) {
        Ok(()) => events_out.push(EventKind::RaftCompact {
            index,
            snapshot_bytes: bytes,
            log_bytes,
        }),
        // An installed snapshot overtook it, or the node is stalled: nothing to do.
        Err(CompactFailure::Refused(_) | CompactFailure::Stalled) => {}
        Err(CompactFailure::Store(err)) => {
            log::warn!("raft: compaction at {index} could not rewrite the store: {err:?}");
        }
    }
}

/// Tracks the driver's stall state: starts or ends a [`Stall`] and returns the event that
/// announces a change.
fn note_store(raft: &mut Consensus) -> Option<EventKind> {
    let now_us = time::now_us();
    match (raft.driver.stalled(), raft.stall.as_mut()) {
        (None, None) | (Some(_), Some(_)) => None,
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

/// The `raft_role` event when role, leader or term changed.
fn note_role(raft: &mut Consensus) -> Option<EventKind> {
    let node = raft.driver.node();
    if node.commit_index() > raft.commit_seen.0 {
        raft.commit_seen = (node.commit_index(), time::now_us());
    }
    let role = (node.role(), node.leader(), node.term());
    if role == raft.last_role {
        return None;
    }
    let counts = (node.election_timeouts(), node.check_quorum_stepdowns());
    let why = if counts.1 > raft.last_counts.1 {
        "check_quorum"
    } else if counts.0 > raft.last_counts.0 {
        "election_timeout"
    } else if role.2 > raft.last_role.2 {
        "newer_term"
    } else {
        "message"
    };
    raft.last_counts = counts;
    raft.last_role = role;
    Some(EventKind::RaftRole {
        role: role_name(role.0),
        term: role.2,
        leader: role.1.unwrap_or(0),
        why,
    })
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

/// Why a proposal or read was not accepted.
#[derive(Debug)]
pub enum ConsensusError {
    /// Consensus is not running on this node.
    Unavailable,
    /// Raft refused (not leader, backpressure, a stalled store…).
    Refused(ProposeError),
}

/// Runs `f` on the driver (waiting while the `raft` task writes to the disk), then wakes
/// the task to handle what `f` produced.
fn with_driver<R>(f: impl FnOnce(&mut Driver<storage::Device>) -> R) -> Option<R> {
    let result = CONSENSUS.lock().as_mut().map(|raft| f(&mut raft.driver));
    inbound(|q| q.kicked = true);
    RAFT_WAIT.wake_all();
    result
}

/// Proposes a tagged entry; returns its log index.
pub fn propose(tag: u8, payload: &[u8]) -> Result<u64, ConsensusError> {
    let mut data = Vec::with_capacity(payload.len() + 1);
    data.push(tag);
    data.extend_from_slice(payload);
    with_driver(|driver| driver.propose(data))
        .ok_or(ConsensusError::Unavailable)?
        .map_err(ConsensusError::Refused)
}

/// Starts a linearizable read; poll [`read_ready`] with the same `ctx`.
pub fn read_index(ctx: u64) -> Result<(), ConsensusError> {
    // Registered first: a one-voter group confirms the read in the next pass.
    sm(|s| s.reads.insert(ctx, u64::MAX)).ok_or(ConsensusError::Unavailable)?;
    let result = with_driver(|driver| driver.read_index(ctx))
        .ok_or(ConsensusError::Unavailable)
        .and_then(|r| r.map_err(ConsensusError::Refused));
    if result.is_err() {
        sm(|s| s.reads.remove(&ctx));
    }
    result
}

/// Whether the read `ctx` may now be served from the applied state.
pub fn read_ready(ctx: u64) -> bool {
    sm(|s| {
        s.reads
            .get(&ctx)
            .is_some_and(|&index| index != u64::MAX && s.index >= index)
    })
    .unwrap_or(false)
}

/// Forgets a read (served or abandoned).
pub fn read_done(ctx: u64) {
    sm(|s| s.reads.remove(&ctx));
}

/// Runs `f` on the applied key/value state.
pub fn with_applied<R>(f: impl FnOnce(&Applied) -> R) -> Option<R> {
    sm(|s| f(&s.applied))
}

/// Applies queued work in log order (the reactor: on `raft_apply` and every tick), then
/// serializes the state if the `raft` task asked for a compaction.
pub fn apply_pending() {
    while let Some(item) = sm(|s| {
        if s.failed.is_some() {
            None
        } else {
            s.to_apply.pop_front()
        }
    })
    .flatten()
    {
        let index = item.index();
        let loaded = match item {
            Apply::Snapshot(snapshot) => load_snapshot(snapshot.meta.index, &snapshot.data),
            Apply::Entry(entry) => {
                apply_entry(entry.index, &entry.data);
                Ok(())
            }
        };
        sm(|s| match loaded {
            Ok(()) => s.index = index,
            Err(why) => {
                log::error!("raft: {why}");
                s.failed = Some(why);
            }
        });
    }
    prepare_compaction();
}

fn apply_entry(index: u64, data: &[u8]) {
    match data.split_first() {
        Some((&TAG_KV, rest)) => {
            if let Ok((key, value)) = postcard::from_bytes::<(String, String)>(rest) {
                sm(|s| s.applied.kv.insert(key, value));
            }
            control::on_committed(index, None);
        }
        Some((&TAG_CONTROL, rest)) => control::on_committed(index, Some(rest)),
        // The leader's no-op, and unknown tags: skipped on every node alike, so state stays
        // identical (the control plane still learns which index holds what).
        _ => control::on_committed(index, None),
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
    control::restore(index, &state.desired)
        .map_err(|e| format!("the snapshot at index {index} does not load: {e:?}"))?;
    sm(|s| s.applied.kv = state.kv);
    let from_leader = STATUS
        .lock()
        .as_ref()
        .is_some_and(|s| s.stats.snapshots_installed > 0);
    events::push(EventKind::RaftSnapshot {
        action: if from_leader { "installed" } else { "loaded" },
        index,
        bytes: data.len() as u64,
    });
    Ok(())
}

/// Serializes the state machine at its applied index when the `raft` task wants to
/// compact, and hands it over.
fn prepare_compaction() {
    let Some((index, kv)) = sm(|s| {
        let wanted = s.compaction_wanted && s.compaction_ready.is_none() && s.failed.is_none();
        s.compaction_wanted = false;
        wanted.then(|| (s.index, s.applied.kv.clone()))
    })
    .flatten() else {
        return;
    };
    let Some(desired) = control::snapshot() else {
        return;
    };
    let snapshot = StateSnapshot { kv, desired };
    match postcard::to_extend(&snapshot, alloc::vec![STATE_SNAPSHOT_V1]) {
        Ok(bytes) => {
            sm(|s| s.compaction_ready = Some((index, bytes)));
            RAFT_WAIT.wake_all();
        }
        Err(err) => log::error!("raft: cannot serialize the state at {index}: {err}"),
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
#[derive(Clone)]
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
    /// The store failure this node is stalled on, and since when (`time::now_us`).
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
    pub stats: DriverStats,
    /// Raft messages the reactor dropped because the `raft` task's queue was full.
    pub inbound_dropped: u64,
    /// Rounds of heartbeats the reactor sent for a leader busy on its disk.
    pub cover_rounds: u64,
    /// The `raft` task's longest pass (disk waits included), in µs.
    pub pass_max_us: u64,
    /// Ticks read as a pause after the `raft` task fell behind.
    pub skipped_ticks: u64,
    /// Longest gaps seen: between messages from the leader, between passes (µs).
    pub leader_gap_max_us: u64,
    pub pass_gap_max_us: u64,
    /// The commit index and the `time::now_us` at which it last advanced.
    pub commit_seen: (u64, u64),
}

/// Publishes the driver's state for lock-free readers.
fn publish(raft: &mut Consensus) {
    let node = raft.driver.node();
    let store = raft.driver.store();
    let status = Status {
        id: node.id(),
        role: node.role(),
        term: node.term(),
        leader: node.leader(),
        commit: node.commit_index(),
        applied: 0,
        last_index: node.last_index(),
        device: raft.device,
        failed: None,
        stalled: raft.stall.as_ref().map(|s| (s.error, s.since_us)),
        snapshot: (node.snapshot_meta().index, node.snapshot_bytes() as u64),
        log_entries: node.last_index() - node.snapshot_meta().index,
        log_bytes: node.log_bytes() as u64,
        disk_generation: store.generation(),
        disk_used_sectors: store.used_sectors(),
        disk_region_sectors: store.region_sectors(),
        stats: raft.driver.stats(),
        inbound_dropped: 0,
        cover_rounds: 0,
        pass_max_us: 0,
        skipped_ticks: 0,
        leader_gap_max_us: 0,
        pass_gap_max_us: 0,
        commit_seen: raft.commit_seen,
    };
    without_interrupts(|| *STATUS.lock() = Some(status));
}

/// The current Raft state (as of the `raft` task's last pass, with the state machine's
/// applied index and failure now); `None` when consensus is not running.
pub fn status() -> Option<Status> {
    let mut status = without_interrupts(|| STATUS.lock().clone())?;
    let (applied, failed) = sm(|s| (s.index, s.failed.clone()))?;
    status.applied = applied;
    status.failed = failed;
    status.inbound_dropped = inbound(|q| q.dropped);
    status.cover_rounds = COVER_ROUNDS.load(Ordering::Relaxed);
    status.pass_max_us = PASS_MAX_US.load(Ordering::Relaxed);
    status.skipped_ticks = SKIPPED_TICKS.load(Ordering::Relaxed);
    status.leader_gap_max_us = LEADER_GAP_MAX_US.load(Ordering::Relaxed);
    status.pass_gap_max_us = PASS_GAP_MAX_US.load(Ordering::Relaxed);
    Some(status)
}

/// The commit index and the `time::now_us` at which it last advanced.
pub fn last_commit_advance() -> Option<(u64, u64)> {
    without_interrupts(|| STATUS.lock().as_ref().map(|s| s.commit_seen))
}
