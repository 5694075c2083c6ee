//! The per-node status report: actual state flowing to the leader, outside the Raft log.
//!
//! Each node periodically sends a [`NodeReport`]: its load, free memory, the log index its
//! desired state has applied, and, per cell, `(cell id, service, slot, epoch, state, restarts,
//! uptime, CPU, whether it listens on its service's port)`. Every node keeps the latest report per node (newer `seq` wins); the leader turns
//! them into [`crate::placement::NodeView`]s for the scheduler, and every node into rows for
//! `xylem status`. The applied index lets the leader tell that a node has seen a fenced slot's
//! unbinding (see [`crate::lease`]).
//! Reports are soft state: losing one only delays a decision; they never enter the log.
//!
//! Size is bounded: at most [`REPORT_CELLS_MAX`] cells, and a worst-case report (32-byte names,
//! maximal integers) encodes in under [`REPORT_BYTES_MAX`] bytes so it fits one datagram next to
//! a gossip message. A node with more cells reports the first [`REPORT_CELLS_MAX`] in
//! `(service, slot)` order and sets `truncated`.
//!
//! A node whose previous boot ended in a kernel panic says so in every report of the boot
//! after it ([`PanicNote`], from the crash record the panic left on its disk), so the
//! leader's `xylem status` shows that a peer crashed, not just that it vanished.

use crate::{CellState, Epoch, NodeId, Slot};
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Most cells carried by one report.
pub const REPORT_CELLS_MAX: usize = 16;
/// Upper bound on an encoded report, in bytes (tested against the worst case). A report
/// travels as one transport payload (at most 1360 bytes) inside a control message.
pub const REPORT_BYTES_MAX: usize = 1120;
/// The first byte of every encoded report (format 2 added `applied_index`, format 3
/// [`NodeReport::last_panic`], format 4 each cell's `cpu_pct`, format 5 each cell's
/// `listening`). Formats before 4 are refused; a format-4 report (a node still running the
/// previous image during an upgrade) decodes with every cell `listening`, so readiness
/// falls back to what that image checked (run time only) instead of stalling every drain.
pub const REPORT_FORMAT_V5: u8 = 5;
/// The previous format, still decoded (see [`REPORT_FORMAT_V5`]).
pub const REPORT_FORMAT_V4: u8 = 4;
/// Longest panic message a report carries (cut on a character boundary).
pub const PANIC_MESSAGE_MAX: usize = 48;

/// How a node's previous boot ended, when it ended in a kernel panic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PanicNote {
    /// The crash record the panic wrote.
    Panicked {
        /// The boot that panicked.
        boot_id: u64,
        /// Its uptime at the panic, in ms (saturating).
        uptime_ms: u32,
        /// The CPU exception, if the panic came from one.
        vector: Option<u8>,
        /// RIP as an offset in the kernel ELF (saturating), for `addr2line`.
        rip_offset: u32,
        /// The panic message, at most [`PANIC_MESSAGE_MAX`] bytes.
        message: String,
    },
    /// The disk held a torn or corrupt record: a crash is likely, its details unknown.
    CorruptRecord,
}

impl PanicNote {
    /// A note from a crash record's fields; the message is cut to [`PANIC_MESSAGE_MAX`].
    pub fn panicked(
        boot_id: u64,
        uptime_ms: u64,
        vector: Option<u8>,
        rip_offset: u64,
        message: &str,
    ) -> Self {
        let mut end = message.len().min(PANIC_MESSAGE_MAX);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        PanicNote::Panicked {
            boot_id,
            uptime_ms: u32::try_from(uptime_ms).unwrap_or(u32::MAX),
            vector,
            rip_offset: u32::try_from(rip_offset).unwrap_or(u32::MAX),
            message: String::from(&message[..end]),
        }
    }

    fn is_bounded(&self) -> bool {
        match self {
            PanicNote::Panicked { message, .. } => message.len() <= PANIC_MESSAGE_MAX,
            PanicNote::CorruptRecord => true,
        }
    }
}

/// One cell in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellReport {
    /// The node-local cell id, for display only (low 32 bits of the kernel's id, which keeps
    /// the worst-case report under [`REPORT_BYTES_MAX`]).
    pub cell_id: u32,
    /// The service the cell belongs to.
    pub service: String,
    /// Its slot.
    pub slot: Slot,
    /// The epoch it was spawned under.
    pub epoch: Epoch,
    /// Its lifecycle state.
    pub state: CellState,
    /// Restarts by the local supervisor within this epoch (saturating).
    pub restarts: u16,
    /// Seconds since the current run started (saturating).
    pub uptime_s: u32,
    /// CPU the cell used recently, percent of one CPU (the autoscaler's input; one byte keeps
    /// the worst-case report under [`REPORT_BYTES_MAX`]).
    pub cpu_pct: u8,
    /// The cell accepts connections on its service's port (a listening socket on it); false
    /// for a service without a port. Part of a replacement's readiness (`crate::placement`).
    pub listening: bool,
}

