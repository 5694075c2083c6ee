//! A run directory on disk: every node incarnation's COM2 log and the harness journal.
//!
//! The harness lays a cluster run out as `<run>/<node>/events.log` for the first boot of
//! each node, `<run>/restart-<N>/<node>/events.log` for its N-th restart, and
//! `<run>/harness.log` (see [`crate::journal`]). [`load`] reads all of it; [`latest_run`]
//! finds the newest run under `target/xylem/`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::journal;
use crate::log::{parse_log, ParsedLog};

/// The COM2 log file name in a node directory.
pub const EVENTS_FILE: &str = "events.log";
/// QEMU's stderr file, created just before QEMU starts (its mtime dates the start when
/// nothing better is known).
pub const QEMU_STDERR_FILE: &str = "qemu.stderr";

/// One boot of one node.
#[derive(Clone, Debug)]
pub struct NodeLog {
    /// The node's name (its directory's name).
    pub name: String,
    /// 0 for the first boot, N for `restart-N`.
    pub incarnation: u32,
    /// The directory holding its files.
    pub dir: PathBuf,
    pub log: ParsedLog,
    /// When QEMU was started, on the wall clock (µs since the Unix epoch), if known.
    pub started_unix_us: Option<i64>,
}

/// Everything recorded about one run.
#[derive(Clone, Debug)]
pub struct RunLogs {
    pub dir: PathBuf,
    /// Sorted by (name, incarnation).
    pub nodes: Vec<NodeLog>,
    /// The harness journal, if the run has one.
    pub journal: Option<ParsedLog>,
}

/// Why a run could not be read.
#[derive(Debug)]
pub enum RunError {
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// No `<node>/events.log` under the directory.
    NoLogs { dir: PathBuf },
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            RunError::NoLogs { dir } => write!(
                f,
                "{} holds no <node>/{EVENTS_FILE}: not a cluster run directory",
                dir.display()
            ),
        }
    }
}

impl std::error::Error for RunError {}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |error| RunError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// `restart-N` → N.
fn restart_number(name: &str) -> Option<u32> {
    name.strip_prefix("restart-")?.parse().ok()
}

/// Node directories directly under `dir` (those holding an events.log).
fn node_dirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, RunError> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        if path.join(EVENTS_FILE).is_file() {
            found.push((entry.file_name().to_string_lossy().into_owned(), path));
        }
    }
    found.sort();
    Ok(found)
}

fn unix_us(time: SystemTime) -> Option<i64> {
    i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_micros()).ok()
}

fn read_node(name: String, incarnation: u32, dir: PathBuf) -> Result<NodeLog, RunError> {
    let path = dir.join(EVENTS_FILE);
    let bytes = fs::read(&path).map_err(io(&path))?;
    // A log may hold binary garbage (a torn write); it is counted, not fatal.
    let log = parse_log(&String::from_utf8_lossy(&bytes));
    let started_unix_us = fs::metadata(dir.join(QEMU_STDERR_FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(unix_us);
    Ok(NodeLog {
        name,
        incarnation,
        dir,
        log,
        started_unix_us,
    })
}

/// Reads a run directory.
pub fn load(dir: &Path) -> Result<RunLogs, RunError> {
    let mut nodes = Vec::new();
    for (name, path) in node_dirs(dir)? {
        nodes.push(read_node(name, 0, path)?);
    }
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let Some(n) = restart_number(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        for (name, path) in node_dirs(&entry.path())? {
            nodes.push(read_node(name, n, path)?);
        }
    }
    if nodes.is_empty() {
        return Err(RunError::NoLogs {
            dir: dir.to_path_buf(),
        });
    }
    nodes.sort_by(|a, b| (&a.name, a.incarnation).cmp(&(&b.name, b.incarnation)));
    let journal_path = dir.join(journal::FILE_NAME);
    let journal = if journal_path.is_file() {
        let bytes = fs::read(&journal_path).map_err(io(&journal_path))?;
        Some(parse_log(&String::from_utf8_lossy(&bytes)))
    } else {
        None
    };
    Ok(RunLogs {
        dir: dir.to_path_buf(),
        nodes,
        journal,
    })
}

/// The newest run directory under `root` (searched three levels deep): a directory with
/// node directories, dated by its newest events.log.
pub fn latest_run(root: &Path) -> Option<PathBuf> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut newest_log = None;
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Ok(modified) = fs::metadata(path.join(EVENTS_FILE)).and_then(|m| m.modified()) {
                newest_log = newest_log.max(Some(modified));
            } else if depth < 3 && restart_number(&name).is_none() {
                stack.push((path, depth + 1));
            }
        }
        if let Some(t) = newest_log {
            if best.as_ref().is_none_or(|(b, _)| t > *b) {
                best = Some((t, dir));
            }
        }
    }
    best.map(|(_, dir)| dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xylem-run-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    #[test]
    fn loads_first_boots_restarts_and_the_journal() {
        let dir = scratch("load");
        write(
            &dir.join("worker-1/events.log"),
            "t_us=1 node=worker-1 kind=boot id=1\n",
        );
        write(
            &dir.join("worker-2/events.log"),
            "t_us=1 node=worker-2 kind=boot id=2\nxx\n",
        );
        write(&dir.join("worker-2/qemu.stderr"), "");
        write(
            &dir.join("restart-1/worker-2/events.log"),
            "t_us=5 node=worker-2 kind=boot id=2\n",
        );
        write(
            &dir.join("harness.log"),
            "t_us=0 node=harness kind=run_start unix_us=1\n",
        );
        write(&dir.join("not-a-node/readme"), "");
        let run = load(&dir).unwrap();
        let names: Vec<_> = run
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.incarnation))
            .collect();
        assert_eq!(names, [("worker-1", 0), ("worker-2", 0), ("worker-2", 1)]);
        assert_eq!(run.nodes[1].log.garbage, 1);
        assert!(run.nodes[1].started_unix_us.is_some());
        assert!(run.nodes[0].started_unix_us.is_none());
        assert_eq!(run.journal.unwrap().events.len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_without_logs_is_an_error() {
        let dir = scratch("empty");
        assert!(matches!(load(&dir), Err(RunError::NoLogs { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn latest_run_picks_the_newest_cluster_directory() {
        let root = scratch("latest");
        write(&root.join("test/old/worker-1/events.log"), "");
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&root.join("test/new/worker-1/events.log"), "");
        // A restart directory is part of its run, never a run of its own.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&root.join("test/old/restart-1/worker-1/events.log"), "");
        assert_eq!(latest_run(&root), Some(root.join("test/new")));
        assert_eq!(latest_run(&root.join("nothing-here")), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
