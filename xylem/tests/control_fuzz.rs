//! Time-bounded, seeded fuzzing of the control plane's message handler and of everything a
//! committed entry reaches (issue #15.4).
//!
//! `cargo test -p xylem --release --test control_fuzz` runs seeds for `CONTROL_FUZZ_SECS`
//! seconds (default 3; `cargo xtask test` gives it 60). Each seed drives one leader's control
//! plane for a few thousand steps:
//!
//! - peers' control messages into `xylem::inbound::Inbound` — valid and random reports,
//!   forwarded commands of every kind with edge-case fields (epoch u64::MAX, huge replica
//!   counts, unknown services, bad names), mutated and random bytes, from members and not;
//! - whatever the inbound handler asks to propose is committed (applied) at once, as Raft
//!   would; so is the leader's own plan (`placement::plan` over views built from the reports)
//!   — and now and then an arbitrary command is committed directly, as a buggy or forged
//!   leader could get into the log;
//! - `reconcile` for a random node with random local cells, and `status::service_rows`.
//!
//! Invariants after every step: nothing panics; the desired state's invariants hold
//! (`check_invariants`); `epoch_high` never decreases and stays below `EPOCH_MAX`; the reports
//! map holds at most `REPORTS_MAX` entries, members only; no `Assign`/`Unassign` is ever
//! accepted from a forward; every accepted forward applies cleanly (it was validated against
//! the same state); reconcile never spawns for another node or a stale epoch.
//! A failure prints `reproduce with CONTROL_FUZZ_SEED=<seed>`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use xylem::command::Command;
use xylem::crashloop::CrashLoopTracker;
use xylem::desired::{DesiredState, EPOCH_MAX};
use xylem::inbound::{Accepted, ControlMsg, Inbound, View, REPORTS_MAX};
use xylem::placement::{self, NodeView};
use xylem::reconcile::{self, Action, LocalCell};
use xylem::report::{CellReport, NodeReport};
use xylem::service::{PayloadCatalog, ServiceSpec};
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
    desired: DesiredState,
    inbound: Inbound,
    tracker: CrashLoopTracker,
    config: xylem::config::Config,
    index: u64,
    now_ms: u64,
    epoch_high: u64,
    report_seq: u64,
    accepted_forwards: u64,
    refused: u64,
}

impl Fuzz {
    fn new(seed: u64) -> Fuzz {
        Fuzz {
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            desired: DesiredState::new(PayloadCatalog::new(&["hello", "counter"])),
            inbound: Inbound::default(),
            tracker: CrashLoopTracker::new(),
            config: xylem::config::Config::default(),
            index: 0,
            now_ms: 0,
            epoch_high: 0,
            report_seq: 0,
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
                }
            }
            4 => {
                let epoch = nasty(rng, self.epoch_high);
                Command::Unassign {
                    service: name(rng),
                    slot: below(rng, 70) as u16,
                    epoch,
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
                uptime_s: 1,
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
            cells,
        );
        let bytes = report.encode().unwrap_or_default();
        postcard::to_allocvec(&ControlMsg::Report(bytes)).unwrap()
    }