/// [`CellReport`] as format 4 encoded it (no `listening`).
#[derive(Deserialize)]
struct CellReportV4 {
    cell_id: u32,
    service: String,
    slot: Slot,
    epoch: Epoch,
    state: CellState,
    restarts: u16,
    uptime_s: u32,
    cpu_pct: u8,
}

/// [`NodeReport`] as format 4 encoded it.
#[derive(Deserialize)]
struct NodeReportV4 {
    node: NodeId,
    seq: u64,
    load_milli: u32,
    free_mib: u32,
    applied_index: u64,
    cell_count: u32,
    cells: Vec<CellReportV4>,
    last_panic: Option<PanicNote>,
}

impl From<NodeReportV4> for NodeReport {
    fn from(r: NodeReportV4) -> Self {
        let cells = r
            .cells
            .into_iter()
            .map(|c| CellReport {
                cell_id: c.cell_id,
                service: c.service,
                slot: c.slot,
                epoch: c.epoch,
                state: c.state,
                restarts: c.restarts,
                uptime_s: c.uptime_s,
                cpu_pct: c.cpu_pct,
                // Format 4 does not say: readiness by run time only, as that image did.
                listening: true,
            })
            .collect();
        NodeReport {
            node: r.node,
            seq: r.seq,
            load_milli: r.load_milli,
            free_mib: r.free_mib,
            applied_index: r.applied_index,
            cell_count: r.cell_count,
            cells,
            last_panic: r.last_panic,
        }
    }
}

/// One node's report to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The reporting node.
    pub node: NodeId,
    /// Monotonic per node; the leader ignores a report older than the one it holds.
    pub seq: u64,
    /// Run-queue load, in thousandths of a CPU (1000 = one busy CPU).
    pub load_milli: u32,
    /// Free physical memory, in MiB.
    pub free_mib: u32,
    /// Index of the last committed entry the node's desired state applied.
    pub applied_index: u64,
    /// Number of cells on the node (may exceed `cells.len()` when truncated).
    pub cell_count: u32,
    /// The cells, in `(service, slot, epoch)` order, at most [`REPORT_CELLS_MAX`].
    pub cells: Vec<CellReport>,
    /// How the node's previous boot ended, if in a panic (see [`PanicNote`]).
    pub last_panic: Option<PanicNote>,
}

/// Why a report could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportError {
    /// More than [`REPORT_CELLS_MAX`] cells.
    TooManyCells { count: usize },
    /// The encoding is over [`REPORT_BYTES_MAX`].
    TooLarge { len: usize },
    /// Empty input.
    Empty,
    /// Unknown format-version byte.
    UnknownFormat { version: u8 },
    /// Not a valid postcard encoding of a report.
    Malformed,
}

impl NodeReport {
    /// Builds a report from a node's full cell list, sorting it and keeping the first
    /// [`REPORT_CELLS_MAX`] cells (`cell_count` keeps the true total).
    pub fn new(
        node: NodeId,
        seq: u64,
        load_milli: u32,
        free_mib: u32,
        applied_index: u64,
        mut cells: Vec<CellReport>,
    ) -> Self {
        cells.sort_by(|a, b| (&a.service, a.slot, a.epoch).cmp(&(&b.service, b.slot, b.epoch)));
        let cell_count = u32::try_from(cells.len()).unwrap_or(u32::MAX);
        cells.truncate(REPORT_CELLS_MAX);
        debug_assert!(cells.len() <= REPORT_CELLS_MAX);
        Self {
            node,
            seq,
            load_milli,
            free_mib,
            applied_index,
            cell_count,
            cells,
            last_panic: None,
        }
    }

    /// Whether some cells were left out.
    pub fn truncated(&self) -> bool {
        self.cells.len() < self.cell_count as usize
    }

    /// Encodes the report (version byte + postcard).
    pub fn encode(&self) -> Result<Vec<u8>, ReportError> {
        if self.cells.len() > REPORT_CELLS_MAX {
            return Err(ReportError::TooManyCells {
                count: self.cells.len(),
            });
        }
        if self.last_panic.as_ref().is_some_and(|p| !p.is_bounded()) {
            return Err(ReportError::Malformed);
        }
        let bytes = alloc::vec![REPORT_FORMAT_V5];
        let bytes = postcard::to_extend(self, bytes).map_err(|_| ReportError::Malformed)?;
        if bytes.len() > REPORT_BYTES_MAX {
            return Err(ReportError::TooLarge { len: bytes.len() });
        }
        Ok(bytes)
    }

