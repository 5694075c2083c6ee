//! The fabric: a virtual L2 switch the QEMU nodes plug into, and the nemesis that breaks it.
//!
//! Each node's NIC is a QEMU `-netdev dgram` backend over unix sockets: the guest's frames
//! arrive one per datagram at `<dir>/switch<N>.sock` (sent from `<dir>/node<N>.sock`, which
//! QEMU binds), and the fabric delivers a frame to node N by sending a datagram to
//! `<dir>/node<N>.sock`. [`Fabric::qemu_args`] spells out the QEMU flags. See docs/fabric.md.
//!
//! Key types:
//! - [`Fabric`]: owns the sockets and threads (one receiver per port plus one scheduler);
//!   dropping it stops every thread (bounded by `poll_ms`) and unlinks its sockets.
//! - [`Nemesis`]: a cloneable handle for scenario code: partitions, blocks, loss, delay with
//!   jitter, duplication, garbage injection. Also reads [`Stats`].
//! - [`FabricConfig`]: the knobs, with documented defaults.
//!
//! Determinism: every random choice comes from a Xoshiro256PlusPlus stream derived from the
//! fabric seed, one per directed link (fault decisions) and one per port (garbage bytes); see
//! `rules.rs`. Wall-clock timing (when QEMU sends, when the scenario flips a fault) is not
//! under the fabric's control, but the n-th frame on a link always meets the same numbers.
//!
//! Neighbours: xtask's cluster runner starts QEMU and a `Fabric`; scenarios in tests/qemu/
//! drive the `Nemesis`. Modules: `switch` (engine and threads), `rules` (faults), `mac`
//! (learning table), `timer` (delay queue), `garbage`, `stats`, `pcap`.

// The lead wires this API into main.rs; until then parts of it have no caller.
#![allow(dead_code)]

mod garbage;
mod mac;
mod pcap;
pub mod replay;
mod rules;
mod stats;
mod switch;
#[cfg(test)]
mod tests;
mod timer;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use timeline::journal::{self, Journal};

// The public surface for xtask's scenario code; some of it has no caller yet.
#[allow(unused_imports)]
pub use {
    mac::Mac,
    pcap::read_frames as read_pcap_frames,
    rules::Link,
    stats::{LinkStats, PortStats, Stats},
};

use garbage::GarbageJob;
use mac::MacTable;
use rules::{pct_to_ppm, Delay, Rules};
use switch::{Event, Port, Shared, State};
use timer::TimerQueue;

/// A node's number, as in `node<N>.sock` and in partition groups.
pub type NodeId = u32;

/// Unix socket paths must fit `sockaddr_un.sun_path` (108 bytes with the terminating NUL).
const UNIX_PATH_BYTES_MAX: usize = 107;

/// Fabric settings. [`FabricConfig::new`] fills in the defaults documented on each field.
#[derive(Clone, Debug)]
pub struct FabricConfig {
    /// Run directory holding the sockets (created if missing).
    pub dir: PathBuf,
    /// One port per node, in this order. At least one; no duplicates.
    pub nodes: Vec<NodeId>,
    /// Seed of every random decision. Logged at start.
    pub seed: u64,
    /// Receive buffer per port; longer datagrams are truncated. Default 69632 (QEMU's
    /// largest network packet, NET_BUFSIZE 4096 + 65536).
    pub frame_bytes_max: usize,
    /// Frames per destination waiting for room in its socket (the kernel queues only
    /// `net.unix.max_dgram_qlen`, 10 by default). Default 1024; overflow is counted.
    pub backlog_frames_max: usize,
    /// Delayed frames plus garbage jobs in flight. Default 65536; overflow is counted.
    pub delay_queue_frames_max: usize,
    /// Learned MAC addresses. Default 1024.
    pub mac_table_entries_max: usize,
    /// Receive timeout of the port threads, which bounds shutdown latency. Default 20 ms.
    pub poll_ms: u64,
    /// Write a pcap file of every frame entering the fabric. Default: off.
    pub capture_path: Option<PathBuf>,
    /// Capture file size cap. Default 64 MiB.
    pub capture_bytes_max: u64,
    /// The run's harness journal: every nemesis act is recorded there (for timelines).
    /// Default: none.
    pub journal: Option<Arc<Journal>>,
}

impl FabricConfig {
    pub fn new(dir: impl Into<PathBuf>, nodes: &[NodeId], seed: u64) -> FabricConfig {
        FabricConfig {
            dir: dir.into(),
            nodes: nodes.to_vec(),
            seed,
            frame_bytes_max: 69_632,
            backlog_frames_max: 1024,
            delay_queue_frames_max: 65_536,
            mac_table_entries_max: 1024,
            poll_ms: 20,
            capture_path: None,
            capture_bytes_max: 64 << 20,
            journal: None,
        }
    }
}

