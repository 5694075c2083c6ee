//! The status model and its 80-column rendering for `xylem status`.
//!
//! [`crate::node::ControlNode::status`] fills a plain, typed [`StatusInput`] (Raft view,
//! membership view, the latest reports, the desired state) and the shell prints the `String`
//! from [`render`]:
//!
//! ```text
//! quorum: leader=w1 term=4 voters=3/3 reachable
//!
//! NODE         ROLE     MEMBER   RAFT        LOAD FREE_MIB CELLS
//! ...
//! SERVICE                      DESIRED RUNNING FENCE  STATE
//! ...
//! CELL                               NODE         STATE      RST  UPTIME LOCAL
//! web/0@3                            w1           running      0   1m15s     3
//!
//! NODE         LAST PANIC (previous boot)         <- only when a node reports one
//! w2           up 12.3s vector 14 elf+0x1a2b: page fault (vector 14) in kernel mo~
//! ```
//!
//! A cell is shown by its cluster-wide name `service/slot@epoch` ([`CellName`]); LOCAL is its
//! node-local id (what `cell ls` on that node shows). Every line fits in [`WIDTH`] columns
//! whatever the input (long names are cut with `~`), and each table shows at most [`ROWS_MAX`]
//! rows plus a `(+N more)` line, so the output is bounded. [`service_rows`] derives the service
//! table from the desired state and node reports, counting only cells that match their slot's
//! current assignment (fenced stale cells do not count).

use crate::desired::DesiredState;
use crate::name::CellName;
use crate::placement::Pending;
use crate::report::{NodeReport, PanicNote};
use crate::{CellState, NodeRole};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

/// Maximum line width of the rendering.
pub const WIDTH: usize = 80;
/// Maximum rows per table.
pub const ROWS_MAX: usize = 64;

/// SWIM's verdict on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    /// The spelling in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        }
    }
}

/// A node's Raft role as far as this node knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
    /// Not known here (for example a peer across a partition).
    Unknown,
}

impl RaftRole {
    /// The spelling in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Leader => "leader",
            Self::Follower => "follower",
            Self::Candidate => "candidate",
            Self::Unknown => "-",
        }
    }
}

/// The Raft group as seen from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumView {
    /// Name of the known leader, if any.
    pub leader: Option<String>,
    /// Current term.
    pub term: u64,
    /// Voters this node can reach (itself included).
    pub voters_reachable: u32,
    /// Voters in the configuration.
    pub voters_total: u32,
    /// Whether this node is on the majority side and caught up (see [`crate::reconcile`]).
    pub quorum: bool,
    /// The lease this node holds for fenced cells, in ms left (`None`: it holds none).
    pub lease_left_ms: Option<u64>,
}

/// One row of the node table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub role: NodeRole,
    pub member: MemberState,
    pub raft: RaftRole,
    pub load_milli: u32,
    pub free_mib: u32,
    pub cells: u32,
    /// Maintenance state (`xylem cordon|drain`): active, cordoned, draining or drained.
    pub maint: crate::operate::Maintenance,
    /// How the node's previous boot ended, if in a panic (from its report).
    pub last_panic: Option<PanicNote>,
}

/// A node's last panic in one line of at most `width` characters.
pub fn panic_text(note: &PanicNote, width: usize) -> String {
    let text = match note {
        PanicNote::Panicked {
            uptime_ms,
            vector,
            rip_offset,
            message,
            ..
        } => {
            let cause = match vector {
                Some(v) => alloc::format!("vector {v}"),
                None => String::from("panic"),
            };
            alloc::format!(
                "up {}.{}s {cause} elf+{rip_offset:#x}: {message}",
                uptime_ms / 1000,
                uptime_ms % 1000 / 100
            )
        }
        PanicNote::CorruptRecord => {
            String::from("crash record corrupt (torn or flipped; not trusted)")
        }
    };
    fit(&text, width)
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceHealth {
    /// Running equals desired and nothing is pending.
    Healthy,
    /// Some slot cannot be placed (no feasible node, crash loop given up...).
    Degraded,
    /// Counts differ but every slot is placed: convergence in progress.
    Reconciling,
    /// This node has no quorum: nothing changes until it does.
    NoQuorum,
}

impl ServiceHealth {
    /// Classifies a service from its counts.
    pub fn classify(quorum: bool, desired: u16, running: u16, pending: u16) -> Self {
        if !quorum {
            Self::NoQuorum
        } else if pending > 0 {
            Self::Degraded
        } else if running != desired {
            Self::Reconciling
        } else {
            Self::Healthy
        }
    }

    /// The spelling in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Degraded => "Degraded",
            Self::Reconciling => "Reconciling",
            Self::NoQuorum => "NoQuorum",
        }
    }
}

