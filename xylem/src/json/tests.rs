//! The JSON shapes: every documented field, its type, and exact output for a known input.

use super::*;
use crate::name::CellName;
use crate::report::PanicNote;
use crate::status::{MemberState, QuorumView, RaftRole};
use crate::{CellState, NodeRole};
use alloc::string::ToString;
use alloc::vec;
use serde_json::Value;

fn input() -> StatusInput {
    StatusInput {
        quorum: QuorumView {
            leader: Some("worker-1".to_string()),
            term: 4,
            voters_reachable: 2,
            voters_total: 3,
            quorum: true,
            lease_left_ms: Some(900),
        },
        nodes: vec![
            NodeRow {
                name: "worker-1".into(),
                role: NodeRole::Worker,
                member: MemberState::Alive,
                raft: RaftRole::Leader,
                load_milli: 420,
                free_mib: 12,
                cells: 1,
                maint: crate::operate::Maintenance::Active,
                last_panic: None,
            },
            NodeRow {
                name: "worker-2".into(),
                role: NodeRole::Worker,
                member: MemberState::Dead,
                raft: RaftRole::Unknown,
                load_milli: 0,
                free_mib: 0,
                cells: 0,
                maint: crate::operate::Maintenance::Draining,
                last_panic: Some(PanicNote::panicked(
                    0x9cbb_36ff_e4f8_8736,
                    2415,
                    Some(14),
                    0x71912,
                    "page fault \"quoted\"\n",
                )),
            },
            NodeRow {
                name: "witness".into(),
                role: NodeRole::Witness,
                member: MemberState::Suspect,
                raft: RaftRole::Follower,
                load_milli: 10,
                free_mib: 40,
                cells: 0,
                maint: crate::operate::Maintenance::Active,
                last_panic: Some(PanicNote::CorruptRecord),
            },
        ],
        services: vec![ServiceRow {
            name: "web".into(),
            desired: 2,
            running: 1,
            pending: 0,
            fenced: false,
            memory_mib: 16,
        }],
        cells: vec![CellRow {
            name: CellName::new("web", 0, 7),
            local_id: 3,
            node: "worker-1".into(),
            state: CellState::Running,
            restarts: 1,
            uptime_s: 75,
        }],
    }
}

#[test]
fn status_is_one_line_with_the_documented_fields() {
    let text = status(&input(), "worker-1");
    assert!(!text.contains('\n'), "one line");
    let v: Value = serde_json::from_str(&text).unwrap();
    let keys = |v: &Value| -> alloc::vec::Vec<String> {
        let mut k: alloc::vec::Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&v),
        ["cells", "format", "node", "nodes", "quorum", "services"]
    );
    assert_eq!(v["format"], "xylem-status/1");
    assert_eq!(v["node"], "worker-1");
    assert_eq!(
        keys(&v["quorum"]),
        [
            "leader",
            "lease_left_ms",
            "ok",
            "term",
            "voters_reachable",
            "voters_total"
        ]
    );
    assert_eq!(v["quorum"]["ok"], true);
    assert_eq!(v["quorum"]["term"], 4);
    assert_eq!(
        keys(&v["nodes"][0]),
        [
            "cells",
            "free_mib",
            "last_panic",
            "load_milli",
            "maintenance",
            "member",
            "name",
            "raft",
            "role"
        ]
    );
    assert_eq!(v["nodes"][0]["maintenance"], "active");
    assert_eq!(v["nodes"][1]["maintenance"], "draining");
    assert_eq!(v["nodes"][0]["last_panic"], Value::Null);
    assert_eq!(v["nodes"][1]["member"], "dead");
    assert_eq!(v["nodes"][1]["raft"], "unknown");
    let panic = &v["nodes"][1]["last_panic"];
    assert_eq!(
        keys(panic),
        [
            "boot_id",
            "kind",
            "message",
            "rip_offset",
            "uptime_ms",
            "vector"
        ]
    );
    assert_eq!(panic["kind"], "panicked");
    assert_eq!(panic["boot_id"], "9cbb36ffe4f88736");
    assert_eq!(panic["vector"], 14);
    assert_eq!(panic["rip_offset"], 0x71912);
    assert_eq!(
        panic["message"], "page fault \"quoted\"\n",
        "escaped and restored"
    );
    assert_eq!(v["nodes"][2]["last_panic"]["kind"], "corrupt_record");
    assert_eq!(v["nodes"][2]["role"], "witness");
    assert_eq!(
        keys(&v["services"][0]),
        [
            "desired",
            "fenced",
            "health",
            "memory_mib",
            "name",
            "pending",
            "running"
        ]
    );
    assert_eq!(v["services"][0]["memory_mib"], 16);
    assert_eq!(v["services"][0]["health"], "reconciling");
    assert_eq!(
        keys(&v["cells"][0]),
        ["epoch", "id", "name", "node", "restarts", "service", "slot", "state", "uptime_s"]
    );
    assert_eq!(v["cells"][0]["state"], "running");
    assert_eq!(v["cells"][0]["name"], "web/0@7");
    assert_eq!(v["cells"][0]["id"], 3);
}

