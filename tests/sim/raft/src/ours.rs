//! Adapter for our core: `RawNode` persisting through `DiskStore` on a tearing `MemDevice`.

use consensus::disk::mem::MemDevice;
use consensus::disk::DiskStore;
use consensus::{Config, DurableState, Message, RawNode, Role};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::adapter::{Applied, Output, RaftImpl, Status};

/// Sectors of each node's simulated disk (256 KiB).
pub const DISK_SECTORS: u64 = 512;

enum State {
    Up {
        node: Box<RawNode>,
        store: DiskStore<MemDevice>,
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
    state: State,
    /// Recovery reports that found torn or corrupt records (the sim counts them).
    pub dirty_recoveries: u64,
    /// Crashes that lost or tore at least one unflushed write.
    pub torn_crashes: u64,
}

impl Ours {
    fn config(&self) -> Config {
        // A different timeout stream after each restart, still a pure function of the seed.
        Config::new(self.id, &self.voters, self.seed ^ (self.restarts << 48))
    }

    fn up(&self) -> (&RawNode, &DiskStore<MemDevice>) {
        match &self.state {
            State::Up { node, store } => (node, store),
            _ => panic!("node {} is down", self.id),
        }
    }

    fn up_mut(&mut self) -> (&mut RawNode, &mut DiskStore<MemDevice>) {
        match &mut self.state {
            State::Up { node, store } => (node, store),
            _ => panic!("node {} is down", self.id),
        }
    }
}

impl RaftImpl for Ours {
    type Msg = Message;
    const NAME: &'static str = "ours";

    fn boot(id: u64, voters: &[u64], seed: u64) -> Self {
        let mut ours = Ours {
            id,
            voters: voters.to_vec(),
            seed,
            restarts: 0,
            state: State::Moving,
            dirty_recoveries: 0,
            torn_crashes: 0,
        };
        let (store, report) = DiskStore::open(MemDevice::new(DISK_SECTORS)).expect("format");
        assert!(report.stop.is_clean());
        let node = RawNode::restart(ours.config(), store.state().clone()).expect("boot");
        ours.state = State::Up {
            node: Box::new(node),
            store,
        };
        ours
    }

    fn route(msg: &Message) -> (u64, u64) {
        (msg.from, msg.to)
    }

    fn encoded_bytes(msg: &Message) -> Option<usize> {
        Some(postcard::to_allocvec(msg).expect("encodable").len())
    }

    fn tick(&mut self) {
        self.up_mut().0.tick();
    }

    fn step(&mut self, msg: Message) {
        self.up_mut().0.step(msg);
    }

    fn propose(&mut self, data: Vec<u8>) -> bool {
        self.up_mut().0.propose(data).is_ok()
    }

    fn read_index(&mut self, ctx: u64) -> bool {
        self.up_mut().0.read_index(ctx).is_ok()
    }

    fn drain(&mut self, out: &mut Output<Message>) {
        let (node, store) = self.up_mut();
        while node.has_ready() {
            let rd = node.ready();
            // Handling order of the crate docs: persist (snapshot, entries, hard state), send, apply.
            store
                .persist(rd.snapshot.as_ref(), &rd.entries, rd.hard_state.as_ref())
                .expect("disk");
            out.messages.extend(rd.messages.iter().cloned());
            if let Some(s) = &rd.snapshot {
                out.applied.push(Applied::Snapshot {
                    index: s.meta.index,
                    data: s.data.clone(),
                });
            }
            for e in &rd.committed_entries {
                out.applied.push(Applied::Entry {
                    index: e.index,
                    term: e.term,
                    data: e.data.clone(),
                });
            }
            out.reads
                .extend(rd.read_states.iter().map(|r| (r.ctx, r.index)));
            node.advance(rd);
        }
    }

    fn compact(&mut self, applied: u64, data: Vec<u8>) {
        let (node, store) = self.up_mut();
        if let Ok(snapshot) = node.compact(applied, data) {
            let snapshot = snapshot.clone();
            store.save_snapshot(&snapshot).expect("disk");
        }
    }

    fn crash(&mut self, tear: &mut Xoshiro256PlusPlus) {
        let State::Up {
            mut node,
            mut store,
        } = std::mem::replace(&mut self.state, State::Moving)
        else {
            panic!("crash of a down node");
        };
        // Power fails while the next Ready is half-written: its batch is never flushed.
        if node.has_ready() {
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
        let (store, report) = DiskStore::open(dev).expect("recover");
        if !report.stop.is_clean() {
            self.dirty_recoveries += 1;
        }
        self.restarts += 1;
        let durable = store.state().clone();
        if durable.snapshot.meta.index > 0 {
            out.applied.push(Applied::Snapshot {
                index: durable.snapshot.meta.index,
                data: durable.snapshot.data.clone(),
            });
        }
        let node = RawNode::restart(self.config(), durable).expect("recovered state is consistent");
        self.state = State::Up {
            node: Box::new(node),
            store,
        };
    }

    fn status(&self) -> Status {
        let (node, _) = self.up();
        Status {
            term: node.term(),
            leader: node.role() == Role::Leader,
            commit: node.commit_index(),
            applied: node.applied_index(),
            snapshot_index: node.snapshot_meta().index,
            last_index: node.last_index(),
        }
    }

    fn log_term(&self, index: u64) -> Option<u64> {
        self.up().0.log_term(index)
    }

    fn disk_fault_stats(&self) -> (u64, u64) {
        (self.torn_crashes, self.dirty_recoveries)
    }

    fn durable_has(&self, index: u64, term: u64) -> bool {
        let state = match &self.state {
            State::Up { store, .. } => store.state(),
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