/// One row of the service table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    pub desired: u16,
    /// Cells running at their slot's current epoch on their assigned node.
    pub running: u16,
    /// Slots the scheduler could not place in its last round for a real shortfall
    /// ([`crate::placement::PendingReason::is_degraded`]).
    pub pending: u16,
    /// Whether the service is fenced (`xylem apply … --fence`).
    pub fenced: bool,
    /// Each cell's memory limit (`xylem apply … --memory-mib N`).
    pub memory_mib: u32,
}

/// One row of the cell table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CellRow {
    /// The cluster-wide name, `service/slot@epoch`.
    pub name: CellName,
    /// Name of the node running it.
    pub node: String,
    pub state: CellState,
    pub restarts: u16,
    pub uptime_s: u32,
    /// The node-local cell id (low 32 bits, as reported).
    pub local_id: u32,
}

/// Everything `xylem status` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusInput {
    pub quorum: QuorumView,
    pub nodes: Vec<NodeRow>,
    pub services: Vec<ServiceRow>,
    pub cells: Vec<CellRow>,
}

/// Builds service rows from the desired state, the latest reports and the last plan's pending
/// slots. A cell counts as running only if its node is the slot's assigned node and its epoch
/// the slot's current epoch.
pub fn service_rows(
    desired: &DesiredState,
    reports: &[NodeReport],
    pending: &[Pending],
) -> Vec<ServiceRow> {
    let mut rows = Vec::new();
    for spec in desired.services() {
        let mut running: u16 = 0;
        for (slot, a) in desired
            .assignments_of(&spec.name)
            .filter(|(s, _)| *s < spec.replicas)
        {
            let serving = reports.iter().filter(|r| r.node == a.node).any(|r| {
                r.cells.iter().any(|c| {
                    c.service == spec.name
                        && c.slot == slot
                        && c.epoch == a.epoch
                        && c.state.is_serving()
                })
            });
            running += u16::from(serving);
        }
        let pending = pending
            .iter()
            .filter(|p| p.service == spec.name && p.reason.is_degraded())
            .count();
        let pending = u16::try_from(pending).unwrap_or(u16::MAX);
        debug_assert!(running <= spec.replicas);
        rows.push(ServiceRow {
            name: spec.name.clone(),
            desired: spec.replicas,
            running,
            pending,
            fenced: spec.fenced,
            memory_mib: spec.memory_mib,
        });
    }
    rows
}

/// Builds cell rows from one node's report (`node` is the name to show).
pub fn cell_rows(node: &str, report: &NodeReport) -> Vec<CellRow> {
    let rows: Vec<CellRow> = report
        .cells
        .iter()
        .map(|c| CellRow {
            name: CellName::new(&c.service, c.slot, c.epoch),
            node: String::from(node),
            state: c.state,
            restarts: c.restarts,
            uptime_s: c.uptime_s,
            local_id: c.cell_id,
        })
        .collect();
    debug_assert_eq!(rows.len(), report.cells.len());
    rows
}

/// Renders the status screen; every line is at most [`WIDTH`] columns.
pub fn render(input: &StatusInput) -> String {
    let mut out = String::new();
    render_quorum(&mut out, &input.quorum);
    render_nodes(&mut out, &input.nodes);
    render_services(&mut out, &input.services, input.quorum.quorum);
    render_cells(&mut out, &input.cells);
    render_panics(&mut out, &input.nodes);
    debug_assert!(out.lines().all(|l| l.chars().count() <= WIDTH));
    out
}

fn render_quorum(out: &mut String, q: &QuorumView) {
    let leader = q
        .leader
        .as_deref()
        .map_or_else(|| String::from("none"), |l| fit(l, 16));
    let (reachable, total) = (q.voters_reachable, q.voters_total);
    let lease = q.lease_left_ms.map_or_else(String::new, |ms| {
        alloc::format!(" lease={}.{}s", ms / 1000, ms % 1000 / 100)
    });
    let line = if q.quorum {
        alloc::format!(
            "quorum: leader={leader} term={} voters={reachable}/{total} reachable{lease}",
            q.term
        )
    } else {
        alloc::format!(
            "NO QUORUM: voters={reachable}/{total} reachable term={} leader={leader}{lease}",
            q.term
        )
    };
    // Only absurd terms or voter counts can overflow the line; cut rather than wrap.
    let _ = writeln!(out, "{}", fit(&line, WIDTH));
    if !q.quorum {
        let _ = writeln!(
            out,
            "  minority side: cells keep running, none are started or stopped"
        );
    }
}