/// Every maintenance state has its spelling, the same as `xylem status`'s table.
#[test]
fn each_node_carries_its_maintenance_state() {
    use crate::operate::Maintenance;
    for (mode, text) in [
        (Maintenance::Active, "active"),
        (Maintenance::Cordoned, "cordoned"),
        (Maintenance::Draining, "draining"),
        (Maintenance::Drained, "drained"),
    ] {
        let mut input = input();
        input.nodes[0].maint = mode;
        let v: Value = serde_json::from_str(&status(&input, "worker-1")).unwrap();
        assert_eq!(v["nodes"][0]["maintenance"], text);
        assert_eq!(mode.as_str(), text);
    }
}

#[test]
fn no_quorum_and_no_leader_are_explicit() {
    let mut input = input();
    input.quorum.quorum = false;
    input.quorum.leader = None;
    let v: Value = serde_json::from_str(&status(&input, "worker-2")).unwrap();
    assert_eq!(v["quorum"]["ok"], false);
    assert_eq!(v["quorum"]["leader"], Value::Null);
    assert_eq!(v["services"][0]["health"], "no_quorum");
}

#[test]
fn exact_output_for_an_empty_cluster() {
    let input = StatusInput {
        quorum: QuorumView {
            leader: None,
            term: 0,
            voters_reachable: 1,
            voters_total: 1,
            quorum: false,
            lease_left_ms: None,
        },
        nodes: vec![],
        services: vec![],
        cells: vec![],
    };
    assert_eq!(
        status(&input, "n"),
        "{\"format\":\"xylem-status/1\",\"node\":\"n\",\"quorum\":{\"ok\":false,\"leader\":null,\
         \"term\":0,\"voters_reachable\":1,\"voters_total\":1,\"lease_left_ms\":null},\"nodes\":[],\"services\":[],\
         \"cells\":[]}"
    );
}

#[test]
fn events_are_an_ordered_list() {
    let history = vec![
        (
            1_000,
            "#2 apply web payload=hello replicas=2 -> Ok".to_string(),
        ),
        (2_500, "spawned web/0 epoch=3 as cell 1".to_string()),
    ];
    let text = events("worker-1", &history);
    assert!(!text.contains('\n'));
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], "xylem-events/1");
    assert_eq!(v["node"], "worker-1");
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    assert_eq!(v["events"][1]["t_us"], 2_500);
    assert_eq!(v["events"][1]["text"], "spawned web/0 epoch=3 as cell 1");
    let empty: Value = serde_json::from_str(&events("n", &[])).unwrap();
    assert_eq!(empty["events"], Value::Array(vec![]));
}