/// Why the fabric could not start.
#[derive(Debug)]
pub enum FabricError {
    NoNodes,
    DuplicateNode(NodeId),
    /// A socket path does not fit in `sockaddr_un`; use a shorter run directory.
    PathTooLong(PathBuf),
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl fmt::Display for FabricError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FabricError::NoNodes => write!(f, "fabric needs at least one node"),
            FabricError::DuplicateNode(id) => write!(f, "node {id} listed twice"),
            FabricError::PathTooLong(p) => {
                write!(
                    f,
                    "socket path too long ({} > {UNIX_PATH_BYTES_MAX} bytes): {}",
                    p.as_os_str().len(),
                    p.display()
                )
            }
            FabricError::Io { what, path, source } => {
                write!(f, "{what} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for FabricError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FabricError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Which ports garbage goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Node(NodeId),
    All,
}

/// Path of the socket the fabric binds for node `id`.
pub fn switch_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("switch{id}.sock"))
}

/// Path of the socket QEMU binds for node `id`.
pub fn node_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node{id}.sock"))
}

/// The running switch. Dropping it stops it (see [`Fabric::shutdown`]).
pub struct Fabric {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    dir: PathBuf,
    nodes: Vec<NodeId>,
    journal: Option<Arc<Journal>>,
}

impl Fabric {
    /// Bind `switch<N>.sock` for every node and start the threads.
    pub fn start(config: FabricConfig) -> Result<Fabric, FabricError> {
        validate(&config)?;
        fs::create_dir_all(&config.dir).map_err(|source| FabricError::Io {
            what: "create run dir",
            path: config.dir.clone(),
            source,
        })?;
        let bound = config
            .nodes
            .iter()
            .map(|&id| bind_switch_socket(&config, id))
            .collect();
        let (sockets, state): (Vec<UnixDatagram>, State) = match (bound, new_state(&config)) {
            (Ok(bound), Ok(state)) => (bound, state),
            (Err(e), _) | (_, Err(e)) => {
                // Leave no socket file behind from a half-started fabric.
                for &id in &config.nodes {
                    let _ = fs::remove_file(switch_path(&config.dir, id));
                }
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            seed: config.seed,
        });
        eprintln!(
            "fabric: {} nodes in {} seed={} (reproduce with seed={})",
            config.nodes.len(),
            config.dir.display(),
            config.seed,
            config.seed
        );
        let mut fabric = Fabric {
            shared,
            threads: Vec::new(),
            dir: config.dir.clone(),
            nodes: config.nodes.clone(),
            journal: config.journal.clone(),
        };
        for (port, sock) in sockets.into_iter().enumerate() {
            let shared = Arc::clone(&fabric.shared);
            let frame_bytes_max = config.frame_bytes_max;
            fabric.spawn(format!("fabric-rx{}", config.nodes[port]), move || {
                switch::receiver_loop(shared, port, sock, frame_bytes_max)
            })?;
        }
        let shared = Arc::clone(&fabric.shared);
        fabric.spawn("fabric-sched".to_string(), move || {
            switch::scheduler_loop(shared)
        })?;
        Ok(fabric)
    }

    fn spawn(
        &mut self,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), FabricError> {
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(body)
            .map_err(|source| FabricError::Io {
                what: "spawn thread for",
                path: self.dir.clone(),
                source,
            })?;
        self.threads.push(handle);
        Ok(())
    }