fn render_nodes(out: &mut String, nodes: &[NodeRow]) {
    let _ = writeln!(
        out,
        "\n{:<12} {:<8} {:<8} {:<9} {:>6} {:>8} {:>5} STATE",
        "NODE", "ROLE", "MEMBER", "RAFT", "LOAD", "FREE_MIB", "CELLS"
    );
    for n in nodes.iter().take(ROWS_MAX) {
        let load = fit(&load_text(n.load_milli), 6);
        let free = fit(&alloc::format!("{}", n.free_mib), 8);
        let cells = fit(&alloc::format!("{}", n.cells), 5);
        let (role, member, raft) = (n.role.as_str(), n.member.as_str(), n.raft.as_str());
        let _ = writeln!(
            out,
            "{:<12} {:<8} {:<8} {:<9} {:>6} {:>8} {:>5} {}",
            fit(&n.name, 12),
            role,
            member,
            raft,
            load,
            free,
            cells,
            n.maint.as_str()
        );
    }
    more(out, nodes.len());
}

fn render_services(out: &mut String, services: &[ServiceRow], quorum: bool) {
    let _ = writeln!(
        out,
        "\n{:<28} {:>7} {:>7} {:>7} {:<6} STATE",
        "SERVICE", "DESIRED", "RUNNING", "MEM_MIB", "FENCE"
    );
    for s in services.iter().take(ROWS_MAX) {
        let health = ServiceHealth::classify(quorum, s.desired, s.running, s.pending);
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:>7} {:>7} {:<6} {}",
            fit(&s.name, 28),
            s.desired,
            s.running,
            s.memory_mib,
            if s.fenced { "yes" } else { "no" },
            health.as_str()
        );
    }
    more(out, services.len());
}

fn render_cells(out: &mut String, cells: &[CellRow]) {
    let _ = writeln!(
        out,
        "\n{:<34} {:<12} {:<9} {:>4} {:>7} {:>5}",
        "CELL", "NODE", "STATE", "RST", "UPTIME", "LOCAL"
    );
    for c in cells.iter().take(ROWS_MAX) {
        let name = fit(&alloc::format!("{}", c.name), 34);
        let restarts = fit(&alloc::format!("{}", c.restarts), 4);
        let local = fit(&alloc::format!("{}", c.local_id), 5);
        let uptime = uptime_text(c.uptime_s);
        let node = fit(&c.node, 12);
        let _ = writeln!(
            out,
            "{name:<34} {node:<12} {:<9} {restarts:>4} {uptime:>7} {local:>5}",
            c.state.as_str()
        );
    }
    more(out, cells.len());
}

fn render_panics(out: &mut String, nodes: &[NodeRow]) {
    let crashed: Vec<&NodeRow> = nodes.iter().filter(|n| n.last_panic.is_some()).collect();
    if crashed.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{:<12} LAST PANIC (previous boot)", "NODE");
    for n in crashed.iter().take(ROWS_MAX) {
        if let Some(note) = &n.last_panic {
            let _ = writeln!(
                out,
                "{:<12} {}",
                fit(&n.name, 12),
                panic_text(note, WIDTH - 13)
            );
        }
    }
    more(out, crashed.len());
}

fn more(out: &mut String, rows: usize) {
    if rows > ROWS_MAX {
        let _ = writeln!(out, "(+{} more)", rows - ROWS_MAX);
    }
}

/// Cuts `text` to `width` characters, marking a cut with `~`.
fn fit(text: &str, width: usize) -> String {
    debug_assert!(width > 0);
    if text.chars().count() <= width {
        return String::from(text);
    }
    let mut cut: String = text.chars().take(width - 1).collect();
    cut.push('~');
    debug_assert_eq!(cut.chars().count(), width);
    cut
}

/// Load in CPUs with two decimals: 1234 milli -> "1.23".
fn load_text(load_milli: u32) -> String {
    alloc::format!("{}.{:02}", load_milli / 1000, (load_milli % 1000) / 10)
}

/// Compact uptime, at most 7 characters: "59s", "59m59s", "23h59m", "999d23h", ">999d".
fn uptime_text(uptime_s: u32) -> String {
    let (d, h, m, s) = (
        uptime_s / 86_400,
        uptime_s / 3600 % 24,
        uptime_s / 60 % 60,
        uptime_s % 60,
    );
    let text = match (d, h, m) {
        (0, 0, 0) => alloc::format!("{s}s"),
        (0, 0, _) => alloc::format!("{m}m{s:02}s"),
        (0, _, _) => alloc::format!("{h}h{m:02}m"),
        (1..=999, _, _) => alloc::format!("{d}d{h:02}h"),
        _ => String::from(">999d"),
    };
    debug_assert!(text.len() <= 7);
    text
}

#[cfg(test)]
mod tests;