    /// Decodes a report received from a peer; garbage is a typed error.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReportError> {
        let (&version, body) = bytes.split_first().ok_or(ReportError::Empty)?;
        if bytes.len() > REPORT_BYTES_MAX {
            return Err(ReportError::TooLarge { len: bytes.len() });
        }
        let (report, rest) = match version {
            REPORT_FORMAT_V5 => postcard::take_from_bytes::<NodeReport>(body),
            REPORT_FORMAT_V4 => postcard::take_from_bytes::<NodeReportV4>(body)
                .map(|(r, rest)| (NodeReport::from(r), rest)),
            _ => return Err(ReportError::UnknownFormat { version }),
        }
        .map_err(|_| ReportError::Malformed)?;
        if !rest.is_empty() {
            return Err(ReportError::Malformed);
        }
        if report.cells.len() > REPORT_CELLS_MAX {
            return Err(ReportError::TooManyCells {
                count: report.cells.len(),
            });
        }
        if report.last_panic.as_ref().is_some_and(|p| !p.is_bounded()) {
            return Err(ReportError::Malformed);
        }
        Ok(report)
    }

    /// Cells the supervisor has given up on (crash-loop gate tripped), for the scheduler.
    pub fn crashloops(&self) -> impl Iterator<Item = (&str, Slot, Epoch)> {
        self.cells
            .iter()
            .filter(|c| c.state == CellState::CrashLoop)
            .map(|c| (c.service.as_str(), c.slot, c.epoch))
    }

    /// Whether the report proves the node runs no cell of `(service, slot)` at any epoch: it
    /// lists every cell (not truncated) and none of that slot is live.
    pub fn shows_no_live_cell(&self, service: &str, slot: Slot) -> bool {
        !self.truncated()
            && !self
                .cells
                .iter()
                .any(|c| c.service == service && c.slot == slot && c.state.is_live())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::NAME_LEN_MAX;
    use alloc::format;
    use alloc::vec;

    fn worst_cell(i: usize) -> CellReport {
        CellReport {
            cell_id: u32::MAX,
            service: format!("{i:0>width$}", width = NAME_LEN_MAX),
            slot: Slot::MAX,
            epoch: Epoch::MAX,
            state: CellState::CrashLoop,
            restarts: u16::MAX,
            uptime_s: u32::MAX,
            cpu_pct: u8::MAX,
            listening: true,
        }
    }

    fn worst_panic() -> PanicNote {
        PanicNote::panicked(
            u64::MAX,
            u64::MAX,
            Some(u8::MAX),
            u64::MAX,
            &"x".repeat(500),
        )
    }

    #[test]
    fn worst_case_report_fits_the_bound() {
        let cells = (0..REPORT_CELLS_MAX).map(worst_cell).collect();
        let mut report = NodeReport::new(u64::MAX, u64::MAX, u32::MAX, u32::MAX, u64::MAX, cells);
        report.last_panic = Some(worst_panic());
        let bytes = report.encode().unwrap();
        assert!(bytes.len() <= REPORT_BYTES_MAX, "{} bytes", bytes.len());
        // 43 header bytes + 16 x 62 per cell + 73 for the panic note: the bound is tight,
        // keep it that way on purpose.
        assert_eq!(bytes.len(), 1108);
        assert_eq!(NodeReport::decode(&bytes), Ok(report));
    }

    #[test]
    fn panic_notes_are_cut_and_bounded() {
        let PanicNote::Panicked { message, .. } =
            PanicNote::panicked(1, 2, None, 3, &"é".repeat(40))
        else {
            panic!("a panicked note");
        };
        assert!(message.len() <= PANIC_MESSAGE_MAX && message.chars().all(|c| c == 'é'));
        let mut report = NodeReport::new(1, 1, 0, 0, 0, vec![]);
        report.last_panic = Some(PanicNote::CorruptRecord);
        let bytes = report.encode().unwrap();
        assert_eq!(NodeReport::decode(&bytes), Ok(report.clone()));
        // A forged note with a message over the bound is refused both ways.
        report.last_panic = Some(PanicNote::Panicked {
            boot_id: 1,
            uptime_ms: 1,
            vector: None,
            rip_offset: 1,
            message: "y".repeat(PANIC_MESSAGE_MAX + 1),
        });
        assert_eq!(report.encode(), Err(ReportError::Malformed));
        let mut forged = vec![REPORT_FORMAT_V5];
        forged.extend(postcard::to_allocvec(&report).unwrap());
        assert_eq!(NodeReport::decode(&forged), Err(ReportError::Malformed));
    }

    #[test]
    fn typical_report_is_small() {
        let cells = vec![CellReport {
            cell_id: 1,
            service: "web".into(),
            slot: 1,
            epoch: 12,
            state: CellState::Running,
            restarts: 0,
            uptime_s: 3600,
            cpu_pct: 0,
            listening: true,
        }];
        let bytes = NodeReport::new(2, 40, 250, 900, 0, cells).encode().unwrap();
        assert!(bytes.len() < 32, "{}", bytes.len());
    }

    #[test]
    fn big_cell_lists_are_truncated_in_order() {
        let cells: Vec<_> = (0..40).rev().map(worst_cell).collect();
        let report = NodeReport::new(1, 1, 0, 0, 0, cells);
        assert_eq!(report.cells.len(), REPORT_CELLS_MAX);
        assert_eq!(report.cell_count, 40);
        assert!(report.truncated());
        assert!(report.cells.windows(2).all(|w| w[0].service < w[1].service));
        assert!(report.encode().is_ok());
        let mut forged = report.clone();
        forged.cells.push(worst_cell(99));
        assert_eq!(
            forged.encode(),
            Err(ReportError::TooManyCells { count: 17 })
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert_eq!(NodeReport::decode(&[]), Err(ReportError::Empty));
        assert_eq!(
            NodeReport::decode(&[1]),
            Err(ReportError::UnknownFormat { version: 1 })
        );
        assert_eq!(
            NodeReport::decode(&[3]),
            Err(ReportError::UnknownFormat { version: 3 })
        );
        assert_eq!(NodeReport::decode(&[4, 0xff]), Err(ReportError::Malformed));
        assert_eq!(NodeReport::decode(&[5, 0xff]), Err(ReportError::Malformed));
        assert_eq!(
            NodeReport::decode(&[6]),
            Err(ReportError::UnknownFormat { version: 6 })
        );
        assert!(matches!(
            NodeReport::decode(&[4; REPORT_BYTES_MAX + 1]),
            Err(ReportError::TooLarge { .. })
        ));
        // A forged report claiming 17 cells but small enough to pass the byte bound.
        let mut forged = NodeReport::new(1, 1, 0, 0, 0, vec![]);
        forged.cells = (0..17)
            .map(|_| CellReport {
                cell_id: 1,
                service: "a".into(),
                slot: 0,
                epoch: 1,
                state: CellState::Running,
                restarts: 0,
                uptime_s: 0,
                cpu_pct: 0,
                listening: false,
            })
            .collect();
        let mut bytes = vec![REPORT_FORMAT_V5];
        bytes.extend(postcard::to_allocvec(&forged).unwrap());
        assert_eq!(
            NodeReport::decode(&bytes),
            Err(ReportError::TooManyCells { count: 17 })
        );
    }

    /// A format-4 report (the previous image, during an upgrade) still decodes, its cells
    /// counted as listening; one trailing byte or a format-4 body under the format-5 byte
    /// is malformed, not misread.
    #[test]
    fn format_4_reports_decode_as_listening() {
        #[derive(Serialize)]
        struct CellV4<'a> {
            cell_id: u32,
            service: &'a str,
            slot: Slot,
            epoch: Epoch,
            state: CellState,
            restarts: u16,
            uptime_s: u32,
            cpu_pct: u8,
        }
        #[derive(Serialize)]
        struct ReportV4<'a> {
            node: NodeId,
            seq: u64,
            load_milli: u32,
            free_mib: u32,
            applied_index: u64,
            cell_count: u32,
            cells: Vec<CellV4<'a>>,
            last_panic: Option<PanicNote>,
        }
        let old = ReportV4 {
            node: 2,
            seq: 9,
            load_milli: 300,
            free_mib: 700,
            applied_index: 44,
            cell_count: 1,
            cells: vec![CellV4 {
                cell_id: 3,
                service: "web",
                slot: 1,
                epoch: 12,
                state: CellState::Running,
                restarts: 0,
                uptime_s: 5,
                cpu_pct: 7,
            }],
            last_panic: None,
        };
        let mut bytes = vec![REPORT_FORMAT_V4];
        bytes.extend(postcard::to_allocvec(&old).unwrap());
        let report = NodeReport::decode(&bytes).unwrap();
        assert_eq!((report.node, report.seq, report.applied_index), (2, 9, 44));
        assert_eq!(report.cells.len(), 1);
        let cell = &report.cells[0];
        assert!(cell.listening && cell.cpu_pct == 7 && cell.epoch == 12);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(NodeReport::decode(&longer), Err(ReportError::Malformed));
        bytes[0] = REPORT_FORMAT_V5;
        assert_eq!(NodeReport::decode(&bytes), Err(ReportError::Malformed));
        // And the current format keeps `listening` both ways.
        let mut now = report.clone();
        now.cells[0].listening = false;
        assert_eq!(NodeReport::decode(&now.encode().unwrap()), Ok(now));
    }

    #[test]
    fn crashloops_are_listed() {
        let mut cells: Vec<_> = (0..3).map(worst_cell).collect();
        cells[1].state = CellState::Running;
        let report = NodeReport::new(1, 1, 0, 0, 0, cells);
        assert_eq!(report.crashloops().count(), 2);
    }
}
