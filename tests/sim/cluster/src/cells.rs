//! Simulated cells: a node's cell table, supervised by the real `cell::supervise` policy.
//!
//! A cell starts (`Starting` for one step, like a kernel cell loading its image), runs, and
//! ends the way its payload says ([`Behaviour`]): never, a clean exit, a failure after a
//! while, or a crash almost at once (a crash loop). Its [`Supervisor`] decides restarts with
//! backoff and trips the crash-loop gate, exactly as the kernel's cell manager asks it to.
//! When the world calms down (the liveness phase) payloads stop misbehaving: every new
//! incarnation runs forever and running ones keep running.

use cell::lifecycle::ExitReason;
use cell::spec::RestartPolicy;
use cell::supervise::{self, Decision, Supervisor};
use rand_core::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;
use xylem::name::CellName;
use xylem::node::{ListenPorts, LocalCellRow};
use xylem::CellState;

/// The payloads of the simulated image.
pub const PAYLOADS: [&str; 4] = ["steady", "exits", "flaky", "crash"];

/// The CPU a running cell of `payload` uses, thousandths of a CPU: `steady` is busy (the
/// autoscaler's load), the others nearly idle. Constant per payload, so a calm cluster's load
/// is steady and the autoscaler must settle without oscillating.
pub fn cpu_milli(payload: &str) -> u32 {
    match payload {
        "steady" => 700,
        _ => 50,
    }
}

/// How a payload ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Runs until stopped.
    Steady,
    /// Exits after running `after_ms` (the code comes from the payload: `exits` 0, `flaky`
    /// 1, `crash` 101).
    Exit { after_ms: u64 },
}

/// One simulated cell.
#[derive(Clone, Debug)]
pub struct SimCell {
    pub id: u64,
    pub name: CellName,
    pub payload: String,
    /// The service was fenced when the cell was started.
    pub fenced: bool,
    pub state: CellState,
    pub restarts: u32,
    supervisor: Supervisor,
    /// Local time at which the current phase ends (start done, exit, restart).
    due_ms: Option<u64>,
    started_ms: u64,
    /// Its listeners were closed (`Output::Quiesce`): it runs on, taking no new connection.
    pub quiesced: bool,
}

/// A node's cell table.
pub struct SimCells {
    pub cells: Vec<SimCell>,
    next_id: u64,
    /// Payloads misbehave (safety phase) or not (liveness phase).
    pub faulty: bool,
    /// Cells started, and restarts decided by supervisors (for the guard test).
    pub starts: u64,
    pub crash_loops: u64,
}

/// Finished cells kept (like the kernel's table); older ones are purged.
const FINISHED_KEPT: usize = 16;

impl SimCells {
    pub fn new() -> Self {
        Self {
            cells: Vec::new(),
            next_id: 1,
            faulty: true,
            starts: 0,
            crash_loops: 0,
        }
    }

