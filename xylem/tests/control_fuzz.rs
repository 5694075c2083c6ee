//! Time-bounded, seeded fuzzing of one node's whole control plane (`xylem::node::ControlNode`)
//! against peer input and forged log entries (issue #15.4).
//!
//! `cargo test -p xylem --release --test control_fuzz` runs seeds for `CONTROL_FUZZ_SECS`
//! seconds (default 3; `cargo xtask test` gives it 60). Each seed drives the control node of
//! worker 1 — the Raft leader most of the time, a follower or leaderless now and then — for a
//! few thousand steps:
//!
//! - peers' control messages into `ControlNode::on_message`: valid and random reports,
//!   forwarded writes of every kind with edge-case fields (epoch u64::MAX, huge replica
//!   counts, unknown services, bad names), replies, lease requests and grants, mutated and
//!   random bytes, from members, from itself and from non-members;
//! - whatever the node asks to propose is committed at once, in order, as Raft would (its own
//!   plans, its own and forwarded writes); now and then an arbitrary command is committed
//!   directly, as a buggy or forged leader could get into the log, and now and then a no-op;
//! - ticks with a random cell table (states of the cells it started change at random).
//!
//! Invariants after every step: nothing panics; the desired state's invariants hold
//! (`check_invariants`); `epoch_high` never decreases and stays below `EPOCH_MAX`; no
//! forwarded `Assign`/`Unassign` is ever proposed, and a write is proposed for a remote only
//! when it came from a member; no cell is spawned for another node's slot or a stale epoch;
//! nothing is spawned while the node has no leader.
//! A failure prints `reproduce with CONTROL_FUZZ_SEED=<seed>`.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use xylem::command::{Command, Reason};
use xylem::desired::EPOCH_MAX;
use xylem::node::{ControlNode, LocalCellRow, NodeConfig, Observed, Output, RaftView, Token};
use xylem::report::{CellReport, NodeReport};
use xylem::service::{PayloadCatalog, ServiceSpec};
use xylem::status::{MemberState, RaftRole};
use xylem::wire::ControlMsg;
use xylem::write::WriteError;
use xylem::{CellState, NodeId, NodeRole};

const MEMBERS: [NodeId; 3] = [1, 2, 3];
const STEPS_PER_SEED: usize = 2000;
const STATES: [CellState; 6] = [
    CellState::Starting,
    CellState::Running,
    CellState::Backoff,
    CellState::CrashLoop,
    CellState::Exited,
    CellState::Stopping,
];

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer"))
    })
}

