//! Adapter for our core: `consensus::driver::Driver` — the very loop the kernel runs
//! (persist, send, apply, compaction by policy, stall and retry on a failing store) — over a
//! tearing `MemDevice` that can also fail operations on demand.

use consensus::disk::mem::MemDevice;
use consensus::disk::DiskStore;
use consensus::driver::{Apply, CompactionPolicy, Driver};
use consensus::{Config, DurableState, Message, Role};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::adapter::{Applied, Output, RaftImpl, Status};

/// Sectors of each node's simulated disk (256 KiB).
pub const DISK_SECTORS: u64 = 512;
/// Besides every `compact_every` entries, compact once this many applied log bytes pile up
/// (so the byte half of the kernel's policy runs too; large commands trigger it first).
pub const COMPACT_LOG_BYTES: usize = 6 * 1024;

enum State {
    Up {
        driver: Box<Driver<MemDevice>>,
        /// While stalled: what a crash now would recover (the mirror is ahead of the disk).
        stalled_durable: Option<DurableState>,
    },
    /// `recovered` is what a restart will find (computed once at the crash).
    Down {
        dev: MemDevice,
        recovered: DurableState,
    },
    Moving,
}

/// One simulated node of our implementation.
pub struct Ours {
    id: u64,
    voters: Vec<u64>,
    seed: u64,
    restarts: u64,
    policy: CompactionPolicy,
    state: State,
    /// Recovery reports that found torn or corrupt records (the sim counts them).
    pub dirty_recoveries: u64,
    /// Crashes that lost or tore at least one unflushed write.
    pub torn_crashes: u64,
    /// Driver counters of earlier lives: (snapshots installed, store failures, recoveries).
    past_stats: (u64, u64, u64),
}

impl Ours {
    fn config(&self) -> Config {
        // A different timeout stream after each restart, still a pure function of the seed.
        Config::new(self.id, &self.voters, self.seed ^ (self.restarts << 48))
    }

    fn driver(&self) -> &Driver<MemDevice> {
        match &self.state {
            State::Up { driver, .. } => driver,
            _ => panic!("node {} is down", self.id),
        }
    }

    fn driver_mut(&mut self) -> &mut Driver<MemDevice> {
        match &mut self.state {
            State::Up { driver, .. } => driver,
            _ => panic!("node {} is down", self.id),
        }
    }

    fn open(&mut self, dev: MemDevice, out: &mut Output<Message>) {
        let (driver, report, snapshot) =
            Driver::open(self.config(), dev, self.policy).expect("recovered state is usable");
        if !report.stop.is_clean() {
            self.dirty_recoveries += 1;
        }
        if let Some(s) = snapshot {
            out.applied.push(Applied::Snapshot {
                index: s.meta.index,
                data: s.data,
            });
        }
        self.state = State::Up {
            driver: Box::new(driver),
            stalled_durable: None,
        };
    }

    /// Keeps `stalled_durable` in step with the driver: computed when a stall begins.
    fn note_stall(&mut self) {
        let State::Up {
            driver,
            stalled_durable,
        } = &mut self.state
        else {
            return;
        };
        match (driver.stalled().is_some(), stalled_durable.is_some()) {
            (true, false) => {
                let durable = driver.device_mut().durable_copy();
                let (probe, _) = DiskStore::open(durable).expect("durable part recovers");
                *stalled_durable = Some(probe.state().clone());
            }
            (false, true) => *stalled_durable = None,
            _ => {}
        }
    }
}

impl RaftImpl for Ours {
    type Msg = Message;
    const NAME: &'static str = "ours";

    fn boot(id: u64, voters: &[u64], seed: u64, compact_every: u64) -> Self {
        let never = compact_every >= u64::MAX / 4;
        let mut ours = Ours {
            id,
            voters: voters.to_vec(),
            seed,
            restarts: 0,
            policy: CompactionPolicy {
                entries_max: compact_every,
                log_bytes_max: if never { usize::MAX } else { COMPACT_LOG_BYTES },
            },
            state: State::Moving,
            dirty_recoveries: 0,
            torn_crashes: 0,
            past_stats: (0, 0, 0),
        };
        let mut out = Output::default();
        ours.open(MemDevice::new(DISK_SECTORS), &mut out);
        assert!(out.applied.is_empty(), "a blank disk holds no snapshot");
        ours
    }

    fn route(msg: &Message) -> (u64, u64) {
        (msg.from, msg.to)
    }

    fn encoded_bytes(msg: &Message) -> Option<usize> {
        Some(postcard::to_allocvec(msg).expect("encodable").len())
    }

    fn tick(&mut self) {
        self.driver_mut().tick();
    }

    fn step(&mut self, msg: Message) {
        self.driver_mut().step(msg);
    }