    fn behaviour(&self, payload: &str, rng: &mut Xoshiro256PlusPlus) -> Behaviour {
        let span = |rng: &mut Xoshiro256PlusPlus, lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo);
        match payload {
            _ if !self.faulty => Behaviour::Steady,
            "exits" => Behaviour::Exit {
                after_ms: span(rng, 300, 3_000),
            },
            "flaky" => Behaviour::Exit {
                after_ms: span(rng, 500, 5_000),
            },
            "crash" => Behaviour::Exit {
                after_ms: span(rng, 20, 80),
            },
            _ => Behaviour::Steady,
        }
    }

    /// Starts a cell (it is `Starting` until the next step).
    pub fn spawn(
        &mut self,
        name: CellName,
        payload: &str,
        restart: RestartPolicy,
        fenced: bool,
        now_ms: u64,
    ) -> u64 {
        let config = supervise::Config {
            policy: restart,
            ..supervise::Config::default()
        };
        let supervisor = Supervisor::new(config).expect("default supervision is valid");
        let id = self.next_id;
        self.next_id += 1;
        self.starts += 1;
        self.cells.push(SimCell {
            id,
            name,
            payload: payload.to_string(),
            fenced,
            state: CellState::Starting,
            restarts: 0,
            supervisor,
            due_ms: Some(now_ms),
            started_ms: now_ms,
            quiesced: false,
        });
        self.purge();
        id
    }

    /// Stops a cell for good (a kill: never restarted).
    /// Closes a cell's listeners (the first half of a graceful stop): it keeps running.
    pub fn quiesce(&mut self, id: u64) {
        if let Some(c) = self.cells.iter_mut().find(|c| c.id == id) {
            c.quiesced = true;
        }
    }

    pub fn stop(&mut self, id: u64) {
        if let Some(c) = self.cells.iter_mut().find(|c| c.id == id) {
            if c.state.is_live() {
                c.state = CellState::Exited;
                c.due_ms = None;
            }
        }
    }

    /// Advances every cell to local time `now_ms`.
    pub fn tick(&mut self, now_ms: u64, rng: &mut Xoshiro256PlusPlus) {
        for i in 0..self.cells.len() {
            let Some(due) = self.cells[i].due_ms else {
                continue;
            };
            if due > now_ms {
                continue;
            }
            let state = self.cells[i].state;
            match state {
                CellState::Starting => {
                    let payload = self.cells[i].payload.clone();
                    let behaviour = self.behaviour(&payload, rng);
                    let c = &mut self.cells[i];
                    c.state = CellState::Running;
                    c.started_ms = now_ms;
                    c.due_ms = match behaviour {
                        Behaviour::Steady => None,
                        Behaviour::Exit { after_ms, .. } => Some(now_ms + after_ms),
                    };
                    c.supervisor.on_start(now_ms);
                }
                CellState::Running => self.exit(i, now_ms),
                CellState::Backoff => {
                    let c = &mut self.cells[i];
                    c.state = CellState::Starting;
                    c.restarts += 1;
                    c.due_ms = Some(now_ms);
                    self.starts += 1;
                }
                _ => self.cells[i].due_ms = None,
            }
        }
        if !self.faulty {
            // The world calmed down: running payloads stop misbehaving.
            for c in self
                .cells
                .iter_mut()
                .filter(|c| c.state == CellState::Running)
            {
                c.due_ms = None;
            }
        }
    }

    fn exit(&mut self, i: usize, now_ms: u64) {
        let c = &mut self.cells[i];
        let code = match c.payload.as_str() {
            "exits" => 0,
            "crash" => 101,
            _ => 1,
        };
        let reason = ExitReason::Exited(code);
        match c.supervisor.on_exit(reason, now_ms) {
            Decision::RestartAt(at) => {
                c.state = CellState::Backoff;
                c.due_ms = Some(at);
            }
            Decision::Stop => {
                c.state = CellState::Exited;
                c.due_ms = None;
            }
            Decision::CrashLoop => {
                c.state = CellState::CrashLoop;
                c.due_ms = None;
                self.crash_loops += 1;
            }
        }
    }

    /// Drops the oldest finished cells beyond [`FINISHED_KEPT`].
    fn purge(&mut self) {
        let finished = self.cells.iter().filter(|c| c.state.is_done()).count();
        for _ in 0..finished.saturating_sub(FINISHED_KEPT) {
            if let Some(pos) = self.cells.iter().position(|c| c.state.is_done()) {
                self.cells.remove(pos);
            }
        }
    }

    /// The table as the control node observes it; a running cell that was not quiesced
    /// listens on its service's port (`port_of`), as the `http` payload does once started.
    pub fn rows(&self, now_ms: u64, port_of: impl Fn(&str) -> Option<u16>) -> Vec<LocalCellRow> {
        self.cells
            .iter()
            .map(|c| LocalCellRow {
                id: c.id,
                state: c.state,
                restarts: c.restarts,
                uptime_ms: now_ms.saturating_sub(c.started_ms),
                cpu_milli: if c.state == CellState::Running {
                    cpu_milli(&c.payload)
                } else {
                    0
                },
                listening: if c.state == CellState::Running && !c.quiesced {
                    ListenPorts::new(port_of(&c.name.service))
                } else {
                    ListenPorts::default()
                },
            })
            .collect()
    }

    /// Cells that may be executing user code now (for the safety checks).
    pub fn executing(&self) -> impl Iterator<Item = &SimCell> {
        self.cells
            .iter()
            .filter(|c| matches!(c.state, CellState::Starting | CellState::Running))
    }

    pub fn live(&self) -> usize {
        self.cells.iter().filter(|c| c.state.is_live()).count()
    }
}

impl Default for SimCells {
    fn default() -> Self {
        Self::new()
    }
}