fn below(rng: &mut Xoshiro256PlusPlus, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

fn nasty(rng: &mut Xoshiro256PlusPlus, around: u64) -> u64 {
    match below(rng, 8) {
        0 => u64::MAX,
        1 => EPOCH_MAX,
        2 => 0,
        3 => rng.next_u64(),
        _ => around.saturating_add(below(rng, 4)),
    }
}

fn name(rng: &mut Xoshiro256PlusPlus) -> String {
    [
        "web",
        "db",
        "cache",
        "x",
        "",
        "Bad!",
        "a-very-long-service-name-beyond-32-chars",
    ][below(rng, 7) as usize]
        .to_string()
}

struct Fuzz {
    rng: Xoshiro256PlusPlus,
    node: ControlNode,
    /// The committed log after the entries the node has seen (index = position + 1).
    index: u64,
    now_ms: u64,
    term: u64,
    leader: Option<NodeId>,
    epoch_high: u64,
    report_seq: u64,
    cells: Vec<LocalCellRow>,
    next_cell: u64,
    accepted_forwards: u64,
    refused: u64,
}

impl Fuzz {
    fn new(seed: u64) -> Fuzz {
        let members = vec![
            (1, NodeRole::Worker),
            (2, NodeRole::Worker),
            (3, NodeRole::Witness),
        ];
        let mut config = xylem::config::Config::default();
        config.placement.free_mib_min = 4;
        let cfg = NodeConfig {
            id: 1,
            members,
            config,
            boot_seed: seed << 16,
        };
        Fuzz {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            node: ControlNode::new(cfg, PayloadCatalog::new(&["hello", "counter"])),
            index: 0,
            now_ms: 1_000,
            term: 1,
            leader: Some(1),
            epoch_high: 0,
            report_seq: 0,
            cells: Vec::new(),
            next_cell: 1,
            accepted_forwards: 0,
            refused: 0,
        }
    }

    fn command(&mut self) -> Command {
        let rng = &mut self.rng;
        match below(rng, 6) {
            0 => {
                let mut spec = ServiceSpec::new(
                    &name(rng),
                    ["hello", "counter", "nope"][below(rng, 3) as usize],
                    below(rng, 70) as u16,
                );
                spec.max_replicas = below(rng, 70) as u16;
                spec.min_replicas = below(rng, 3) as u16;
                Command::ApplyService(spec)
            }
            1 => Command::Scale {
                name: name(rng),
                replicas: nasty(rng, 2) as u16,
            },
            2 => Command::Delete { name: name(rng) },
            3 => {
                let epoch = nasty(rng, self.epoch_high + 1);
                Command::Assign {
                    service: name(rng),
                    slot: below(rng, 70) as u16,
                    node: nasty(rng, 1),
                    epoch,
                    reason: Reason::Place,
                }
            }
            4 => {
                let epoch = nasty(rng, self.epoch_high);
                Command::Unassign {
                    service: name(rng),
                    slot: below(rng, 70) as u16,
                    epoch,
                    reason: Reason::NodeLost,
                }
            }
            _ => Command::SetDraining {
                node: nasty(rng, 2),
                draining: below(rng, 2) == 0,
            },
        }
    }

    fn report_bytes(&mut self, node: NodeId) -> Vec<u8> {
        self.report_seq += 1;
        let cells = (0..below(&mut self.rng, 4))
            .map(|i| CellReport {
                cell_id: i as u32,
                service: name(&mut self.rng),
                slot: below(&mut self.rng, 4) as u16,
                epoch: nasty(&mut self.rng, self.epoch_high),
                state: STATES[below(&mut self.rng, 6) as usize],
                restarts: below(&mut self.rng, 9) as u16,
                uptime_s: below(&mut self.rng, 3) as u32,
                cpu_pct: below(&mut self.rng, 101) as u8,
                listening: below(&mut self.rng, 2) == 1,
            })
            .collect();
        let seq = if below(&mut self.rng, 5) == 0 {
            nasty(&mut self.rng, 0)
        } else {
            self.report_seq
        };
        let report = NodeReport::new(
            node,
            seq,
            nasty(&mut self.rng, 100) as u32,
            nasty(&mut self.rng, 64) as u32,
            nasty(&mut self.rng, self.index),
            cells,
        );
        report.encode().unwrap_or_default()
    }

    fn message(&mut self) -> (NodeId, Vec<u8>) {
        let from = match below(&mut self.rng, 8) {
            0 => nasty(&mut self.rng, 4),
            1 => 1,
            _ => MEMBERS[1 + below(&mut self.rng, 2) as usize],
        };
        let claimed = if below(&mut self.rng, 5) == 0 {
            MEMBERS[below(&mut self.rng, 3) as usize]
        } else {
            from
        };
        let req = nasty(&mut self.rng, 7);
        let msg = match below(&mut self.rng, 8) {
            0..=2 => {
                let command = self.command();
                let command = command.encode().unwrap_or_else(|_| vec![1]);
                Some(ControlMsg::Forward { req, command })
            }
            3 | 4 => Some(ControlMsg::Report(self.report_bytes(claimed))),
            5 => Some(ControlMsg::Reply {
                req,
                result: if below(&mut self.rng, 2) == 0 {
                    Ok(nasty(&mut self.rng, self.index))
                } else {
                    Err(WriteError::NoQuorum)
                },
            }),
            6 => Some(if below(&mut self.rng, 2) == 0 {
                ControlMsg::LeaseRequest { seq: req }
            } else {
                ControlMsg::LeaseGrant {
                    seq: req,
                    index: nasty(&mut self.rng, self.index),
                }
            }),
            _ => None,
        };
        let mut bytes = match msg.and_then(|m| m.encode()) {
            Some(bytes) => bytes,
            None => {
                let mut b = vec![0u8; below(&mut self.rng, 80) as usize];
                self.rng.fill_bytes(&mut b);
                b
            }
        };
        if !bytes.is_empty() && below(&mut self.rng, 6) == 0 {
            let at = below(&mut self.rng, bytes.len() as u64) as usize;
            bytes[at] ^= 1 << below(&mut self.rng, 8);
        }
        (from, bytes)
    }

    /// Runs `f` on the node with a fresh observation, then carries out its outputs.
    fn with(&mut self, f: impl FnOnce(&mut ControlNode, &Observed)) {
        let members: BTreeMap<NodeId, MemberState> = [
            (
                2,
                if below(&mut self.rng, 10) == 0 {
                    MemberState::Dead
                } else {
                    MemberState::Alive
                },
            ),
            (3, MemberState::Alive),
        ]
        .into_iter()
        .collect();
        let role = match self.leader {
            Some(1) => RaftRole::Leader,
            Some(_) => RaftRole::Follower,
            None => RaftRole::Candidate,
        };
        let raft = RaftView {
            term: self.term,
            leader: self.leader,
            role,
            commit: self.index,
            applied: self.index,
            failed: false,
        };
        let cells = self.cells.clone();
        let obs = Observed {
            now_ms: self.now_ms,
            raft,
            members: &members,
            cells: Some(&cells),
            load_milli: 100,
            free_mib: 48,
        };
        f(&mut self.node, &obs);
        let outputs = self.node.drain();
        self.carry_out(outputs);
    }

    fn carry_out(&mut self, outputs: Vec<Output>) {
        // Spawns are checked against the state they were decided on, before any output of
        // the batch is carried out (a commit below may unbind the slot afterwards).
        for output in &outputs {
            if let Output::Spawn(spawn) = output {
                assert!(
                    self.leader.is_some(),
                    "spawned {} without a leader",
                    spawn.name
                );
                let bound = self
                    .node
                    .desired()
                    .assignment(&spawn.name.service, spawn.name.slot)
                    .expect("spawn for a bound slot");
                // The slot's binding, or its replacement in flight (make-before-break).
                let surge = self
                    .node
                    .desired()
                    .surge(&spawn.name.service, spawn.name.slot)
                    .map(|s| (s.node, s.epoch));
                assert!(
                    (bound.node, bound.epoch) == (1, spawn.name.epoch)
                        || surge == Some((1, spawn.name.epoch)),
                    "spawn for another node or epoch: bound {bound:?}, surge {surge:?}, {}",
                    spawn.name
                );
            }
        }
        for output in outputs {
            match output {
                Output::Propose { token, bytes } => {
                    let command = Command::decode(&bytes).expect("proposals decode");
                    if let Token::Remote { from, .. } = token {
                        assert!(
                            !matches!(command, Command::Assign { .. } | Command::Unassign { .. }),
                            "a forwarded {command:?} was proposed"
                        );
                        assert!(
                            MEMBERS[1..].contains(&from),
                            "a write from {from} was proposed"
                        );
                        self.accepted_forwards += 1;
                    }
                    if self.leader == Some(1) && below(&mut self.rng, 10) != 0 {
                        let index = self.commit(Some(bytes));
                        self.with(|c, o| c.on_proposed(token, Ok(index), o));
                    } else {
                        let refusal = xylem::write::Refusal::NotLeader {
                            leader: self.leader,
                        };
                        self.with(|c, o| c.on_proposed(token, Err(refusal), o));
                    }
                }
                Output::ReadIndex { ctx } => {
                    let ok = self.leader == Some(1);
                    self.with(|c, o| c.on_read(ctx, ok, o));
                }
                Output::Spawn(spawn) => {
                    let id = self.next_cell;
                    self.next_cell += 1;
                    self.cells.push(LocalCellRow {
                        id,
                        state: CellState::Starting,
                        restarts: 0,
                        uptime_ms: 0,
                        cpu_milli: 0,
                        listening: xylem::node::ListenPorts::new([80]),
                    });
                    let name = spawn.name.clone();
                    self.with(|c, _| c.on_spawned(&name, Some(id)));
                }
                Output::Stop { cell, .. } => self.cells.retain(|c| c.id != cell),
                Output::Send { .. } | Output::Event(_) | Output::Quiesce { .. } => {}
            }
        }
    }

    /// Commits an entry (None: a no-op) and hands it to the node; returns its index.
    fn commit(&mut self, bytes: Option<Vec<u8>>) -> u64 {
        self.index += 1;
        let index = self.index;
        self.with(|c, o| c.on_committed(index, bytes.as_deref(), o));
        let desired = self.node.desired();
        desired
            .check_invariants()
            .unwrap_or_else(|e| panic!("invariant broken at index {index}: {e}"));
        let high = desired.epoch_high();
        assert!(high >= self.epoch_high, "epoch_high went back");
        assert!(high < EPOCH_MAX, "epoch_high implausible: {high}");
        self.epoch_high = high;
        index
    }

    fn step(&mut self) {
        self.now_ms += 10;
        match below(&mut self.rng, 12) {
            0..=4 => {
                let (from, bytes) = self.message();
                let dropped =
                    self.node.stats().messages_dropped + self.node.stats().forwards_refused;
                self.with(|c, o| c.on_message(from, &bytes, o));
                let after = self.node.stats().messages_dropped + self.node.stats().forwards_refused;
                self.refused += after - dropped;
            }
            5..=7 => self.with(|c, o| c.tick(o)),
            8 => {
                // An arbitrary committed entry (a forged or buggy proposal that got in).
                let command = self.command();
                let bytes = command.encode().ok();
                self.commit(bytes);
            }
            9 => {
                for cell in &mut self.cells {
                    cell.state = STATES[below(&mut self.rng, 6) as usize];
                }
            }
            10 => {
                // Leadership changes now and then.
                self.term += 1;
                self.leader = match below(&mut self.rng, 4) {
                    0 => None,
                    1 => Some(2),
                    _ => Some(1),
                };
                self.with(|c, o| c.on_membership_change(o));
            }
            _ => {
                let _ = self.node.status(
                    &Observed {
                        now_ms: self.now_ms,
                        raft: RaftView {
                            term: self.term,
                            leader: self.leader,
                            role: RaftRole::Follower,
                            commit: self.index,
                            applied: self.index,
                            failed: false,
                        },
                        members: &BTreeMap::new(),
                        cells: None,
                        load_milli: 0,
                        free_mib: 0,
                    },
                    &|id| format!("n{id}"),
                );
            }
        }
    }
}

#[test]
fn control_fuzz() {
    if let Some(seed) = env_u64("CONTROL_FUZZ_SEED") {
        let mut fuzz = Fuzz::new(seed);
        for _ in 0..STEPS_PER_SEED {
            fuzz.step();
        }
        return;
    }
    let budget = Duration::from_secs(env_u64("CONTROL_FUZZ_SECS").unwrap_or(3));
    let started = Instant::now();
    let mut seed = 1;
    let (mut seeds, mut accepted, mut refused, mut assigned) = (0u64, 0u64, 0u64, 0u64);
    while started.elapsed() < budget || seeds < 8 {
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut fuzz = Fuzz::new(seed);
            for _ in 0..STEPS_PER_SEED {
                fuzz.step();
            }
            (fuzz.accepted_forwards, fuzz.refused, fuzz.epoch_high)
        }));
        match result {
            Ok((a, r, e)) => {
                accepted += a;
                refused += r;
                assigned += u64::from(e > 0);
            }
            Err(_) => panic!("control fuzz failed: reproduce with CONTROL_FUZZ_SEED={seed}"),
        }
        seed += 1;
        seeds += 1;
    }
    println!(
        "control fuzz: {seeds} seeds in {:.1} s, {accepted} forwards accepted, {refused} messages refused, {assigned} seeds assigned slots",
        started.elapsed().as_secs_f64()
    );
    // The fuzz must reach both sides of every check.
    assert!(accepted > 0 && refused > 0 && assigned > 0);
}
