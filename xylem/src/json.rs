//! Machine-readable status: `xylem status --json` and `xylem events --json`.
//!
//! Each prints one JSON object on one line. The field names below are the stable interface
//! (documented in docs/observability.md); they are spelled out in dedicated view structs, so
//! renaming an internal type never changes them. A new field may be added; an existing one
//! is never renamed or retyped without bumping `format`.
//!
//! ```text
//! {"format":"xylem-status/1","node":"worker-1",
//!  "quorum":{"ok":true,"leader":"worker-1","term":4,"voters_reachable":3,"voters_total":3,
//!            "lease_left_ms":null},
//!  "nodes":[{"name":"worker-1","role":"worker","member":"alive","raft":"leader",
//!            "maintenance":"active","load_milli":420,"free_mib":12,"cells":1,
//!            "last_panic":null}],
//!  "services":[{"name":"web","desired":2,"running":2,"pending":0,"fenced":false,
//!                "memory_mib":16,"health":"healthy"}],
//!  "cells":[{"name":"web/0@3","id":3,"service":"web","slot":0,"epoch":3,"node":"worker-1",
//!            "state":"running","restarts":0,"uptime_s":75}]}
//! {"format":"xylem-events/1","node":"worker-1","events":[{"t_us":812345,"text":"…"}]}
//! ```
//!
//! `maintenance` is `active`, `cordoned`, `draining` or `drained`, as the table's last column
//! (`xylem cordon|uncordon|drain`). `last_panic` is `null`, `{"kind":"panicked","boot_id":"<16 hex>","uptime_ms":…,
//! "vector":null|14,"rip_offset":…,"message":"…"}` or `{"kind":"corrupt_record"}`.

use crate::report::PanicNote;
use crate::status::{CellRow, NodeRow, ServiceHealth, ServiceRow, StatusInput};
use alloc::string::String;
use alloc::vec::Vec;
use serde::Serialize;

/// The `format` of `xylem status --json`.
pub const STATUS_FORMAT: &str = "xylem-status/1";
/// The `format` of `xylem events --json`.
pub const EVENTS_FORMAT: &str = "xylem-events/1";

#[derive(Serialize)]
struct Status<'a> {
    format: &'static str,
    node: &'a str,
    quorum: Quorum<'a>,
    nodes: Vec<Node<'a>>,
    services: Vec<Service<'a>>,
    cells: Vec<Cell<'a>>,
}

#[derive(Serialize)]
struct Quorum<'a> {
    ok: bool,
    leader: Option<&'a str>,
    term: u64,
    voters_reachable: u32,
    voters_total: u32,
    lease_left_ms: Option<u64>,
}

#[derive(Serialize)]
struct Node<'a> {
    name: &'a str,
    role: &'static str,
    member: &'static str,
    raft: &'static str,
    maintenance: &'static str,
    load_milli: u32,
    free_mib: u32,
    cells: u32,
    last_panic: Option<Panic<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Panic<'a> {
    Panicked {
        boot_id: String,
        uptime_ms: u32,
        vector: Option<u8>,
        rip_offset: u32,
        message: &'a str,
    },
    CorruptRecord,
}

#[derive(Serialize)]
struct Service<'a> {
    name: &'a str,
    desired: u16,
    running: u16,
    pending: u16,
    fenced: bool,
    memory_mib: u32,
    health: &'static str,
}

#[derive(Serialize)]
struct Cell<'a> {
    name: String,
    id: u64,
    service: &'a str,
    slot: u16,
    epoch: u64,
    node: &'a str,
    state: &'static str,
    restarts: u16,
    uptime_s: u32,
}

#[derive(Serialize)]
struct Events<'a> {
    format: &'static str,
    node: &'a str,
    events: Vec<EventLine<'a>>,
}

#[derive(Serialize)]
struct EventLine<'a> {
    t_us: u64,
    text: &'a str,
}

fn health_name(h: ServiceHealth) -> &'static str {
    match h {
        ServiceHealth::Healthy => "healthy",
        ServiceHealth::Degraded => "degraded",
        ServiceHealth::Reconciling => "reconciling",
        ServiceHealth::NoQuorum => "no_quorum",
    }
}

fn raft_name(r: crate::status::RaftRole) -> &'static str {
    match r {
        crate::status::RaftRole::Unknown => "unknown",
        other => other.as_str(),
    }
}

fn panic_view(note: &PanicNote) -> Panic<'_> {
    match note {
        PanicNote::Panicked {
            boot_id,
            uptime_ms,
            vector,
            rip_offset,
            message,
        } => Panic::Panicked {
            boot_id: alloc::format!("{boot_id:016x}"),
            uptime_ms: *uptime_ms,
            vector: *vector,
            rip_offset: *rip_offset,
            message,
        },
        PanicNote::CorruptRecord => Panic::CorruptRecord,
    }
}

fn node_view(n: &NodeRow) -> Node<'_> {
    Node {
        name: &n.name,
        role: n.role.as_str(),
        member: n.member.as_str(),
        raft: raft_name(n.raft),
        maintenance: n.maint.as_str(),
        load_milli: n.load_milli,
        free_mib: n.free_mib,
        cells: n.cells,
        last_panic: n.last_panic.as_ref().map(panic_view),
    }
}

fn service_view(s: &ServiceRow, quorum: bool) -> Service<'_> {
    Service {
        name: &s.name,
        desired: s.desired,
        running: s.running,
        pending: s.pending,
        fenced: s.fenced,
        memory_mib: s.memory_mib,
        health: health_name(ServiceHealth::classify(
            quorum, s.desired, s.running, s.pending,
        )),
    }
}

fn cell_view(c: &CellRow) -> Cell<'_> {
    Cell {
        name: alloc::format!("{}", c.name),
        id: u64::from(c.local_id),
        service: &c.name.service,
        slot: c.name.slot,
        epoch: c.name.epoch,
        node: &c.node,
        state: c.state.as_str(),
        restarts: c.restarts,
        uptime_s: c.uptime_s,
    }
}

/// `xylem status --json`, as seen from node `node`: one line, no trailing newline.
pub fn status(input: &StatusInput, node: &str) -> String {
    let q = &input.quorum;
    let view = Status {
        format: STATUS_FORMAT,
        node,
        quorum: Quorum {
            ok: q.quorum,
            leader: q.leader.as_deref(),
            term: q.term,
            voters_reachable: q.voters_reachable,
            voters_total: q.voters_total,
            lease_left_ms: q.lease_left_ms,
        },
        nodes: input.nodes.iter().map(node_view).collect(),
        services: input
            .services
            .iter()
            .map(|s| service_view(s, q.quorum))
            .collect(),
        cells: input.cells.iter().map(cell_view).collect(),
    };
    serde_json::to_string(&view).expect("status views always serialize")
}

/// `xylem events --json`: the control plane's recent history, oldest first.
pub fn events(node: &str, history: &[(u64, String)]) -> String {
    let view = Events {
        format: EVENTS_FORMAT,
        node,
        events: history
            .iter()
            .map(|(t_us, text)| EventLine { t_us: *t_us, text })
            .collect(),
    };
    serde_json::to_string(&view).expect("event views always serialize")
}

#[cfg(test)]
mod tests;
