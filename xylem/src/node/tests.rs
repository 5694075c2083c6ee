//! Host tests of the control node through a tiny harness: a perfect Raft (the leader's
//! proposals commit at once on every connected node), a perfect network between connected
//! nodes, and cell tables that start cells at once. The cluster simulator
//! (`tests/sim/cluster`) runs the same code over real Raft, SWIM and a faulty network; these
//! tests pin single behaviours.

use super::*;
use crate::command::Reason;
use crate::service::ServiceSpec;
use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::ToString;
use alloc::vec;

const W1: NodeId = 1;
const W2: NodeId = 2;
const WIT: NodeId = 3;

struct Member {
    ctl: ControlNode,
    cells: Vec<LocalCellRow>,
    next_cell: u64,
    connected: bool,
    applied: u64,
    load_milli: u32,
    free_mib: u32,
}

struct Harness {
    nodes: BTreeMap<NodeId, Member>,
    log: Vec<Option<Vec<u8>>>,
    leader: NodeId,
    term: u64,
    now: u64,
    inbox: VecDeque<(NodeId, NodeId, Vec<u8>)>,
    events: Vec<(NodeId, Event)>,
    /// Refuse ReadIndex rounds (a leader that cannot reach a majority).
    reads_fail: bool,
    /// The next spawn fails (out of memory or tasks); records where.
    fail_next_spawn: bool,
    failed_spawn_on: Option<NodeId>,
    /// Cells started from now on listen on this port.
    listen_on: Option<u16>,
    /// Running cells' uptime grows with `run` (off: every cell stays at 0).
    age_cells: bool,
    /// Every `Output::Quiesce`, by node.
    quiesced: Vec<(NodeId, CellId)>,
}

fn config() -> Config {
    let mut config = Config::default();
    config.placement.free_mib_min = 4;
    config
}

impl Harness {
    fn new() -> Self {
        let members = vec![
            (W1, NodeRole::Worker),
            (W2, NodeRole::Worker),
            (WIT, NodeRole::Witness),
        ];
        let nodes = members
            .iter()
            .map(|&(id, _)| {
                let cfg = NodeConfig {
                    id,
                    members: members.clone(),
                    config: config(),
                    boot_seed: id << 32,
                };
                let member = Member {
                    ctl: ControlNode::new(cfg, PayloadCatalog::new(&["hello", "crasher"])),
                    cells: Vec::new(),
                    next_cell: 1,
                    connected: true,
                    applied: 0,
                    load_milli: 100,
                    free_mib: 48,
                };
                (id, member)
            })
            .collect();
        let mut h = Self {
            nodes,
            log: Vec::new(),
            leader: W1,
            term: 1,
            now: 1_000,
            inbox: VecDeque::new(),
            events: Vec::new(),
            reads_fail: false,
            fail_next_spawn: false,
            failed_spawn_on: None,
            listen_on: None,
            age_cells: false,
            quiesced: Vec::new(),
        };
        // The new leader's no-op; its first report reaches the followers (they act only
        // once they know they caught up with it).
        h.log.push(None);
        h.catch_up();
        h.deliver();
        h
    }

    fn members_view(&self, id: NodeId) -> BTreeMap<NodeId, MemberState> {
        let me = self.nodes[&id].connected;
        self.nodes
            .iter()
            .filter(|(&other, _)| other != id)
            .map(|(&other, m)| {
                let seen = me && m.connected;
                (
                    other,
                    if seen {
                        MemberState::Alive
                    } else {
                        MemberState::Dead
                    },
                )
            })
            .collect()
    }

    fn raft(&self, id: NodeId) -> RaftView {
        let m = &self.nodes[&id];
        let leader = m.connected.then_some(self.leader);
        let role = match leader {
            Some(l) if l == id => RaftRole::Leader,
            Some(_) => RaftRole::Follower,
            None => RaftRole::Candidate,
        };
        RaftView {
            term: self.term,
            leader,
            role,
            commit: if m.connected {
                self.log.len() as u64
            } else {
                m.applied
            },
            applied: m.applied,
            failed: false,
        }
    }

