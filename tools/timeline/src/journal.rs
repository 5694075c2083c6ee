//! The harness journal: what the host did to a cluster, in the node event-line format.
//!
//! The harness is the only one who knows when it sent SIGKILL or cut the network, and the
//! only one who can relate a node's boot clock to the host's. It appends to `harness.log`
//! in the run directory, one line per act, with `t_us` = host microseconds since the
//! journal was created and `node=harness`:
//!
//! | kind | fields | meaning |
//! |---|---|---|
//! | `run_start` | `unix_us` | the journal's epoch on the wall clock |
//! | `clock` | `target incarnation guest_us rtt_us` | the node's clock read `guest_us` at host time `t_us` (midpoint of an `uptime` round trip of `rtt_us`) |
//! | `signal` | `target incarnation signal` | `SIGKILL`, `SIGSTOP` or `SIGCONT` sent to the node's QEMU |
//! | `restart` | `target incarnation` | a new QEMU for the node (incarnation ≥ 1) was started |
//! | `nemesis` | `action` + action fields | a fabric fault: `partition groups=1,3\|2`, `isolate node=2`, `block from=1 to=2`, `unblock …`, `heal`, `loss link=… pct=…`, `clear_faults`, `garbage …`, `reset` |
//!
//! Node names are the nodes' own (`worker-1`); the fabric speaks in node ids, which the
//! boot events map to names.

use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The journal's file name inside a run directory.
pub const FILE_NAME: &str = "harness.log";
/// The `node=` of every journal line.
pub const WRITER: &str = "harness";

/// Journal kinds.
pub mod kind {
    pub const RUN_START: &str = "run_start";
    pub const CLOCK: &str = "clock";
    pub const SIGNAL: &str = "signal";
    pub const RESTART: &str = "restart";
    pub const NEMESIS: &str = "nemesis";
}

/// An append-only journal shared by the harness's threads.
#[derive(Debug)]
pub struct Journal {
    epoch: Instant,
    path: PathBuf,
    file: Mutex<File>,
}

impl Journal {
    /// Creates (truncates) `dir/harness.log` and writes its `run_start` line.
    pub fn create(dir: &Path) -> io::Result<Journal> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        let journal = Journal {
            epoch: Instant::now(),
            path,
            file: Mutex::new(file),
        };
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        journal.record(journal.epoch, kind::RUN_START, &[("unix_us", &unix_us)]);
        Ok(journal)
    }

    /// Where the journal is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Host microseconds from the epoch to `at` (0 for instants before it).
    pub fn host_us(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// The instant `host_us` microseconds after the epoch.
    pub fn instant(&self, host_us: u64) -> Instant {
        self.epoch + std::time::Duration::from_micros(host_us)
    }

    /// Appends one line. Values are written with whitespace replaced by `_`, so every line
    /// parses. A failed write is reported on stderr and otherwise ignored: the journal
    /// explains a run, it must never fail one.
    pub fn record(&self, at: Instant, kind: &str, fields: &[(&str, &dyn Display)]) {
        let mut line = format!("t_us={} node={WRITER} kind={kind}", self.host_us(at));
        for (key, value) in fields {
            let value: String = value
                .to_string()
                .chars()
                .map(|c| if c.is_whitespace() { '_' } else { c })
                .collect();
            line.push_str(&format!(" {key}={value}"));
        }
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(line.as_bytes()) {
            eprintln!("journal {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::parse_log;

    #[test]
    fn journal_lines_parse_as_events() {
        let dir = std::env::temp_dir().join(format!("xylem-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let journal = Journal::create(&dir).unwrap();
        let later = Instant::now() + std::time::Duration::from_millis(5);
        journal.record(
            later,
            kind::SIGNAL,
            &[("target", &"worker-2"), ("signal", &"SIG KILL")],
        );
        let log = parse_log(&std::fs::read_to_string(journal.path()).unwrap());
        assert_eq!(log.garbage, 0);
        assert_eq!(log.events.len(), 2);
        assert_eq!(log.events[0].kind, kind::RUN_START);
        assert!(log.events[0].get_u64("unix_us").unwrap() > 0);
        let signal = &log.events[1];
        assert_eq!(signal.node, WRITER);
        assert_eq!(signal.get("signal"), Some("SIG_KILL"));
        assert!(signal.t_us >= 5000, "{}", signal.t_us);
        assert_eq!(journal.host_us(journal.instant(1234)), 1234);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
