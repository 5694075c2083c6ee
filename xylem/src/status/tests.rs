//! Host tests of the status model and rendering: golden output, 80 columns, bounds.

use super::*;
use crate::command::{Command, Reason};
use crate::placement::PendingReason;
use crate::report::CellReport;
use crate::service::{PayloadCatalog, ServiceSpec};
use alloc::string::ToString;
use alloc::vec;

fn node(name: &str, role: NodeRole, raft: RaftRole) -> NodeRow {
    NodeRow {
        name: name.to_string(),
        role,
        member: MemberState::Alive,
        raft,
        load_milli: 420,
        free_mib: 912,
        cells: 1,
        maint: crate::operate::Maintenance::Active,
        last_panic: None,
    }
}

fn typical(quorum: bool) -> StatusInput {
    StatusInput {
        quorum: QuorumView {
            leader: quorum.then(|| "w1".to_string()),
            term: 4,
            voters_reachable: if quorum { 3 } else { 1 },
            voters_total: 3,
            quorum,
            lease_left_ms: None,
        },
        nodes: vec![
            node("w1", NodeRole::Worker, RaftRole::Leader),
            NodeRow {
                maint: crate::operate::Maintenance::Draining,
                ..node("w2", NodeRole::Worker, RaftRole::Follower)
            },
            NodeRow {
                cells: 0,
                ..node("witness", NodeRole::Witness, RaftRole::Follower)
            },
        ],
        services: vec![
            ServiceRow {
                name: "web".to_string(),
                desired: 2,
                running: 2,
                pending: 0,
                fenced: false,
                memory_mib: 16,
            },
            ServiceRow {
                name: "lock".to_string(),
                desired: 1,
                running: 1,
                pending: 0,
                fenced: true,
                memory_mib: 4,
            },
        ],
        cells: vec![
            CellRow {
                name: CellName::new("web", 0, 3),
                node: "w1".into(),
                state: CellState::Running,
                restarts: 0,
                uptime_s: 75,
                local_id: 3,
            },
            CellRow {
                name: CellName::new("web", 1, 7),
                node: "w2".into(),
                state: CellState::Running,
                restarts: 2,
                uptime_s: 7_384,
                local_id: 1,
            },
            CellRow {
                name: CellName::new("lock", 0, 5),
                node: "w2".into(),
                state: CellState::Running,
                restarts: 0,
                uptime_s: 9,
                local_id: 2,
            },
        ],
    }
}

const GOLDEN: &str = "\
quorum: leader=w1 term=4 voters=3/3 reachable

NODE         ROLE     MEMBER   RAFT        LOAD FREE_MIB CELLS STATE
w1           worker   alive    leader      0.42      912     1 active
w2           worker   alive    follower    0.42      912     1 draining
witness      witness  alive    follower    0.42      912     0 active

SERVICE                      DESIRED RUNNING MEM_MIB FENCE  STATE
web                                2       2      16 no     Healthy
lock                               1       1       4 yes    Healthy

CELL                               NODE         STATE      RST  UPTIME LOCAL
web/0@3                            w1           running      0   1m15s     3
web/1@7                            w2           running      2   2h03m     1
lock/0@5                           w2           running      0      9s     2
";

#[test]
fn golden_rendering() {
    assert_eq!(render(&typical(true)), GOLDEN);
}

#[test]
fn a_held_lease_is_shown() {
    let mut input = typical(true);
    input.quorum.lease_left_ms = Some(1_870);
    let first = render(&input).lines().next().unwrap().to_string();
    assert_eq!(
        first,
        "quorum: leader=w1 term=4 voters=3/3 reachable lease=1.8s"
    );
}

#[test]
fn no_quorum_is_loud() {
    let text = render(&typical(false));
    let first = text.lines().next().unwrap();
    assert_eq!(first, "NO QUORUM: voters=1/3 reachable term=4 leader=none");
    assert!(text.contains("NoQuorum"));
    assert!(text.contains("none are started or stopped"));
}