    /// Runs `f` on node `id` with a fresh observation, then carries out every output.
    fn with(&mut self, id: NodeId, f: impl FnOnce(&mut ControlNode, &Observed)) {
        let members = self.members_view(id);
        let raft = self.raft(id);
        let m = self.nodes.get_mut(&id).unwrap();
        let cells = m.cells.clone();
        let obs = Observed {
            now_ms: self.now,
            raft,
            members: &members,
            cells: Some(&cells),
            load_milli: m.load_milli,
            free_mib: m.free_mib,
        };
        f(&mut m.ctl, &obs);
        self.run_outputs(id);
    }

    fn run_outputs(&mut self, id: NodeId) {
        loop {
            let outputs = self.nodes.get_mut(&id).unwrap().ctl.drain();
            if outputs.is_empty() {
                return;
            }
            for output in outputs {
                self.execute(id, output);
            }
        }
    }

    fn execute(&mut self, id: NodeId, output: Output) {
        match output {
            Output::Propose { token, bytes } => {
                let connected = self.nodes[&id].connected;
                if id == self.leader && connected {
                    self.log.push(Some(bytes));
                    let index = self.log.len() as u64;
                    self.with(id, |c, o| c.on_proposed(token, Ok(index), o));
                    self.catch_up();
                } else {
                    let leader = Some(self.leader);
                    self.with(id, |c, o| {
                        c.on_proposed(token, Err(Refusal::NotLeader { leader }), o)
                    });
                }
            }
            Output::ReadIndex { ctx } => {
                let ok = id == self.leader && self.nodes[&id].connected && !self.reads_fail;
                self.with(id, |c, o| c.on_read(ctx, ok, o));
            }
            Output::Send { to, bytes } => {
                if self.nodes[&id].connected && self.nodes[&to].connected {
                    self.inbox.push_back((id, to, bytes));
                }
            }
            Output::Spawn(spawn) if self.fail_next_spawn => {
                self.fail_next_spawn = false;
                self.failed_spawn_on = Some(id);
                self.nodes
                    .get_mut(&id)
                    .unwrap()
                    .ctl
                    .on_spawned(&spawn.name, None);
            }
            Output::Spawn(spawn) => {
                let m = self.nodes.get_mut(&id).unwrap();
                let cell = m.next_cell;
                m.next_cell += 1;
                m.cells.push(LocalCellRow {
                    id: cell,
                    state: CellState::Running,
                    restarts: 0,
                    uptime_ms: 0,
                    cpu_milli: 0,
                    listening: ListenPorts::new(self.listen_on),
                });
                m.ctl.on_spawned(&spawn.name, Some(cell));
            }
            Output::Quiesce { cell, .. } => self.quiesced.push((id, cell)),
            Output::Stop { cell, .. } => {
                let m = self.nodes.get_mut(&id).unwrap();
                if let Some(row) = m.cells.iter_mut().find(|r| r.id == cell) {
                    row.state = CellState::Exited;
                }
            }
            Output::Event(e) => self.events.push((id, e)),
        }
    }

    /// Every connected node applies the log entries it has not applied yet.
    fn catch_up(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            while self.nodes[&id].connected && self.nodes[&id].applied < self.log.len() as u64 {
                // The kernel's order: the driver's applied counter moves after the call.
                let index = self.nodes[&id].applied + 1;
                let entry = self.log[index as usize - 1].clone();
                self.with(id, |c, o| c.on_committed(index, entry.as_deref(), o));
                self.nodes.get_mut(&id).unwrap().applied = index;
            }
        }
    }

    fn deliver(&mut self) {
        while let Some((from, to, bytes)) = self.inbox.pop_front() {
            self.with(to, |c, o| c.on_message(from, &bytes, o));
        }
    }

    /// Advances time by `ms` in 10 ms ticks.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.now += 10;
            if self.age_cells {
                for m in self.nodes.values_mut() {
                    for row in m.cells.iter_mut().filter(|r| r.state == CellState::Running) {
                        row.uptime_ms += 10;
                    }
                }
            }
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                self.with(id, |c, o| c.tick(o));
            }
            self.deliver();
            self.catch_up();
        }
    }

    fn submit(&mut self, id: NodeId, command: Command) -> Result<u64, WriteError> {
        let mut submitted = None;
        self.with(id, |c, o| submitted = Some(c.submit(command, o)));
        submitted.unwrap()
    }

    /// Submits and runs until the write answers (at most 3 s).
    fn write(&mut self, id: NodeId, command: Command) -> Result<u64, WriteError> {
        let req = self.submit(id, command)?;
        for _ in 0..300 {
            if let Some(result) = self.nodes.get_mut(&id).unwrap().ctl.take_result(req) {
                return result;
            }
            self.run(10);
        }
        panic!("write {req} never answered");
    }

    fn running(&self, service: &str) -> Vec<(NodeId, CellName)> {
        let mut out = Vec::new();
        for (&id, m) in &self.nodes {
            for row in m.cells.iter().filter(|r| r.state == CellState::Running) {
                if let Some(name) = m.ctl.name_of(row.id) {
                    if name.service == service {
                        out.push((id, name.clone()));
                    }
                }
            }
        }
        out
    }

    fn exit_cell(&mut self, id: NodeId, name: &CellName) {
        let m = self.nodes.get_mut(&id).unwrap();
        let cell = m.ctl.cell_named(name).unwrap();
        m.cells.iter_mut().find(|r| r.id == cell).unwrap().state = CellState::Exited;
    }

    fn set_connected(&mut self, id: NodeId, connected: bool) {
        self.nodes.get_mut(&id).unwrap().connected = connected;
    }
}

