//! `raft` and `xylem`: the consensus group and the control plane.

use ::cell::spec::RestartPolicy;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use xylem::command::Command;
use xylem::operate::{validate_target, AutoscalePolicy, Maintenance, OperateError};
use xylem::service::{ServiceSpec, SpecError, MEMORY_MIB_DEFAULT};
use xylem::status;
use xylem::write::{Invalid, WriteError};

use super::{Command as ShellCommand, CommandError};
use crate::cluster::control;
use crate::cluster::{consensus, membership, peers};
use crate::{cells, node, sched, time};

pub const COMMANDS: &[ShellCommand] = &[
    ShellCommand {
        name: "raft",
        usage: "raft | raft put <key> <value> | raft get <key> | raft bench <count> | raft churn <svc> <count> | raft stall-disk <ms>",
        help: "the Raft group: role, term, leader, indexes; a test key/value map",
        run: raft,
    },
    ShellCommand {
        name: "xylem",
        usage: "xylem status [--json] | apply <svc> --payload <p> [--args a b ...] [--replicas N] [--restart R] [--memory-mib N] [--fence] [--port P] [--min N --max M --target-load PCT|off] | expose <svc> <port> | scale <svc> <N> | delete <svc> | cordon|uncordon|drain <node> | rollout status|undo <svc> | events [N] [--json] | stats",
        help: "the control plane: services, replicas, failover, addresses, drains, rolling updates, autoscaling; writes answer once committed",
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
        ["stall-disk", ms] => {
            let ms: u64 = ms
                .parse()
                .ok()
                .filter(|ms| (1..=10_000).contains(ms))
                .ok_or_else(|| failed(format!("'{ms}' is not 1..=10000 ms")))?;
            consensus::inject_disk_stall(ms);
            crate::println!("the raft task's next pass spins {ms} ms, like a slow flush");
            Ok(())
        }
        ["churn", service, count] => raft_churn(
            service,
            count
                .parse()
                .map_err(|_| failed(format!("'{count}' is not a count")))?,
        ),
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
    crate::println!(
        "log {} entries  log_bytes {}  snapshot {} ({} bytes)  compactions {}  installs {}",
        s.log_entries,
        s.log_bytes,
        s.snapshot.0,
        s.snapshot.1,
        s.stats.compactions,
        s.stats.snapshots_installed
    );
    crate::println!(
        "store generation {}  used {} of {} sectors  failures {}  recoveries {}",
        s.disk_generation,
        s.disk_used_sectors,
        s.disk_region_sectors,
        s.stats.store_failures,
        s.stats.store_recoveries
    );
    let (requests, busy_us, max_us) = crate::drivers::virtio::blk::stats();
    if let Some(mean_us) = busy_us.checked_div(requests) {
        crate::println!(
            "disk: {requests} requests, {mean_us} us mean wait, {max_us} us longest, {}",
            crate::drivers::virtio::blk::flush_mode()
        );
    }
    if let Some((error, since_us)) = s.stalled {
        crate::println!(
            "STALLED for {} ms: the store failed ({}); retrying",
            time::now_us().saturating_sub(since_us) / 1000,
            consensus::disk_error_name(&error)
        );
    }
    crate::println!(
        "raft task: longest pass {} us, gap {} us  longest leader silence {} us  covering heartbeat rounds {}  ticks read as a pause {}",
        s.pass_max_us,
        s.pass_gap_max_us,
        s.leader_gap_max_us,
        s.cover_rounds,
        s.skipped_ticks
    );
    if s.inbound_dropped > 0 {
        crate::println!(
            "{} Raft messages dropped: the raft task's queue was full",
            s.inbound_dropped
        );
    }
    if let Some(why) = s.failed {
        crate::println!("FAILED: {why}");
    }
    if let Some(rejected) = consensus::rejected() {
        let reasons: Vec<String> = rejected
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        crate::println!("rejected: {} {}", rejected.total(), reasons.join(" "));
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

/// Most scale commands one `raft churn` proposes.
const CHURN_MAX: usize = 100_000;

/// `raft churn <svc> <count>` on the leader: commits `count` control-plane commands that
/// scale `svc` between 1 and 2 replicas and back, one at a time (each waits for its
/// commit), so the log, compaction, snapshots and the planner all see a long, churny life.
/// Stops at the first refusal or a commit that does not come within 2 s, and says how far
/// it got (`committed=N`), so a caller can go on at the new leader.
fn raft_churn(service: &str, count: usize) -> Result<(), CommandError> {
    if count == 0 || count > CHURN_MAX {
        return Err(failed(format!("count must be 1..={CHURN_MAX}")));
    }
    let started_us = time::now_us();
    let mut last_index = 0;
    for i in 0..count {
        let command = Command::Scale {
            name: service.to_string(),
            replicas: 1 + (i % 2) as u16,
        };
        let bytes = command
            .encode()
            .map_err(|e| failed(format!("cannot encode: {e:?}")))?;
        let index = match consensus::propose(consensus::TAG_CONTROL, &bytes) {
            Ok(index) => index,
            Err(err) => {
                return Err(failed(format!(
                    "raft churn: committed={i} last_index={last_index}; proposal refused: {err:?}"
                )))
            }
        };
        let deadline_us = time::now_us() + 2_000_000;
        loop {
            match consensus::last_commit_advance() {
                Some((commit, _)) if commit >= index => break,
                Some(_) if time::now_us() <= deadline_us => sched::sleep_ms(1),
                _ => {
                    return Err(failed(format!(
                        "raft churn: committed={i} last_index={last_index}; index {index} not committed within 2 s"
                    )))
                }
            }
        }
        last_index = index;
    }
    let ms = (time::now_us() - started_us) / 1000;
    crate::println!("raft churn: committed={count} last_index={last_index} in {ms} ms");
    Ok(())
}

fn xylem(args: &[&str]) -> Result<(), CommandError> {
    match args.split_first() {
        Some((&"status", [])) => {
            crate::print!("{}", render_status());
            Ok(())
        }
        Some((&"status", ["--json"])) => {
            match control::status() {
                Some(input) => crate::println!("{}", xylem::json::status(&input, node::name())),
                None => return Err(failed("the control plane is not running")),
            }
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
        Some((&"cordon", [node])) => maintain(node, Maintenance::Cordoned),
        Some((&"uncordon", [node])) => maintain(node, Maintenance::Active),
        Some((&"drain", [node])) => maintain(node, Maintenance::Draining),
        Some((&"rollout", [action, service])) => match *action {
            "status" => {
                let text = control::rollout_text(service)
                    .ok_or_else(|| failed(format!("no service '{service}'")))?;
                crate::print!("{text}");
                Ok(())
            }
            "undo" => submit(Command::RolloutUndo {
                service: service.to_string(),
            }),
            _ => Err(CommandError::Usage),
        },
        Some((&"stats", [])) => {
            let median = control::tick_us_median().map_or(String::from("-"), |us| format!("{us}"));
            crate::println!("control_tick_us_median {median}");
            if let Some(s) = control::stats() {
                crate::println!(
                    "withheld_spawns {}  withheld_stops {}  lease_withheld_spawns {}  lease_expired_stops {}",
                    s.withheld_spawns,
                    s.withheld_stops,
                    s.lease_withheld_spawns,
                    s.lease_expired_stops
                );
                crate::println!(
                    "spawn_failures {}  messages_dropped {}  forwards_refused {}  busy {}",
                    s.spawn_failures,
                    s.messages_dropped,
                    s.forwards_refused,
                    s.busy
                );
            }
            Ok(())
        }
        Some((&"events", rest)) => events(rest),
        _ => Err(CommandError::Usage),
    }
}

/// `xylem cordon|uncordon|drain <node>`: by name or id; the leader also refuses a witness,
/// an unknown node and draining the last worker that takes slots (nothing is committed).
fn maintain(node: &str, mode: Maintenance) -> Result<(), CommandError> {
    let id = control::node_by_name(node).ok_or_else(|| {
        let names: Vec<String> = control::all_nodes()
            .into_iter()
            .map(peers::name_of)
            .collect();
        failed(format!(
            "rejected, nothing committed: no node '{node}' in this cluster (nodes: {})",
            names.join(", ")
        ))
    })?;
    submit(Command::Maintain { node: id, mode })
}

fn apply(args: &[&str]) -> Result<(), CommandError> {
    let (&name, rest) = args.split_first().ok_or(CommandError::Usage)?;
    if name.starts_with("--") {
        return Err(CommandError::Usage);
    }
    let (mut payload, mut replicas, mut restart, mut call_args) =
        (None, 1u16, RestartPolicy::OnFailure, Vec::new());
    let mut port = None;
    let mut fenced = false;
    let mut memory_mib = MEMORY_MIB_DEFAULT;
    let (mut min, mut max, mut target, mut replicas_given) = (None, None, None, false);
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
                replicas_given = true;
                replicas = value(i)?
                    .parse()
                    .map_err(|_| failed(format!("'{}' is not a replica count", rest[i + 1])))?
            }
            "--min" | "--max" => {
                let n: u16 = value(i)?
                    .parse()
                    .map_err(|_| failed(format!("'{}' is not a replica count", rest[i + 1])))?;
                if rest[i] == "--min" {
                    min = Some(n);
                } else {
                    max = Some(n);
                }
            }
            "--target-load" => {
                let v = value(i)?;
                target = Some(if v == "off" {
                    None
                } else {
                    let pct: u8 = v.trim_end_matches('%').parse().map_err(|_| {
                        failed(format!("target load '{v}' is not a percentage (or off)"))
                    })?;
                    Some(pct)
                });
            }
            "--memory-mib" => {
                let v = value(i)?;
                memory_mib = v
                    .parse()
                    .map_err(|_| failed(format!("'{v}' is not a memory size in MiB")))?;
            }
            "--restart" => {
                let v = value(i)?;
                restart = RestartPolicy::parse(v).ok_or_else(|| {
                    failed(format!(
                        "restart policy '{v}' is not always, on-failure or never"
                    ))
                })?;
            }
            "--fence" => {
                fenced = true;
                i += 1;
                continue;
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
    if !replicas_given {
        // A new version or new bounds keep the current count (the autoscaler's, perhaps),
        // within the new bounds; a new service starts at its minimum (at least 1).
        replicas = match control::service_replicas(name) {
            Some(current) => current.clamp(min.unwrap_or(0), max.unwrap_or(u16::MAX)),
            None => min.unwrap_or(1).max(1),
        };
    }
    let mut spec = ServiceSpec::new(name, payload, replicas);
    spec.args = call_args;
    spec.restart = restart;
    spec.fenced = fenced;
    spec.memory_mib = memory_mib;
    spec.min_replicas = min.unwrap_or(spec.min_replicas);
    spec.max_replicas = max.unwrap_or(spec.max_replicas);
    // Every check that can be made here is made before anything is proposed, so a bad
    // autoscale request commits neither the spec nor the policy.
    let policy = match target {
        Some(Some(pct)) => {
            let refuse = |e: OperateError| failed(format!("rejected, nothing committed: {e}"));
            validate_target(pct).map_err(refuse)?;
            if spec.min_replicas == 0 {
                return Err(refuse(OperateError::AutoscaleMinZero));
            }
            if fenced {
                return Err(refuse(OperateError::Fenced));
            }
            Some(Some(AutoscalePolicy {
                target_load_pct: pct,
            }))
        }
        Some(None) => Some(None),
        None => None,
    };
    if let Err(e) = spec.validate(&control::catalog()) {
        return submit_outcome(Err(WriteError::Invalid(Invalid::Spec(e))));
    }
    submit(Command::ApplyService(spec))?;
    // Writes answer once committed: the service exists now, and gets its policy and address.
    if let Some(policy) = policy {
        submit(Command::SetAutoscale {
            service: name.to_string(),
            policy,
        })?;
    }
    match port {
        Some(port) => submit(Command::Expose {
            service: name.to_string(),
            port,
        }),
        None => Ok(()),
    }
}

fn parse_port(text: &str) -> Result<u16, CommandError> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| failed(format!("'{text}' is not a port (1-65535)")))
}

/// Submits a write and answers only with its outcome: `committed at index N`, or an error
/// saying exactly what happened (see `xylem::write`).
fn submit(command: Command) -> Result<(), CommandError> {
    submit_outcome(control::submit(command))
}

fn submit_outcome(result: Result<u64, WriteError>) -> Result<(), CommandError> {
    match result {
        Ok(index) => {
            crate::println!("committed at index {index}");
            Ok(())
        }
        Err(WriteError::Invalid(Invalid::Spec(SpecError::UnknownPayload))) => {
            let names: Vec<&str> = cells::payloads::names().collect();
            Err(failed(format!(
                "rejected, nothing committed: unknown payload (available: {})",
                names.join(", ")
            )))
        }
        Err(err) => Err(failed(format!("{err}"))),
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

/// Builds the `xylem status` screen from the control node's status model.
pub fn render_status() -> String {
    match control::status() {
        Some(input) => {
            let mut text = status::render(&input);
            text.push_str(&render_addresses());
            text
        }
        None => String::from("the control plane is not running\n"),
    }
}

/// The services' stable addresses (docs/front-door.md): one line each, with the committed
/// owner and its epoch.
fn render_addresses() -> String {
    let rows = control::addresses();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::from("ADDRESSES\n");
    for (service, a) in rows {
        let ip = a.ip();
        let owner = a.owner.map_or(String::from("-"), |o| {
            format!("{} epoch {}", peers::name_of(o.node), o.epoch)
        });
        out.push_str(&format!(
            "  {service:<16} {}.{}.{}.{}:{:<5}  {service}.xylem  owner {owner}\n",
            ip[0], ip[1], ip[2], ip[3], a.port
        ));
    }
    out
}