    /// A handle for scenario code; clones share the same fabric.
    pub fn nemesis(&self) -> Nemesis {
        Nemesis {
            shared: Arc::clone(&self.shared),
            journal: self.journal.clone(),
        }
    }

    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    pub fn nodes(&self) -> &[NodeId] {
        &self.nodes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> Stats {
        self.nemesis().stats()
    }

    pub fn report(&self) -> String {
        self.stats().report()
    }

    /// QEMU arguments attaching node `id` to this fabric with a virtio-net NIC whose netdev is
    /// called `fabric`: `-netdev dgram,...` and `-device virtio-net-pci,...`.
    pub fn qemu_args(&self, id: NodeId, mac: Mac) -> Vec<String> {
        assert!(self.nodes.contains(&id), "fabric: unknown node {id}");
        qemu_args(&self.dir, id, mac)
    }

    /// Stop every thread, unlink the switch sockets and return the final counters. Bounded:
    /// the receivers notice within `poll_ms`, the scheduler at once.
    pub fn shutdown(mut self) -> Stats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        {
            // Set the flag under the lock: the scheduler checks it under the lock before it
            // sleeps, so the notify below cannot fall between its check and its wait.
            let _state = self.shared.lock();
            self.shared.stop.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let name = t.thread().name().unwrap_or("?").to_string();
            if t.join().is_err() {
                eprintln!("fabric: thread {name} panicked");
            }
        }
        for &id in &self.nodes {
            let _ = fs::remove_file(switch_path(&self.dir, id));
        }
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The flags that attach node `id` (see [`Fabric::qemu_args`]).
pub fn qemu_args(dir: &Path, id: NodeId, mac: Mac) -> Vec<String> {
    let netdev = format!(
        "dgram,id=fabric,local.type=unix,local.path={},remote.type=unix,remote.path={}",
        node_path(dir, id).display(),
        switch_path(dir, id).display()
    );
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        format!("virtio-net-pci,netdev=fabric,mac={mac}"),
    ]
}

fn validate(config: &FabricConfig) -> Result<(), FabricError> {
    if config.nodes.is_empty() {
        return Err(FabricError::NoNodes);
    }
    for (i, id) in config.nodes.iter().enumerate() {
        if config.nodes[..i].contains(id) {
            return Err(FabricError::DuplicateNode(*id));
        }
        for path in [switch_path(&config.dir, *id), node_path(&config.dir, *id)] {
            if path.as_os_str().len() > UNIX_PATH_BYTES_MAX {
                return Err(FabricError::PathTooLong(path));
            }
        }
    }
    assert!(config.frame_bytes_max >= mac::ETH_HEADER_BYTES && config.poll_ms > 0);
    assert!(config.backlog_frames_max > 0 && config.delay_queue_frames_max > 0);
    Ok(())
}

fn bind_switch_socket(config: &FabricConfig, id: NodeId) -> Result<UnixDatagram, FabricError> {
    let path = switch_path(&config.dir, id);
    // A socket file left by a run that crashed would make bind fail with EADDRINUSE.
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FabricError::Io {
                what: "remove stale",
                path,
                source,
            })
        }
    }
    let sock = UnixDatagram::bind(&path).map_err(|source| FabricError::Io {
        what: "bind",
        path: path.clone(),
        source,
    })?;
    sock.set_read_timeout(Some(Duration::from_millis(config.poll_ms)))
        .map_err(|source| FabricError::Io {
            what: "set read timeout on",
            path,
            source,
        })?;
    Ok(sock)
}

fn new_state(config: &FabricConfig) -> Result<State, FabricError> {
    let mut ports = Vec::with_capacity(config.nodes.len());
    for &id in &config.nodes {
        let path = node_path(&config.dir, id);
        let port = Port::new(id, path.clone(), config.seed).map_err(|source| FabricError::Io {
            what: "create send socket for",
            path,
            source,
        })?;
        ports.push(port);
    }
    let capture = match &config.capture_path {
        None => None,
        Some(path) => Some(
            pcap::PcapWriter::create(path, config.capture_bytes_max).map_err(|source| {
                FabricError::Io {
                    what: "create capture",
                    path: path.clone(),
                    source,
                }
            })?,
        ),
    };
    let n = config.nodes.len();
    Ok(State {
        ports,
        rules: Rules::new(&config.nodes, config.seed),
        macs: MacTable::new(config.mac_table_entries_max),
        timers: TimerQueue::new(config.delay_queue_frames_max),
        links: vec![LinkStats::default(); n * n],
        capture,
        backlog_frames_max: config.backlog_frames_max,
        garbage_job_next: 0,
        recorder: None,
    })
}

/// Fault injection for a running [`Fabric`]. Cheap to clone; every method takes effect for
/// the next frame. Unknown node ids panic (they are scenario bugs).
#[derive(Clone)]
pub struct Nemesis {
    shared: Arc<Shared>,
    journal: Option<Arc<Journal>>,
}

/// `all` or `1->2`: the journal's spelling of a link.
fn link_text(link: Link) -> String {
    match link {
        Link::All => "all".into(),
        Link::Directed { from, to } => format!("{from}->{to}"),
    }
}

/// `1,3|2` for `&[&[1, 3], &[2]]`: the journal's spelling of partition groups.
fn groups_text(groups: &[&[NodeId]]) -> String {
    groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect::<Vec<_>>()
        .join("|")
}

impl Nemesis {
    /// Records a fault in the run's journal (when the fabric has one).
    fn note(&self, action: &str, fields: &[(&str, &dyn fmt::Display)]) {
        if let Some(journal) = &self.journal {
            let mut all: Vec<(&str, &dyn fmt::Display)> = vec![("action", &action)];
            all.extend_from_slice(fields);
            journal.record(Instant::now(), journal::kind::NEMESIS, &all);
        }
    }