fn web(replicas: u16) -> Command {
    Command::ApplyService(ServiceSpec::new("web", "hello", replicas))
}

fn fenced(name: &str) -> Command {
    let mut spec = ServiceSpec::new(name, "hello", 1);
    spec.fenced = true;
    Command::ApplyService(spec)
}

#[test]
fn writes_on_the_leader_answer_with_the_committed_index() {
    let mut h = Harness::new();
    let index = h.write(W1, web(2)).unwrap();
    assert_eq!(index, 2, "after the leader's no-op");
    assert_eq!(h.log[1].as_deref(), Some(&web(2).encode().unwrap()[..]));
    h.run(500);
    assert_eq!(h.running("web").len(), 2);
}

#[test]
fn writes_on_a_follower_wait_for_the_leader_s_answer() {
    let mut h = Harness::new();
    let index = h.write(W2, web(1)).unwrap();
    assert!(matches!(&h.log[index as usize - 1], Some(b) if *b == web(1).encode().unwrap()));
    // Validation errors from the follower come back typed, with nothing committed.
    let before = h.log.len();
    let err = h
        .write(
            W2,
            Command::Scale {
                name: "nope".into(),
                replicas: 1,
            },
        )
        .unwrap_err();
    assert_eq!(
        err,
        WriteError::Invalid(Invalid::Apply(ApplyError::UnknownService))
    );
    assert_eq!(h.log.len(), before);
    // A committed-but-rejected write says so (the state changed between check and apply):
    // the leader accepts a scale, and a delete commits before it.
    let members = h.members_view(W1);
    let raft = h.raft(W1);
    let obs = Observed {
        now_ms: h.now,
        raft,
        members: &members,
        cells: None,
        load_milli: 0,
        free_mib: 0,
    };
    let scale = Command::Scale {
        name: "web".into(),
        replicas: 3,
    };
    let req = h
        .nodes
        .get_mut(&W1)
        .unwrap()
        .ctl
        .submit(scale, &obs)
        .unwrap();
    let held = h.nodes.get_mut(&W1).unwrap().ctl.drain();
    let deleted = h.write(W1, Command::Delete { name: "web".into() }).unwrap();
    for out in held {
        h.execute(W1, out);
    }
    let result = h.nodes.get_mut(&W1).unwrap().ctl.take_result(req).unwrap();
    assert_eq!(
        result,
        Err(WriteError::Rejected {
            index: deleted + 1,
            error: ApplyError::UnknownService
        })
    );
}