#[test]
fn worst_case_fits_80_columns() {
    let long = "x".repeat(200);
    let mut input = typical(true);
    input.quorum.leader = Some(long.clone());
    input.quorum.term = u64::MAX;
    input.quorum.voters_reachable = u32::MAX;
    input.quorum.voters_total = u32::MAX;
    input.nodes = vec![NodeRow {
        name: long.clone(),
        role: NodeRole::Witness,
        member: MemberState::Suspect,
        raft: RaftRole::Candidate,
        load_milli: u32::MAX,
        free_mib: u32::MAX,
        cells: u32::MAX,
        maint: crate::operate::Maintenance::Active,
        last_panic: Some(crate::report::PanicNote::panicked(
            u64::MAX,
            u64::MAX,
            Some(u8::MAX),
            u64::MAX,
            &"é".repeat(100),
        )),
    }];
    input.quorum.lease_left_ms = Some(u64::MAX);
    input.services = vec![ServiceRow {
        name: long.clone(),
        desired: u16::MAX,
        running: u16::MAX,
        pending: 1,
        fenced: true,
        memory_mib: u32::MAX,
    }];
    input.cells = vec![CellRow {
        name: CellName::new(&"x".repeat(32), 63, u64::MAX),
        node: "é".repeat(40),
        state: CellState::CrashLoop,
        restarts: u16::MAX,
        uptime_s: u32::MAX,
        local_id: u32::MAX,
    }];
    for quorum in [true, false] {
        input.quorum.quorum = quorum;
        let text = render(&input);
        for line in text.lines() {
            assert!(
                line.chars().count() <= WIDTH,
                "{} columns: {line:?}",
                line.chars().count()
            );
        }
        assert!(text.contains('~'), "long names are visibly cut");
    }
}

#[test]
fn tables_are_bounded() {
    let mut input = typical(true);
    input.cells = (0..100u32)
        .map(|id| CellRow {
            name: CellName::new("web", 0, u64::from(id) + 1),
            node: "w1".into(),
            state: CellState::Running,
            restarts: 0,
            uptime_s: 1,
            local_id: id,
        })
        .collect();
    let text = render(&input);
    assert!(text.ends_with("(+36 more)\n"));
    assert_eq!(
        text.lines().count(),
        GOLDEN.lines().count() - 3 + ROWS_MAX + 1
    );
}

#[test]
fn health_classification() {
    assert_eq!(
        ServiceHealth::classify(false, 2, 2, 0),
        ServiceHealth::NoQuorum
    );
    assert_eq!(
        ServiceHealth::classify(true, 2, 2, 0),
        ServiceHealth::Healthy
    );
    assert_eq!(
        ServiceHealth::classify(true, 2, 1, 0),
        ServiceHealth::Reconciling
    );
    assert_eq!(
        ServiceHealth::classify(true, 1, 2, 0),
        ServiceHealth::Reconciling
    );
    assert_eq!(
        ServiceHealth::classify(true, 2, 1, 1),
        ServiceHealth::Degraded
    );
}

#[test]
fn formatting_helpers() {
    assert_eq!(uptime_text(0), "0s");
    assert_eq!(uptime_text(59), "59s");
    assert_eq!(uptime_text(60), "1m00s");
    assert_eq!(uptime_text(3_599), "59m59s");
    assert_eq!(uptime_text(3_600), "1h00m");
    assert_eq!(uptime_text(86_399), "23h59m");
    assert_eq!(uptime_text(86_400), "1d00h");
    assert_eq!(uptime_text(999 * 86_400 + 3_600 * 23), "999d23h");
    assert_eq!(uptime_text(1000 * 86_400), ">999d");
    assert_eq!(load_text(0), "0.00");
    assert_eq!(load_text(1_234), "1.23");
    assert_eq!(load_text(999), "0.99");
    assert_eq!(fit("abcdef", 4), "abc~");
    assert_eq!(fit("abcd", 4), "abcd");
    assert_eq!(fit("éééé", 3), "éé~");
}

