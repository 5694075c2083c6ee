//! `raft` and `xylem`: the consensus group and the control plane.

use ::cell::spec::RestartPolicy;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use xylem::command::Command;
use xylem::service::ServiceSpec;
use xylem::status::{self, MemberState, NodeRow, QuorumView, RaftRole, StatusInput};
use xylem::NodeRole;

use super::{Command as ShellCommand, CommandError};
use crate::cluster::control::{self, SubmitError, Submitted};
use crate::cluster::{consensus, membership, peers};
use crate::{node, sched, time};

pub const COMMANDS: &[ShellCommand] = &[
    ShellCommand {
        name: "raft",
        usage: "raft | raft put <key> <value> | raft get <key> | raft bench <count>",
        help: "the Raft group: role, term, leader, indexes; a test key/value map",
        run: raft,
    },
    ShellCommand {
        name: "xylem",
        usage: "xylem status [--json] | apply <svc> --payload <p> [--args a b ...] [--replicas N] [--restart R] [--port P] | expose <svc> <port> | scale <svc> <N> | delete <svc> | events [N] [--json] | stats",
        help: "the control plane: services, replicas, failover",
        run: xylem,
    },
];

fn failed(text: impl Into<String>) -> CommandError {
    CommandError::Failed(text.into())
}

fn raft(args: &[&str]) -> Result<(), CommandError> {
    match args {
        [] => raft_status(),
        ["put", key, value] => raft_put(key, value),
        ["get", key] => raft_get(key),
        ["bench", count] => raft_bench(
            count
                .parse()
                .map_err(|_| failed(format!("'{count}' is not a count")))?,
        ),
        _ => Err(CommandError::Usage),
    }
}