#[test]
fn the_leader_validates_forwarded_writes_like_its_own() {
    let mut h = Harness::new();
    h.write(W1, web(1)).unwrap();
    let before = h.log.len();
    // A forged scheduler command, forwarded by a member: refused, nothing proposed.
    let forged = Command::Assign {
        service: "web".into(),
        slot: 0,
        node: W2,
        epoch: u64::MAX,
        reason: Reason::Place,
    };
    let msg = ControlMsg::Forward {
        req: 77,
        command: forged.encode().unwrap(),
    };
    h.with(W1, |c, o| c.on_message(W2, &msg.encode().unwrap(), o));
    assert_eq!(h.log.len(), before);
    assert_eq!(h.nodes[&W1].ctl.stats().forwards_refused, 1);
    let reply = h.inbox.pop_back().unwrap();
    assert_eq!((reply.0, reply.1), (W1, W2));
    assert_eq!(
        ControlMsg::decode(&reply.2),
        Ok(ControlMsg::Reply {
            req: 77,
            result: Err(WriteError::Invalid(Invalid::NotOperator))
        })
    );
    // Garbage, and a forward from a non-member, are dropped and counted.
    let garbage = ControlMsg::Forward {
        req: 78,
        command: vec![2, 255, 255],
    };
    h.with(W1, |c, o| c.on_message(W2, &garbage.encode().unwrap(), o));
    h.with(W1, |c, o| c.on_message(99, &msg.encode().unwrap(), o));
    assert_eq!(h.log.len(), before);
    assert_eq!(h.nodes[&W1].ctl.stats().messages_dropped, 1);
}