    fn propose(&mut self, data: Vec<u8>) -> bool {
        self.driver_mut().propose(data).is_ok()
    }

    fn read_index(&mut self, ctx: u64) -> bool {
        self.driver_mut().read_index(ctx).is_ok()
    }

    fn drain(&mut self, out: &mut Output<Message>) {
        let mut done = consensus::driver::Output::default();
        let driver = self.driver_mut();
        // A stalled store is retried first (every drain, i.e. every tick and delivery); a
        // failure here is the simulated device still failing, never a crash of the node.
        if driver.retry(&mut done).is_ok() {
            let _ = driver.drain(&mut done);
        }
        self.note_stall();
        out.messages.extend(done.messages);
        for item in done.apply {
            out.applied.push(match item {
                Apply::Snapshot(s) => Applied::Snapshot {
                    index: s.meta.index,
                    data: s.data,
                },
                Apply::Entry(e) => Applied::Entry {
                    index: e.index,
                    term: e.term,
                    data: e.data,
                },
            });
        }
        out.reads
            .extend(done.read_states.iter().map(|r| (r.ctx, r.index)));
    }

    fn wants_compaction(&self, applied: u64) -> bool {
        self.driver().wants_compaction(applied)
    }

    fn compact(&mut self, applied: u64, data: Vec<u8>) {
        // A failed rewrite stalls the node; the next drain retries it.
        let _ = self.driver_mut().compact(applied, data);
        self.note_stall();
    }

    fn fail_disk(&mut self, ops: u32) {
        if let State::Up { driver, .. } = &mut self.state {
            driver.device_mut().fail_next_ops(ops);
        }
    }

    fn crash(&mut self, tear: &mut Xoshiro256PlusPlus) {
        let State::Up { driver, .. } = std::mem::replace(&mut self.state, State::Moving) else {
            panic!("crash of a down node");
        };
        let stats = driver.stats();
        self.past_stats.0 += stats.snapshots_installed;
        self.past_stats.1 += stats.store_failures;
        self.past_stats.2 += stats.store_recoveries;
        let (mut node, mut store, stalled) = driver.into_parts();
        store.device_mut().fail_next_ops(0);
        // Power fails while the next Ready is half-written: its batch is never flushed. (A
        // stalled node already has one: its failed batch may have left unflushed sectors.)
        if stalled.is_none() && node.has_ready() {
            let rd = node.ready();
            store
                .append_batch(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref())
                .expect("disk");
        }
        let mut dev = store.into_device();
        let damage = dev.crash(tear);
        if damage.lost + damage.torn > 0 {
            self.torn_crashes += 1;
        }
        let (probe, _) = DiskStore::open(dev.clone()).expect("recover");
        let recovered = probe.state().clone();
        self.state = State::Down { dev, recovered };
    }

    fn restart(&mut self, out: &mut Output<Message>) {
        let State::Down { dev, .. } = std::mem::replace(&mut self.state, State::Moving) else {
            panic!("restart of an up node");
        };
        self.restarts += 1;
        self.open(dev, out);
    }

    fn status(&self) -> Status {
        let driver = self.driver();
        let node = driver.node();
        Status {
            term: node.term(),
            leader: node.role() == Role::Leader,
            commit: node.commit_index(),
            // What the state machine was handed (Raft's own is ahead during a stall).
            applied: driver.applied_index(),
            snapshot_index: node.snapshot_meta().index,
            last_index: node.last_index(),
        }
    }

    fn log_term(&self, index: u64) -> Option<u64> {
        self.driver().node().log_term(index)
    }

    fn disk_fault_stats(&self) -> (u64, u64) {
        (self.torn_crashes, self.dirty_recoveries)
    }

    fn snapshot_and_stall_stats(&self) -> (u64, u64, u64) {
        let now = match &self.state {
            State::Up { driver, .. } => {
                let s = driver.stats();
                (s.snapshots_installed, s.store_failures, s.store_recoveries)
            }
            _ => (0, 0, 0),
        };
        (
            self.past_stats.0 + now.0,
            self.past_stats.1 + now.1,
            self.past_stats.2 + now.2,
        )
    }

    fn durable_has(&self, index: u64, term: u64) -> bool {
        let state = match &self.state {
            State::Up {
                stalled_durable: Some(durable),
                ..
            } => durable,
            State::Up { driver, .. } => driver.store().state(),
            State::Down { recovered, .. } => recovered,
            State::Moving => unreachable!(),
        };
        let snap = state.snapshot.meta.index;
        if index <= snap {
            return true;
        }
        state
            .entries
            .get((index - snap - 1) as usize)
            .is_some_and(|e| e.term == term)
    }
}