    /// Frames flow only within a group, e.g. `partition(&[&[1], &[2, 3]])`. Nodes named in no
    /// group are alone. Replaces any earlier partition or block.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        self.note("partition", &[("groups", &groups_text(groups))]);
        self.shared.lock().rules.partition(groups);
    }

    /// Cut node `id` off from all others, both directions.
    pub fn isolate(&self, id: NodeId) {
        self.note("isolate", &[("node", &id)]);
        self.shared.lock().rules.isolate(id);
    }

    /// Cut the one directed link `from -> to` (asymmetric partition); adds to the current cuts.
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.note("block", &[("from", &from), ("to", &to)]);
        self.shared.lock().rules.set_blocked(from, to, true);
    }

    pub fn unblock(&self, from: NodeId, to: NodeId) {
        self.note("unblock", &[("from", &from), ("to", &to)]);
        self.shared.lock().rules.set_blocked(from, to, false);
    }

    /// Remove every partition and block. Loss, delay, duplication and garbage stay.
    pub fn heal(&self) {
        self.note("heal", &[]);
        self.shared.lock().rules.heal();
    }

    /// Drop `pct` percent (0.0..=100.0) of frames on `link`.
    pub fn set_loss_pct(&self, link: Link, pct: f64) {
        self.note("loss", &[("link", &link_text(link)), ("pct", &pct)]);
        self.shared.lock().rules.set_loss_ppm(link, pct_to_ppm(pct));
    }

    /// Deliver a second copy of `pct` percent of frames on `link` (the copy gets its own jitter).
    pub fn set_duplicate_pct(&self, link: Link, pct: f64) {
        self.note("duplicate", &[("link", &link_text(link)), ("pct", &pct)]);
        self.shared.lock().rules.set_dup_ppm(link, pct_to_ppm(pct));
    }

    /// Delay frames on `link` by `delay_ms` plus uniform jitter in `[-jitter_ms, +jitter_ms]`
    /// (clamped at 0). Frames leave in order of due time, so jitter reorders.
    pub fn set_delay_ms(&self, link: Link, delay_ms: u64, jitter_ms: u64) {
        self.note(
            "delay",
            &[
                ("link", &link_text(link)),
                ("delay_ms", &delay_ms),
                ("jitter_ms", &jitter_ms),
            ],
        );
        let delay = Delay {
            delay_us: delay_ms * 1_000,
            jitter_us: jitter_ms * 1_000,
        };
        self.shared.lock().rules.set_delay(link, delay);
    }

    /// Remove loss, delay and duplication everywhere (partitions stay).
    pub fn clear_faults(&self) {
        self.note("clear_faults", &[]);
        self.shared.lock().rules.clear_faults();
    }

    /// Send `rate_per_s` garbage frames per second to the target node(s) for `duration`.
    /// Garbage goes straight onto the node's wire: partitions and loss do not apply.
    pub fn inject_garbage(&self, target: Target, rate_per_s: u32, duration: Duration) {
        let target_text = match target {
            Target::Node(id) => id.to_string(),
            Target::All => "all".into(),
        };
        self.note(
            "garbage",
            &[
                ("node", &target_text),
                ("rate_per_s", &rate_per_s),
                ("duration_ms", &duration.as_millis()),
            ],
        );
        let now_us = self.shared.now_us();
        let duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        let mut state = self.shared.lock();
        let ports: Vec<usize> = match target {
            Target::Node(id) => vec![state.rules.port(id)],
            Target::All => (0..state.ports.len()).collect(),
        };
        for port in ports {
            let job_id = state.garbage_job_next;
            state.garbage_job_next += 1;
            let job = GarbageJob::new(port, rate_per_s, duration_us, now_us, job_id);
            let frames = job.remaining;
            if state.timers.push(now_us, Event::Garbage(job)).is_err() {
                state.ports[port].stats.garbage_dropped += frames;
            }
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// Cancel every garbage job still running.
    pub fn stop_garbage(&self) {
        self.note("stop_garbage", &[]);
        self.shared
            .lock()
            .timers
            .retain(|e| !matches!(e, Event::Garbage(_)));
    }

    /// Back to a healthy network: heal, clear faults, stop garbage.
    pub fn reset(&self) {
        self.note("reset", &[]);
        self.heal();
        self.clear_faults();
        self.stop_garbage();
    }

    /// The node ids, in port order.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.shared.lock().ports.iter().map(|p| p.node).collect()
    }

    pub fn stats(&self) -> Stats {
        self.shared.lock().snapshot(self.shared.seed)
    }

    pub fn report(&self) -> String {
        self.stats().report()
    }
}