#[test]
fn a_duplicated_forward_is_proposed_once() {
    let mut h = Harness::new();
    let msg = ControlMsg::Forward {
        req: 5,
        command: web(1).encode().unwrap(),
    };
    let bytes = msg.encode().unwrap();
    h.with(W1, |c, o| c.on_message(W2, &bytes, o));
    let after_first = h.log.len();
    h.with(W1, |c, o| c.on_message(W2, &bytes, o));
    assert_eq!(h.log.len(), after_first);
    // Both copies are answered with the same index.
    let replies: Vec<_> = h
        .inbox
        .iter()
        .filter_map(|(_, _, b)| match ControlMsg::decode(b) {
            Ok(ControlMsg::Reply { req: 5, result }) => Some(result),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies,
        vec![Ok(after_first as u64), Ok(after_first as u64)]
    );
}

#[test]
fn a_minority_refuses_writes_and_a_lost_leader_times_out() {
    let mut h = Harness::new();
    h.set_connected(W2, false);
    assert_eq!(h.submit(W2, web(1)), Err(WriteError::NoQuorum));
    h.set_connected(W2, true);
    // The forward leaves, then the leader becomes unreachable: no answer in time.
    let req = h.submit(W2, web(1)).unwrap();
    h.inbox.clear();
    h.run(2_100);
    let result = h.nodes.get_mut(&W2).unwrap().ctl.take_result(req).unwrap();
    assert_eq!(result, Err(WriteError::TimedOut { after_ms: 2_000 }));
    assert_eq!(
        result.unwrap_err().to_string(),
        "timed out after 2 s, outcome unknown"
    );
}

#[test]
fn an_overwritten_proposal_is_reported_lost() {
    let mut h = Harness::new();
    let req = h.submit(W1, web(1)).unwrap();
    // Simulate a change of leader that overwrote index 2 before it committed on this node:
    // the node learns index 2 holds another entry.
    let mut node = h.nodes.remove(&W1).unwrap();
    let members = BTreeMap::new();
    let obs = Observed {
        now_ms: h.now,
        raft: RaftView {
            applied: 3,
            commit: 3,
            ..h.raft(W2)
        },
        members: &members,
        cells: None,
        load_milli: 0,
        free_mib: 0,
    };
    let _ = node.ctl.drain();
    node.ctl.on_proposed(Token::Local(req), Ok(3), &obs);
    node.ctl.on_committed(3, None, &obs);
    assert_eq!(
        node.ctl.take_result(req),
        Some(Err(WriteError::Lost { index: 3 }))
    );
}

#[test]
fn writes_in_flight_are_bounded() {
    let mut h = Harness::new();
    h.set_connected(W1, true);
    for i in 0..LOCAL_REQUESTS_MAX {
        let cmd = Command::ApplyService(ServiceSpec::new(&format!("s{i}"), "hello", 0));
        h.submit(W2, cmd).unwrap();
        h.inbox.clear();
    }
    assert_eq!(h.submit(W2, web(1)), Err(WriteError::Busy));
}

#[test]
fn an_exited_cell_is_refilled_under_a_new_epoch() {
    let mut h = Harness::new();
    // Let every node report first, so placement spreads the replicas.
    h.run(300);
    h.write(W1, web(2)).unwrap();
    h.run(600);
    let before = h.running("web");
    assert_eq!(before.len(), 2);
    assert_ne!(before[0].0, before[1].0, "spread: {before:?}");
    let (node, name) = before[0].clone();
    h.exit_cell(node, &name);
    h.run(1_000);
    let after = h.running("web");
    assert_eq!(after.len(), 2, "{after:?}");
    let refilled = after.iter().find(|(_, n)| n.slot == name.slot).unwrap();
    assert!(refilled.1.epoch > name.epoch);
    assert_eq!(refilled.0, node, "an exit is refilled where it was");
    // The refill was committed with its reason.
    let refills = h
        .events
        .iter()
        .filter(|(id, e)| {
            *id == W1
                && matches!(
                    e,
                    Event::Committed {
                        command: Command::Assign {
                            reason: Reason::Exited,
                            ..
                        },
                        ..
                    }
                )
        })
        .count();
    assert_eq!(refills, 1);
}

#[test]
fn a_failed_spawn_is_reported_and_moved_elsewhere() {
    let mut h = Harness::new();
    h.fail_next_spawn = true;
    h.write(W1, web(1)).unwrap();
    h.run(500);
    let failed_on = h.failed_spawn_on.expect("a spawn was attempted");
    assert_eq!(h.nodes[&failed_on].ctl.stats().spawn_failures, 1);
    // Reported as a crash loop: the leader waits its backoff, then moves it elsewhere.
    h.run(6_000);
    let running = h.running("web");
    assert_eq!(running.len(), 1);
    assert_ne!(
        running[0].0, failed_on,
        "moved off the node that could not start it"
    );
}

#[test]
fn status_roles_come_from_configuration_and_own_figures_are_live() {
    let mut h = Harness::new();
    h.run(300);
    // W2 has heard no report from anyone (a node that just rejoined): roles are still right.
    let mut fresh = Harness::new();
    fresh.nodes.get_mut(&W2).unwrap().free_mib = 37;
    let members = fresh.members_view(W2);
    let obs = Observed {
        now_ms: fresh.now,
        raft: fresh.raft(W2),
        members: &members,
        cells: Some(&[]),
        load_milli: 250,
        free_mib: 37,
    };
    let name = |id: NodeId| match id {
        W1 => "worker-1".to_string(),
        W2 => "worker-2".to_string(),
        _ => "witness".to_string(),
    };
    let status = fresh.nodes[&W2].ctl.status(&obs, &name);
    let roles: Vec<_> = status
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.role))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("worker-1", NodeRole::Worker),
            ("worker-2", NodeRole::Worker),
            ("witness", NodeRole::Witness)
        ]
    );
    let me = &status.nodes[1];
    assert_eq!((me.free_mib, me.load_milli), (37, 250));
    assert_eq!(status.nodes[0].raft, RaftRole::Leader);
    assert_eq!(me.raft, RaftRole::Follower);
    // Every node shows the same roles for every node.
    for id in [W1, W2, WIT] {
        let members = h.members_view(id);
        let obs = Observed {
            now_ms: h.now,
            raft: h.raft(id),
            members: &members,
            cells: None,
            load_milli: 0,
            free_mib: 0,
        };
        let s = h.nodes[&id].ctl.status(&obs, &name);
        let got: Vec<_> = s
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.role, n.raft))
            .collect();
        let want = vec![
            ("worker-1".to_string(), NodeRole::Worker, RaftRole::Leader),
            ("worker-2".to_string(), NodeRole::Worker, RaftRole::Follower),
            ("witness".to_string(), NodeRole::Witness, RaftRole::Follower),
        ];
        assert_eq!(got, want, "as seen by node {id}");
    }
}

#[test]
fn cells_have_cluster_wide_names() {
    let mut h = Harness::new();
    h.write(W1, web(2)).unwrap();
    h.run(600);
    let running = h.running("web");
    for (node, name) in &running {
        let cell = h.nodes[node].ctl.cell_named(name).unwrap();
        assert_eq!(h.nodes[node].ctl.name_of(cell), Some(name));
        assert_eq!(CellName::parse(&name.to_string()).as_ref(), Ok(name));
    }
    // Both nodes' local ids may be 1; the names differ.
    assert_ne!(running[0].1, running[1].1);
}

