//! Fabric counters: per directed link and per port, a [`Stats`] snapshot and its
//! human-readable [`Stats::report`].
//!
//! Counting rules (docs/fabric.md repeats them): a frame offered on link a->b ends in exactly
//! one of `forwarded`, `dropped_partition`, `dropped_loss`, `dropped_overflow`,
//! `dropped_unreachable`, or is still in flight (delay queue or egress backlog). A duplicate
//! adds one to `duplicated` and then ends like any other copy. `delayed` counts copies that
//! went through the delay queue.

use std::fmt::Write as _;

use super::mac::Mac;
use super::NodeId;

/// Counters of one directed link `from -> to`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames (original or copy) handed to the destination node's socket.
    pub forwarded: u64,
    pub dropped_partition: u64,
    pub dropped_loss: u64,
    /// Extra copies made by the duplication fault.
    pub duplicated: u64,
    /// Copies that waited in the delay queue.
    pub delayed: u64,
    /// Dropped because the delay queue or the destination's egress backlog was full.
    pub dropped_overflow: u64,
    /// Dropped because the destination node's socket was absent or refused (node not running).
    pub dropped_unreachable: u64,
}

impl LinkStats {
    pub fn add(&mut self, o: &LinkStats) {
        self.forwarded += o.forwarded;
        self.dropped_partition += o.dropped_partition;
        self.dropped_loss += o.dropped_loss;
        self.duplicated += o.duplicated;
        self.delayed += o.delayed;
        self.dropped_overflow += o.dropped_overflow;
        self.dropped_unreachable += o.dropped_unreachable;
    }

    fn is_zero(&self) -> bool {
        *self == LinkStats::default()
    }
}

/// Counters of one port (one node's attachment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub node: NodeId,
    /// Frames received from the node.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Received frames too short to hold an Ethernet header (dropped).
    pub rx_runts: u64,
    /// Unicast frames whose destination lives on the sending port (dropped, as a switch does).
    pub rx_filtered: u64,
    /// Garbage frames handed to the node's socket.
    pub garbage_injected: u64,
    /// Garbage frames lost to a full backlog or an absent node.
    pub garbage_dropped: u64,
    /// Frames injected or replayed onto the node's wire (`Nemesis::inject`, `replay`).
    pub injected: u64,
    /// Socket errors on receive (other than timeouts).
    pub rx_errors: u64,
}

/// A snapshot of every counter.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub seed: u64,
    pub ports: Vec<PortStats>,
    /// Every directed link `(from, to, counters)`, in port order.
    pub links: Vec<(NodeId, NodeId, LinkStats)>,
    pub mac_table: Vec<(Mac, NodeId)>,
    pub mac_table_overflows: u64,
    /// Bytes written to the capture file, if capturing.
    pub capture_bytes: u64,
}

impl Stats {
    /// Counters of link `from -> to`; panics on an unknown pair.
    pub fn link(&self, from: NodeId, to: NodeId) -> LinkStats {
        match self.links.iter().find(|(f, t, _)| (*f, *t) == (from, to)) {
            Some((_, _, s)) => *s,
            None => panic!("fabric: no link {from}->{to}"),
        }
    }

    /// Counters of node `id`'s port; panics on an unknown node.
    pub fn port(&self, id: NodeId) -> PortStats {
        match self.ports.iter().find(|p| p.node == id) {
            Some(p) => *p,
            None => panic!("fabric: no node {id}"),
        }
    }

    /// Sum over all links.
    pub fn total(&self) -> LinkStats {
        let mut t = LinkStats::default();
        self.links.iter().for_each(|(_, _, s)| t.add(s));
        t
    }

    /// A table for humans: one line per port, one per link that saw traffic, and a total.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "fabric report (seed={})", self.seed);
        let _ = writeln!(
            out,
            "  port  rx_frames   rx_bytes  runts filtered  garbage g_drop rx_err"
        );
        for p in &self.ports {
            let _ = writeln!(
                out,
                "  {:>4} {:>10} {:>10} {:>6} {:>8} {:>8} {:>6} {:>6}",
                p.node,
                p.rx_frames,
                p.rx_bytes,
                p.rx_runts,
                p.rx_filtered,
                p.garbage_injected,
                p.garbage_dropped,
                p.rx_errors
            );
        }
        let _ = writeln!(
            out,
            "  link        forwarded  drop_part  drop_loss  duplicated    delayed  overflow  unreach"
        );
        for (f, t, s) in self.links.iter().filter(|(_, _, s)| !s.is_zero()) {
            write_link(&mut out, &format!("{f}->{t}"), s);
        }
        write_link(&mut out, "total", &self.total());
        let macs: Vec<String> = self
            .mac_table
            .iter()
            .map(|(m, n)| format!("{m}@{n}"))
            .collect();
        let _ = writeln!(
            out,
            "  macs: {} (overflows {})",
            macs.join(" "),
            self.mac_table_overflows
        );
        if self.capture_bytes > 0 {
            let _ = writeln!(out, "  capture: {} bytes", self.capture_bytes);
        }
        out
    }
}

fn write_link(out: &mut String, name: &str, s: &LinkStats) {
    let _ = writeln!(
        out,
        "  {:<10} {:>10} {:>10} {:>10} {:>11} {:>10} {:>9} {:>8}",
        name,
        s.forwarded,
        s.dropped_partition,
        s.dropped_loss,
        s.duplicated,
        s.delayed,
        s.dropped_overflow,
        s.dropped_unreachable
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_lookup_and_report() {
        let a = LinkStats {
            forwarded: 3,
            dropped_loss: 1,
            ..LinkStats::default()
        };
        let b = LinkStats {
            forwarded: 2,
            duplicated: 1,
            ..LinkStats::default()
        };
        let s = Stats {
            seed: 99,
            ports: vec![PortStats {
                node: 1,
                ..PortStats::default()
            }],
            links: vec![(1, 2, a), (2, 1, b), (1, 3, LinkStats::default())],
            ..Stats::default()
        };
        assert_eq!(s.link(2, 1), b);
        assert_eq!(s.total().forwarded, 5);
        assert_eq!(s.port(1).node, 1);
        let r = s.report();
        assert!(
            r.contains("seed=99") && r.contains("1->2") && r.contains("2->1"),
            "{r}"
        );
        assert!(!r.contains("1->3"), "idle links are left out: {r}");
    }
}