#[test]
fn service_rows_count_only_current_epoch_cells_on_assigned_nodes() {
    let mut ds = DesiredState::new(PayloadCatalog::new(&["echo"]));
    let commands = [
        Command::ApplyService(ServiceSpec::new("web", "echo", 3)),
        Command::Assign {
            service: "web".into(),
            slot: 0,
            node: 1,
            epoch: 1,
            reason: Reason::Place,
        },
        Command::Assign {
            service: "web".into(),
            slot: 1,
            node: 2,
            epoch: 2,
            reason: Reason::Place,
        },
        Command::Assign {
            service: "web".into(),
            slot: 1,
            node: 1,
            epoch: 3,
            reason: Reason::Place,
        },
    ];
    for (i, c) in commands.iter().enumerate() {
        ds.apply(i as u64 + 1, c).unwrap();
    }
    let cell = |slot, epoch, state| CellReport {
        cell_id: 1,
        service: "web".into(),
        slot,
        epoch,
        state,
        restarts: 0,
        uptime_s: 0,
        cpu_pct: 0,
        listening: false,
    };
    let reports = [
        NodeReport::new(
            1,
            1,
            0,
            0,
            0,
            vec![
                cell(0, 1, CellState::Running),
                cell(1, 3, CellState::Starting),
            ],
        ),
        // Node 2 still runs the fenced epoch-2 cell of slot 1: it must not count.
        NodeReport::new(2, 1, 0, 0, 0, vec![cell(1, 2, CellState::Running)]),
    ];
    let pending = [Pending {
        service: "web".into(),
        slot: 2,
        reason: PendingReason::NoFeasibleNode,
    }];
    let rows = service_rows(&ds, &reports, &pending);
    assert_eq!(
        rows,
        vec![ServiceRow {
            name: "web".into(),
            desired: 3,
            running: 1,
            pending: 1,
            fenced: false,
            memory_mib: 16,
        }]
    );
}

#[test]
fn cell_rows_come_from_reports() {
    let report = NodeReport::new(
        2,
        1,
        0,
        0,
        0,
        vec![CellReport {
            cell_id: 12,
            service: "web".into(),
            slot: 1,
            epoch: 3,
            state: CellState::Backoff,
            restarts: 4,
            uptime_s: 9,
            cpu_pct: 0,
            listening: false,
        }],
    );
    let rows = cell_rows("w2", &report);
    let want = CellRow {
        name: CellName::new("web", 1, 3),
        node: "w2".into(),
        state: CellState::Backoff,
        restarts: 4,
        uptime_s: 9,
        local_id: 12,
    };
    assert_eq!(rows, vec![want]);
    let mut input = typical(true);
    input.cells = rows;
    assert!(render(&input)
        .contains("web/1@3                            w2           backoff      4      9s    12"));
}

#[test]
fn a_crashed_node_shows_its_last_panic() {
    use crate::report::PanicNote;
    let mut input = typical(true);
    assert!(
        !render(&input).contains("LAST PANIC"),
        "no section without a panic"
    );
    input.nodes[1].last_panic = Some(PanicNote::panicked(
        0xabc,
        12_345,
        Some(14),
        0x1a2b,
        "page fault (vector 14) in kernel mode",
    ));
    input.nodes[2].last_panic = Some(PanicNote::CorruptRecord);
    let text = render(&input);
    let section: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("LAST PANIC"))
        .collect();
    assert_eq!(
        section,
        [
            "NODE         LAST PANIC (previous boot)",
            "w2           up 12.3s vector 14 elf+0x1a2b: page fault (vector 14) in kernel mo~",
            "witness      crash record corrupt (torn or flipped; not trusted)",
        ]
    );
    assert!(text.lines().all(|l| l.chars().count() <= WIDTH));
}