#[test]
fn a_fenced_cell_starts_only_under_a_lease_and_stops_when_it_runs_out() {
    let mut h = Harness::new();
    h.write(W1, fenced("lock")).unwrap();
    h.run(1_000);
    let running = h.running("lock");
    assert_eq!(running.len(), 1);
    let (holder, name) = running[0].clone();
    assert!(h.nodes[&holder].ctl.lease_left_ms(h.now) > 1_000);
    // The holder is cut off: no quorum, no renewals; it stops the cell when its lease runs
    // out, although it cannot stop anything else.
    h.set_connected(holder, false);
    if holder == W1 {
        h.leader = W2;
        h.term += 1;
    }
    let cut_at = h.now;
    let mut stopped_at = None;
    let mut replaced_at = None;
    for _ in 0..600 {
        h.run(10);
        let alive_old = h.nodes[&holder].cells.iter().any(|r| {
            r.state == CellState::Running && h.nodes[&holder].ctl.name_of(r.id) == Some(&name)
        });
        if !alive_old && stopped_at.is_none() {
            stopped_at = Some(h.now);
        }
        let others = h
            .running("lock")
            .into_iter()
            .filter(|(n, _)| *n != holder)
            .count();
        if others > 0 && replaced_at.is_none() {
            replaced_at = Some(h.now);
        }
        assert!(
            !(alive_old && others > 0),
            "two cells of a fenced slot at {}",
            h.now
        );
    }
    let stopped_at = stopped_at.expect("the lease stopped the cut-off cell");
    let replaced_at = replaced_at.expect("the majority replaced it");
    assert!(stopped_at - cut_at <= h.nodes[&holder].ctl.config().lease.lease_ms + 20);
    assert!(
        replaced_at > stopped_at,
        "replacement {replaced_at} before stop {stopped_at}"
    );
    assert_eq!(h.nodes[&holder].ctl.stats().lease_expired_stops, 1);
}

#[test]
fn no_lease_means_no_fenced_start() {
    let mut h = Harness::new();
    h.reads_fail = true;
    h.write(W1, fenced("lock")).unwrap();
    h.run(1_000);
    assert!(h.running("lock").is_empty());
    let withheld: u64 = h
        .nodes
        .values()
        .map(|m| m.ctl.stats().lease_withheld_spawns)
        .sum();
    assert!(withheld > 0);
    h.reads_fail = false;
    h.run(1_000);
    assert_eq!(h.running("lock").len(), 1);
}

#[test]
fn a_minority_node_neither_starts_nor_stops_plain_cells() {
    let mut h = Harness::new();
    h.write(W1, web(2)).unwrap();
    h.run(600);
    h.set_connected(W2, false);
    let w2_cells = h.nodes[&W2].cells.clone();
    h.run(3_000);
    assert_eq!(
        h.nodes[&W2].cells, w2_cells,
        "the minority changed its cells"
    );
    assert!(
        h.nodes[&W2].ctl.stats().withheld_spawns + h.nodes[&W2].ctl.stats().withheld_stops == 0
            || h.nodes[&W2].cells == w2_cells
    );
    // The majority keeps two running (one moved to W1).
    let majority: Vec<_> = h
        .running("web")
        .into_iter()
        .filter(|(n, _)| *n == W1)
        .collect();
    assert_eq!(majority.len(), 2);
    // W2 rejoins and catches up: its stale cell is fenced, exactly two run.
    h.set_connected(W2, true);
    h.run(1_000);
    assert_eq!(h.running("web").len(), 2);
}