fn raft_status() -> Result<(), CommandError> {
    let s = consensus::status().ok_or_else(|| failed("consensus is not running"))?;
    let leader = s.leader.map_or(String::from("none"), |l| {
        format!("{} (id {l})", peers::name_of(l))
    });
    crate::println!(
        "role {}  term {}  leader {}",
        consensus::role_name(s.role),
        s.term,
        leader
    );
    crate::println!(
        "commit {}  applied {}  last {}  store {}",
        s.commit,
        s.applied,
        s.last_index,
        s.device
    );
    let (requests, busy_us) = crate::drivers::virtio::blk::stats();
    if let Some(mean_us) = busy_us.checked_div(requests) {
        crate::println!("disk: {requests} requests, {mean_us} us mean wait");
    }
    if let Some(why) = s.failed {
        crate::println!("FAILED: {why}");
    }
    crate::println!(
        "voters: {}",
        control::all_nodes()
            .iter()
            .map(|&id| format!(
                "{} ({})",
                peers::name_of(id),
                membership::state_of(id).map_or("?", |s| s.as_str())
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn not_leader(leader: Option<u64>) -> CommandError {
    match leader {
        Some(l) => failed(format!(
            "this node is not the Raft leader; the leader is {} (id {l}): run it there",
            peers::name_of(l)
        )),
        None => failed("no Raft leader right now (NO QUORUM): nothing can be committed"),
    }
}

fn raft_put(key: &str, value: &str) -> Result<(), CommandError> {
    let payload = postcard::to_allocvec(&(key.to_string(), value.to_string()))
        .map_err(|e| failed(format!("{e}")))?;
    match consensus::propose(consensus::TAG_KV, &payload) {
        Ok(index) => {
            let deadline = time::now_us() + 2_000_000;
            while consensus::status().is_some_and(|s| s.applied < index) {
                if time::now_us() > deadline {
                    return Err(failed(format!(
                        "proposed at index {index} but not committed within 2 s (quorum lost?)"
                    )));
                }
                sched::sleep_ms(5);
            }
            crate::println!("ok: {key} committed at index {index}");
            Ok(())
        }
        Err(consensus::ConsensusError::Refused(membership_raft_err)) => match membership_raft_err {
            ::consensus::ProposeError::NotLeader { leader } => Err(not_leader(leader)),
            other => Err(failed(format!("refused: {other:?}"))),
        },
        Err(other) => Err(failed(format!("{other:?}"))),
    }
}

fn raft_get(key: &str) -> Result<(), CommandError> {
    let ctx = time::now_us();
    let linearizable = consensus::read_index(ctx).is_ok();
    if linearizable {
        let deadline = time::now_us() + 2_000_000;
        while !consensus::read_ready(ctx) {
            if time::now_us() > deadline {
                consensus::read_done(ctx);
                return Err(failed("read not confirmed by a quorum within 2 s"));
            }
            sched::sleep_ms(2);
        }
        consensus::read_done(ctx);
    }
    let value = consensus::with_applied(|a| a.kv.get(key).cloned())
        .ok_or_else(|| failed("consensus is not running"))?;
    let note = if linearizable {
        ""
    } else {
        "  (local read: not the leader, may be stale)"
    };
    match value {
        Some(v) => crate::println!("{key} = {v}{note}"),
        None => crate::println!("{key} is not set{note}"),
    }
    Ok(())
}

/// Most proposals one `raft bench` makes (bounds its sample buffer).
const BENCH_MAX: usize = 10_000;

/// `raft bench <count>` on the leader: proposes `count` entries one at a time, each timed
/// from propose to the moment the leader's commit index covered it (recorded by consensus);
/// prints the median and the tail (`bench` key). Each sample waits for the previous commit.
fn raft_bench(count: usize) -> Result<(), CommandError> {
    if count == 0 || count > BENCH_MAX {
        return Err(failed(format!("count must be 1..={BENCH_MAX}")));
    }
    let mut samples_us: Vec<u64> = Vec::with_capacity(count);
    for i in 0..count {
        let payload = postcard::to_allocvec(&("bench".to_string(), i.to_string()))
            .map_err(|e| failed(format!("{e}")))?;
        let start_us = time::now_us();
        let index = match consensus::propose(consensus::TAG_KV, &payload) {
            Ok(index) => index,
            Err(consensus::ConsensusError::Refused(::consensus::ProposeError::NotLeader {
                leader,
            })) => return Err(not_leader(leader)),
            Err(other) => return Err(failed(format!("proposal {i} refused: {other:?}"))),
        };
        let deadline_us = start_us + 2_000_000;
        // The shell wakes on 10 ms ticks, so the commit time comes from consensus itself.
        let committed_us = loop {
            match consensus::last_commit_advance() {
                Some((commit, at_us)) if commit >= index => break at_us,
                None => return Err(failed("consensus is not running")),
                Some(_) if time::now_us() > deadline_us => {
                    return Err(failed(format!(
                        "proposal {i} (index {index}) not committed within 2 s"
                    )));
                }
                Some(_) => sched::sleep_ms(1),
            }
        };
        samples_us.push(committed_us.saturating_sub(start_us));
    }
    samples_us.sort_unstable();
    let pick = |q: usize| samples_us[(samples_us.len() - 1) * q / 100];
    crate::println!(
        "raft bench: {count} commits  median_us={}  p90_us={}  p99_us={}  max_us={}",
        pick(50),
        pick(90),
        pick(99),
        pick(100)
    );
    Ok(())
}

fn xylem(args: &[&str]) -> Result<(), CommandError> {
    match args.split_first() {
        Some((&"status", [])) => {
            crate::print!("{}", render_status());
            Ok(())
        }
        Some((&"status", ["--json"])) => {
            crate::println!("{}", xylem::json::status(&status_input(), node::name()));
            Ok(())
        }
        Some((&"apply", rest)) => apply(rest),
        Some((&"scale", [name, n])) => {
            let replicas = n
                .parse::<u16>()
                .map_err(|_| failed(format!("'{n}' is not a replica count")))?;
            submit(Command::Scale {
                name: name.to_string(),
                replicas,
            })
        }
        Some((&"delete", [name])) => submit(Command::Delete {
            name: name.to_string(),
        }),
        Some((&"expose", [name, port])) => submit(Command::Expose {
            service: name.to_string(),
            port: parse_port(port)?,
        }),
        Some((&"stats", [])) => {
            let median =
                control::reconcile_us_median().map_or(String::from("-"), |us| format!("{us}"));
            crate::println!("reconcile_us_median {median}");
            Ok(())
        }
        Some((&"events", rest)) => events(rest),
        _ => Err(CommandError::Usage),
    }
}

fn apply(args: &[&str]) -> Result<(), CommandError> {
    let (&name, rest) = args.split_first().ok_or(CommandError::Usage)?;
    if name.starts_with("--") {
        return Err(CommandError::Usage);
    }
    let (mut payload, mut replicas, mut restart, mut call_args) =
        (None, 1u16, RestartPolicy::OnFailure, Vec::new());
    let mut port = None;
    let mut i = 0;
    while i < rest.len() {
        let value = |i: usize| {
            rest.get(i + 1)
                .copied()
                .ok_or_else(|| failed(format!("{} needs a value", rest[i])))
        };
        match rest[i] {
            "--payload" => payload = Some(value(i)?),
            "--port" => port = Some(parse_port(value(i)?)?),
            "--replicas" => {
                replicas = value(i)?
                    .parse()
                    .map_err(|_| failed(format!("'{}' is not a replica count", rest[i + 1])))?
            }
            "--restart" => {
                let v = value(i)?;
                restart = RestartPolicy::parse(v).ok_or_else(|| {
                    failed(format!(
                        "restart policy '{v}' is not always, on-failure or never"
                    ))
                })?;
            }
            "--args" => {
                while i + 1 < rest.len() && !rest[i + 1].starts_with("--") {
                    call_args.push(rest[i + 1].to_string());
                    i += 1;
                }
                i += 1;
                continue;
            }
            other => return Err(failed(format!("unknown option '{other}'"))),
        }
        i += 2;
    }
    let payload = payload.ok_or_else(|| failed("--payload is required"))?;
    let mut spec = ServiceSpec::new(name, payload, replicas);
    spec.args = call_args;
    spec.restart = restart;
    submit(Command::ApplyService(spec))?;
    let Some(port) = port else {
        return Ok(());
    };
    // The address is given once the service exists here (committed and applied).
    let deadline = crate::time::now_us() + EXPOSE_WAIT_US;
    while control::with_view(|d, _, _| d.service(name).is_none()).unwrap_or(true) {
        if crate::time::now_us() >= deadline {
            return Err(failed(format!(
                "the service was not committed within {} s; run 'xylem expose {name} {port}' later",
                EXPOSE_WAIT_US / 1_000_000
            )));
        }
        crate::sched::sleep_until_us(crate::time::now_us() + 20_000);
    }
    submit(Command::Expose {
        service: name.to_string(),
        port,
    })
}

/// How long `apply --port` waits for the service to commit before exposing it.
const EXPOSE_WAIT_US: u64 = 5_000_000;

fn parse_port(text: &str) -> Result<u16, CommandError> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| failed(format!("'{text}' is not a port (1-65535)")))
}

fn submit(command: Command) -> Result<(), CommandError> {
    match control::submit(command) {
        Ok(Submitted::Proposed(index)) => {
            crate::println!("accepted: proposed at log index {index}");
            Ok(())
        }
        Ok(Submitted::Forwarded(leader)) => {
            crate::println!(
                "accepted: forwarded to the leader {}",
                peers::name_of(leader)
            );
            Ok(())
        }
        Err(SubmitError::Invalid(why)) => {
            Err(failed(format!("rejected, nothing committed: {why}")))
        }
        Err(SubmitError::NoQuorum) => Err(failed(
            "NO QUORUM: no reachable Raft leader, nothing can be created or changed",
        )),
        Err(SubmitError::Refused(why)) => Err(failed(format!("refused: {why}"))),
    }
}

/// Events shown when no count is given.
const EVENTS_DEFAULT: usize = 20;

/// `xylem events [N] [--json]` (the flag may come first or last).
fn events(args: &[&str]) -> Result<(), CommandError> {
    let json = args.contains(&"--json");
    let counts: Vec<&&str> = args.iter().filter(|a| **a != "--json").collect();
    let n = match counts.as_slice() {
        [] => EVENTS_DEFAULT,
        [n] => n
            .parse()
            .map_err(|_| failed(format!("'{n}' is not a count")))?,
        _ => return Err(CommandError::Usage),
    };
    let history = control::history(n);
    if json {
        crate::println!("{}", xylem::json::events(node::name(), &history));
        return Ok(());
    }
    for (t_us, text) in history {
        crate::println!("{:>6}.{:06}  {text}", t_us / 1_000_000, t_us % 1_000_000);
    }
    Ok(())
}

fn member_state(id: u64) -> MemberState {
    use ::membership::swim::MemberState as Swim;
    match membership::state_of(id) {
        Some(Swim::Alive) => MemberState::Alive,
        Some(Swim::Suspect) => MemberState::Suspect,
        Some(Swim::Left) => MemberState::Left,
        Some(Swim::Down) | None => MemberState::Dead,
    }
}

/// Builds the `xylem status` screen from consensus, membership and the control plane.
pub fn render_status() -> String {
    let mut text = status::render(&status_input());
    text.push_str(&render_addresses());
    text
}

/// The services' stable addresses (docs/front-door.md): one line each, with the committed
/// owner and its epoch.
fn render_addresses() -> String {
    let rows = control::with_view(|desired, _, _| {
        desired
            .addresses()
            .iter()
            .map(|(service, a)| {
                let ip = a.ip();
                let owner = a.owner.map_or(String::from("-"), |o| {
                    format!("{} epoch {}", peers::name_of(o.node), o.epoch)
                });
                format!(
                    "  {service:<16} {}.{}.{}.{}:{:<5}  {service}.xylem  owner {owner}\n",
                    ip[0], ip[1], ip[2], ip[3], a.port
                )
            })
            .collect::<Vec<String>>()
    })
    .unwrap_or_default();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("ADDRESSES\n");
    for r in rows {
        out.push_str(&r);
    }
    out
}

/// The status model, from consensus, membership and the control plane.
fn status_input() -> StatusInput {
    let raft = consensus::status();
    let me = node::config().id;
    let ids = control::all_nodes();
    let reachable = ids.iter().filter(|&&id| membership::is_up(id)).count() as u32;
    let leader = raft.as_ref().and_then(|r| r.leader);
    let quorum = QuorumView {
        leader: leader.map(peers::name_of),
        term: raft.as_ref().map_or(0, |r| r.term),
        voters_reachable: reachable,
        voters_total: ids.len() as u32,
        quorum: control::has_quorum(),
    };
    let view = control::with_view(|desired, reports, pending| {
        let nodes = ids
            .iter()
            .map(|&id| {
                let report = reports.iter().find(|r| r.node == id);
                let raft_role = if Some(id) == leader {
                    RaftRole::Leader
                } else if id == me {
                    raft.as_ref().map_or(RaftRole::Unknown, |r| match r.role {
                        ::consensus::Role::Leader => RaftRole::Leader,
                        ::consensus::Role::Follower => RaftRole::Follower,
                        _ => RaftRole::Candidate,
                    })
                } else if membership::is_alive(id) {
                    RaftRole::Follower
                } else {
                    RaftRole::Unknown
                };
                NodeRow {
                    name: peers::name_of(id),
                    role: match membership::role_of(id) {
                        Some(kcore::node_config::Role::Witness) => NodeRole::Witness,
                        _ => NodeRole::Worker,
                    },
                    member: member_state(id),
                    raft: raft_role,
                    load_milli: report.map_or(0, |r| r.load_milli),
                    free_mib: report.map_or(0, |r| r.free_mib),
                    cells: report.map_or(0, |r| r.cell_count),
                    last_panic: report.and_then(|r| r.last_panic.clone()),
                }
            })
            .collect();
        let services = status::service_rows(desired, reports, pending);
        let cells = reports
            .iter()
            .flat_map(|r| status::cell_rows(&peers::name_of(r.node), r))
            .collect();
        (nodes, services, cells)
    });
    let (nodes, services, cells) = view.unwrap_or_default();
    StatusInput {
        quorum,
        nodes,
        services,
        cells,
    }
}