    fn message(&mut self) -> (NodeId, Vec<u8>) {
        let from = if below(&mut self.rng, 6) == 0 {
            nasty(&mut self.rng, 4)
        } else {
            MEMBERS[below(&mut self.rng, 3) as usize]
        };
        let claimed = if below(&mut self.rng, 5) == 0 {
            MEMBERS[below(&mut self.rng, 3) as usize]
        } else {
            from
        };
        let mut bytes = match below(&mut self.rng, 4) {
            0 | 1 => {
                let command = self.command();
                let encoded = command.encode().unwrap_or_else(|_| vec![1]);
                postcard::to_allocvec(&ControlMsg::Forward(encoded)).unwrap()
            }
            2 => self.report_bytes(claimed),
            _ => {
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

    fn commit(&mut self, command: &Command) -> bool {
        self.index += 1;
        let ok = self.desired.apply(self.index, command).is_ok();
        self.desired
            .check_invariants()
            .unwrap_or_else(|e| panic!("invariant broken after {command:?}: {e}"));
        let high = self.desired.epoch_high();
        assert!(high >= self.epoch_high, "epoch_high went back");
        assert!(high < EPOCH_MAX, "epoch_high implausible: {high}");
        self.epoch_high = high;
        ok
    }

    fn views(&self) -> Vec<NodeView> {
        MEMBERS
            .iter()
            .map(|&id| {
                let role = if id == 3 {
                    NodeRole::Witness
                } else {
                    NodeRole::Worker
                };
                match self.inbound.reports.get(id) {
                    Some((r, _)) => {
                        NodeView::from_report(r, role, true, self.desired.is_draining(id))
                    }
                    None => NodeView::unreported(id, role, true, false),
                }
            })
            .collect()
    }

    fn step(&mut self) {
        self.now_ms += 10;
        match below(&mut self.rng, 10) {
            0..=4 => {
                let (from, bytes) = self.message();
                let view = View {
                    members: &MEMBERS,
                    is_leader: below(&mut self.rng, 8) != 0,
                    desired: &self.desired,
                };
                match self.inbound.on_message(from, &bytes, self.now_ms, &view) {
                    Ok(Accepted::Propose(command)) => {
                        let decoded = Command::decode(&command).expect("accepted decodes");
                        assert!(
                            !matches!(decoded, Command::Assign { .. } | Command::Unassign { .. }),
                            "a forwarded {decoded:?} was accepted"
                        );
                        assert!(MEMBERS.contains(&from));
                        assert!(self.commit(&decoded), "validated forward failed to apply");
                        self.accepted_forwards += 1;
                    }
                    Ok(Accepted::Report) => assert!(MEMBERS.contains(&from)),
                    Err(_) => self.refused += 1,
                }
                assert!(self.inbound.reports.len() <= REPORTS_MAX);
                for (id, _) in self.inbound.reports.iter() {
                    assert!(MEMBERS.contains(id), "report from non-member {id}");
                }
            }
            5 | 6 => {
                let views = self.views();
                let plan = placement::plan(
                    &self.desired,
                    &views,
                    &mut self.tracker,
                    &self.config,
                    self.now_ms,
                );
                for command in &plan.commands {
                    self.commit(command);
                }
            }
            7 => {
                // An arbitrary committed entry (a forged or buggy proposal that got in).
                let command = self.command();
                self.commit(&command);
            }
            _ => self.reconcile(),
        }
    }

    fn reconcile(&mut self) {
        let me = MEMBERS[below(&mut self.rng, 3) as usize];
        let cells: Vec<LocalCell> = (0..below(&mut self.rng, 5))
            .map(|i| LocalCell {
                id: i,
                service: name(&mut self.rng),
                slot: below(&mut self.rng, 4) as u16,
                epoch: nasty(&mut self.rng, self.epoch_high),
                state: STATES[below(&mut self.rng, 6) as usize],
            })
            .collect();
        let quorum = below(&mut self.rng, 4) != 0;
        let plan = reconcile::reconcile(&self.desired, me, &cells, quorum);
        for action in &plan.actions {
            if let Action::Spawn {
                service,
                slot,
                epoch,
                ..
            } = action
            {
                assert!(quorum, "spawn without quorum");
                let bound = self
                    .desired
                    .assignment(service, *slot)
                    .expect("spawn for a bound slot");
                assert_eq!(
                    (bound.node, bound.epoch),
                    (me, *epoch),
                    "spawn for another node or epoch"
                );
            }
        }
        let reports: Vec<NodeReport> = self
            .inbound
            .reports
            .iter()
            .map(|(_, (r, _))| r.clone())
            .collect();
        let _ = xylem::status::service_rows(&self.desired, &reports, &[]);
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