#[test]
fn a_follower_behind_the_leader_s_report_has_no_quorum() {
    let mut h = Harness::new();
    h.write(W1, web(1)).unwrap();
    h.run(300);
    // W2's Raft says it applied everything it knows (a node back from a crash with an old
    // log: its commit index is what the leader matched), but the leader reported more.
    let members = h.members_view(W2);
    let mut raft = h.raft(W2);
    assert!(h.nodes[&W2].ctl.has_quorum(&Observed {
        now_ms: h.now,
        raft,
        members: &members,
        cells: None,
        load_milli: 0,
        free_mib: 0,
    }));
    let mut lagging = ControlNode::new(
        NodeConfig {
            id: W2,
            members: vec![
                (W1, NodeRole::Worker),
                (W2, NodeRole::Worker),
                (WIT, NodeRole::Witness),
            ],
            config: config(),
            boot_seed: 9,
        },
        PayloadCatalog::new(&["hello"]),
    );
    raft.commit = 1;
    raft.applied = 1;
    let obs = Observed {
        now_ms: h.now,
        raft,
        members: &members,
        cells: Some(&[]),
        load_milli: 0,
        free_mib: 0,
    };
    lagging.on_committed(1, None, &obs);
    assert!(!lagging.has_quorum(&obs), "no report from the leader yet");
    // The leader's report says it applied index 2 (the service): not caught up.
    let report = h.nodes.get_mut(&W1).unwrap().ctl.reports[&W1]
        .0
        .encode()
        .unwrap();
    let msg = ControlMsg::Report(report).encode().unwrap();
    lagging.on_message(W1, &msg, &obs);
    assert!(!lagging.has_quorum(&obs), "behind the leader's report");
    assert!(lagging
        .drain()
        .iter()
        .all(|o| !matches!(o, Output::Spawn(_))));
    // Once it applied that far, it has quorum.
    let last = h.log.len() as u64;
    let caught_up = Observed {
        raft: RaftView {
            commit: last,
            applied: last,
            ..raft
        },
        ..obs
    };
    for index in 2..=last {
        let entry = h.log[index as usize - 1].clone();
        lagging.on_committed(index, entry.as_deref(), &caught_up);
    }
    assert!(lagging.has_quorum(&caught_up));
}

/// The addresses `id` answers for now.
fn answering(h: &mut Harness, id: NodeId) -> Vec<crate::frontdoor::Answer> {
    let mut out = Vec::new();
    h.with(id, |c, o| out = c.answering(o));
    out
}

#[test]
fn an_owner_rides_out_a_short_loss_of_quorum_but_not_a_long_one() {
    let mut h = Harness::new();
    h.write(W1, web(2)).unwrap();
    h.write(
        W1,
        Command::Expose {
            service: "web".into(),
            port: 80,
        },
    )
    .unwrap();
    h.run(600);
    // The witness owns the address (the planner's first choice) and alone answers.
    assert_eq!(answering(&mut h, WIT).len(), 1);
    assert!(answering(&mut h, W1).is_empty() && answering(&mut h, W2).is_empty());
    // The leader vanishes: the witness has no quorum at once (its leader is down), but keeps
    // answering through the grace an election needs...
    h.set_connected(W1, false);
    h.run(crate::frontdoor::ANSWER_GRACE_MS - 100);
    assert_eq!(answering(&mut h, WIT).len(), 1, "dropped within the grace");
    // ...and not beyond it.
    h.run(200);
    assert!(answering(&mut h, WIT).is_empty(), "answered without quorum");
    // Back in contact and caught up: it answers again (the address never moved).
    h.set_connected(W1, true);
    h.run(500);
    assert_eq!(answering(&mut h, WIT).len(), 1);
}

#[test]
fn a_resumed_owner_has_no_grace_left() {
    let mut h = Harness::new();
    h.write(W1, web(1)).unwrap();
    h.write(
        W1,
        Command::Expose {
            service: "web".into(),
            port: 80,
        },
    )
    .unwrap();
    h.run(600);
    // A paused owner: no tick for 5 s, then it looks at its inputs with a jumped clock and
    // a stale report from the leader.
    h.set_connected(WIT, false);
    h.now += 5_000;
    assert!(
        answering(&mut h, WIT).is_empty(),
        "a resumed owner answered"
    );
}

/// A drain of a service with a port behind the front door: the replacement is promoted once it
/// runs and listens; the old cell is then quiesced (listeners closed, reported `stopping`),
/// keeps running through `stop_grace_ms` for the connections it holds, and only then stops.
/// A service without a port loses its cell at once (nothing to drain).
#[test]
fn a_moved_cell_of_a_service_with_a_port_is_quiesced_then_stopped_after_the_grace() {
    let mut h = Harness::new();
    h.listen_on = Some(80);
    h.age_cells = true;
    h.write(W1, web(2)).unwrap();
    h.write(
        W1,
        Command::Expose {
            service: "web".into(),
            port: 80,
        },
    )
    .unwrap();
    h.write(
        W1,
        Command::ApplyService(ServiceSpec::new("batch", "hello", 2)),
    )
    .unwrap();
    h.run(500);
    assert_eq!(h.running("web").len(), 2);
    let on_w2: Vec<CellName> = h
        .running("web")
        .into_iter()
        .filter(|(n, _)| *n == W2)
        .map(|(_, c)| c)
        .collect();
    assert_eq!(on_w2.len(), 1, "{:?}", h.running("web"));
    let old = h.nodes[&W2].ctl.cell_named(&on_w2[0]).unwrap();
    h.write(
        W1,
        Command::Maintain {
            node: W2,
            mode: crate::operate::Maintenance::Draining,
        },
    )
    .unwrap();
    let grace = config().operate.stop_grace_ms;
    let mut quiesced_at = None;
    for _ in 0..1_000 {
        h.run(10);
        // Never fewer than two web cells running (the retiring one counts: it still serves
        // the connections it holds).
        assert!(h.running("web").len() >= 2, "{:?}", h.running("web"));
        let old_row = h.nodes[&W2].cells.iter().find(|r| r.id == old).unwrap();
        let quiesced = h.quiesced.contains(&(W2, old));
        match (quiesced_at, quiesced) {
            (None, true) => {
                assert_eq!(
                    old_row.state,
                    CellState::Running,
                    "stopped before the grace"
                );
                // Quiesced only after the slot moved to the replacement, which listens.
                let slot = on_w2[0].slot;
                let a = h.nodes[&W2].ctl.desired().assignment("web", slot).unwrap();
                assert_eq!(a.node, W1);
                quiesced_at = Some(h.now);
            }
            (Some(at), _) if h.now - at == 600 => {
                assert_eq!(
                    old_row.state,
                    CellState::Running,
                    "stopped before the grace"
                );
                // W2's report (as the leader holds it) says the cell is on its way out.
                let (report, _) = &h.nodes[&W1].ctl.reports[&W2];
                let cell = report
                    .cells
                    .iter()
                    .find(|c| c.service == "web" && c.epoch == on_w2[0].epoch)
                    .unwrap();
                assert_eq!(cell.state, CellState::Stopping);
                assert!(
                    cell.listening,
                    "quiesce is the kernel's: the row still lists the port"
                );
            }
            (Some(at), _) if old_row.state != CellState::Running => {
                assert!(
                    h.now - at >= grace,
                    "stopped {} ms after quiesce",
                    h.now - at
                );
                break;
            }
            (Some(at), _) => assert!(h.now - at <= grace + 200, "never stopped"),
            (None, false) => assert_eq!(old_row.state, CellState::Running),
        }
    }
    let at = quiesced_at.expect("the old cell was never quiesced");
    assert!(h.now - at >= grace, "the old cell was never stopped");
    // `batch` has no port: its cell on W2 was stopped at once, never quiesced.
    assert!(h
        .quiesced
        .iter()
        .all(|&(node, cell)| node == W2 && cell == old));
    assert!(h.running("batch").iter().all(|(n, _)| *n == W1));
}

#[test]
fn a_committed_assignment_starts_its_cell_at_once() {
    // Not one reconcile period later: the entry being applied counts as applied, although
    // the driver's counter moves only after the call (the harness applies in that order).
    let mut h = Harness::new();
    h.run(300);
    h.write(W1, web(1)).unwrap();
    let assigned = |h: &Harness| {
        h.events.iter().any(|(_, e)| {
            matches!(
                e,
                Event::Committed {
                    command: Command::Assign { .. },
                    result: Ok(_),
                    ..
                }
            )
        })
    };
    for _ in 0..100 {
        if assigned(&h) {
            break;
        }
        h.run(10);
    }
    assert!(assigned(&h), "no assignment committed");
    assert_eq!(
        h.running("web").len(),
        1,
        "the cell waited for a later reconcile"
    );
}
