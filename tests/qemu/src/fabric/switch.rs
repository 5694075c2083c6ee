//! The switch engine: the shared state behind one mutex, the per-port receive threads and the
//! scheduler thread (delay queue, garbage pacing, egress retries).
//!
//! Data path of one frame received on port `p` (all under the state lock, in this order):
//! 1. capture it (if capturing) and count it on the port;
//! 2. drop runts (shorter than an Ethernet header);
//! 3. learn the source MAC on `p`;
//! 4. pick the egress ports (unicast to a learned port, else flood to all but `p`);
//! 5. per egress port, ask [`Rules::decide`] for a verdict on link `p -> q`;
//! 6. deliver now, or push the frame (and any duplicate) into the delay queue.
//!
//! Delivery sends from a non-blocking unbound socket per destination port, so a node that stops
//! reading (paused or saturated QEMU) only fills its own bounded backlog, never stalls the
//! others. QEMU's dgram backend accepts datagrams from any sender (verified with QEMU 7.2).

use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand_xoshiro::Xoshiro256PlusPlus;

use super::garbage::{garbage_frame, GarbageJob};
use super::mac::{Egress, Mac, MacTable, ETH_HEADER_BYTES};
use super::pcap::PcapWriter;
use super::rules::{stream_rng, Rules, Verdict, STREAM_GARBAGE};
use super::stats::{LinkStats, PortStats, Stats};
use super::NodeId;

/// The scheduler sleeps at most this long when it has nothing to do (a notify wakes it early).
const SCHEDULER_IDLE_MS: u64 = 100;
/// While some egress backlog is non-empty the scheduler retries this often.
const BACKLOG_RETRY_US: u64 = 500;
/// Events handled per scheduler pass before it re-checks the stop flag.
const EVENTS_PER_PASS_MAX: usize = 10_000;

/// A frame waiting for its destination socket to have room. `from` is `None` for garbage.
struct Pending {
    from: Option<usize>,
    frame: Vec<u8>,
}

/// Something the scheduler does at a due time.
pub enum Event {
    /// A delayed copy of a frame on link `from -> to`.
    Frame {
        from: usize,
        to: usize,
        frame: Vec<u8>,
    },
    /// The next frame of a garbage job.
    Garbage(GarbageJob),
}

pub struct Port {
    pub node: NodeId,
    pub node_path: PathBuf,
    tx: UnixDatagram,
    backlog: VecDeque<Pending>,
    pub stats: PortStats,
    garbage_rng: Xoshiro256PlusPlus,
}

impl Port {
    pub fn new(node: NodeId, node_path: PathBuf, seed: u64) -> io::Result<Port> {
        let tx = UnixDatagram::unbound()?;
        tx.set_nonblocking(true)?;
        Ok(Port {
            node,
            node_path,
            tx,
            backlog: VecDeque::new(),
            stats: PortStats {
                node,
                ..PortStats::default()
            },
            garbage_rng: stream_rng(seed, STREAM_GARBAGE, node, 0),
        })
    }
}

/// Everything the threads and the nemesis handle share, behind one lock.
pub struct State {
    pub ports: Vec<Port>,
    pub rules: Rules,
    pub macs: MacTable,
    pub timers: super::timer::TimerQueue<Event>,
    /// `links[from * n + to]`.
    pub links: Vec<LinkStats>,
    pub capture: Option<PcapWriter>,
    pub backlog_frames_max: usize,
    pub garbage_job_next: u64,
    /// Frames being recorded (`Nemesis::start_recording`).
    pub recorder: Option<super::replay::Recorder>,
}

pub struct Shared {
    pub state: Mutex<State>,
    /// Wakes the scheduler when the delay queue or a backlog changes, or on shutdown.
    pub wake: Condvar,
    pub stop: AtomicBool,
    pub started: Instant,
    pub seed: u64,
}

impl Shared {
    /// Lock the state. A poisoned lock means a fabric thread panicked; the counters are still
    /// meaningful for the report, so carry on rather than panic a second time.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

impl State {
    fn n(&self) -> usize {
        self.ports.len()
    }

    /// Steps 1-6 of the module doc for one received frame. Returns whether the scheduler
    /// must be woken (something entered the delay queue or a backlog).
    pub fn on_frame(&mut self, ingress: usize, frame: &[u8], now_us: u64) -> bool {
        self.capture(frame);
        if let Some(recorder) = self.recorder.as_mut() {
            recorder.record(ingress, frame);
        }
        let port = &mut self.ports[ingress].stats;
        port.rx_frames += 1;
        port.rx_bytes += frame.len() as u64;
        if frame.len() < ETH_HEADER_BYTES {
            port.rx_runts += 1;
            return false;
        }
        self.macs.learn(Mac::src_of(frame), ingress);
        let mut wake = false;
        match self.macs.egress(ingress, Mac::dst_of(frame)) {
            Egress::Filter => self.ports[ingress].stats.rx_filtered += 1,
            Egress::Unicast(to) => wake |= self.offer(ingress, to, frame, now_us),
            Egress::Flood => {
                for to in (0..self.n()).filter(|&q| q != ingress) {
                    wake |= self.offer(ingress, to, frame, now_us);
                }
            }
        }
        wake
    }

    /// Step 5-6 for one egress port.
    fn offer(&mut self, from: usize, to: usize, frame: &[u8], now_us: u64) -> bool {
        assert_ne!(from, to);
        let link = from * self.n() + to;
        match self.rules.decide(from, to) {
            Verdict::DropPartition => self.links[link].dropped_partition += 1,
            Verdict::DropLoss => self.links[link].dropped_loss += 1,
            Verdict::Deliver {
                delay_us,
                copy_delay_us,
            } => {
                let mut wake = self.send_after(from, to, frame.to_vec(), delay_us, now_us);
                if let Some(copy_us) = copy_delay_us {
                    self.links[link].duplicated += 1;
                    wake |= self.send_after(from, to, frame.to_vec(), copy_us, now_us);
                }
                return wake;
            }
        }
        false
    }

    fn send_after(
        &mut self,
        from: usize,
        to: usize,
        frame: Vec<u8>,
        delay_us: u64,
        now_us: u64,
    ) -> bool {
        if delay_us == 0 {
            return self.deliver(Some(from), to, frame);
        }
        let link = from * self.n() + to;
        match self
            .timers
            .push(now_us + delay_us, Event::Frame { from, to, frame })
        {
            Ok(()) => self.links[link].delayed += 1,
            Err(_) => self.links[link].dropped_overflow += 1,
        }
        true
    }

    /// Hand a frame to port `to`'s node socket, or queue it behind earlier frames that are
    /// still waiting for room. Returns whether a backlog is now non-empty.
    fn deliver(&mut self, from: Option<usize>, to: usize, frame: Vec<u8>) -> bool {
        // Every delivery is also a chance to drain the backlog, so a burst does not wait for
        // the scheduler's retry tick alone.
        if !self.ports[to].backlog.is_empty() {
            self.flush_port(to);
        }
        if self.ports[to].backlog.is_empty() {
            match self.try_send(to, &frame) {
                Ok(()) => {
                    self.count_delivered(from, to);
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.count_unreachable(from, to);
                    return false;
                }
            }
        }
        if self.ports[to].backlog.len() >= self.backlog_frames_max {
            let n = self.n();
            match from {
                Some(f) => self.links[f * n + to].dropped_overflow += 1,
                None => self.ports[to].stats.garbage_dropped += 1,
            }
            return true;
        }
        self.ports[to].backlog.push_back(Pending { from, frame });
        assert!(self.ports[to].backlog.len() <= self.backlog_frames_max);
        true
    }

    /// Delivers a frame that came from no port (injected, replayed).
    pub(super) fn deliver_direct(&mut self, to: usize, frame: Vec<u8>) {
        self.deliver(None, to, frame);
    }

    fn try_send(&self, to: usize, frame: &[u8]) -> io::Result<()> {
        let port = &self.ports[to];
        let sent = port.tx.send_to(frame, &port.node_path)?;
        assert_eq!(sent, frame.len(), "unix datagrams are sent whole");
        Ok(())
    }

    fn count_delivered(&mut self, from: Option<usize>, to: usize) {
        match from {
            Some(f) => self.links[f * self.ports.len() + to].forwarded += 1,
            None => self.ports[to].stats.garbage_injected += 1,
        }
    }

    fn count_unreachable(&mut self, from: Option<usize>, to: usize) {
        match from {
            Some(f) => self.links[f * self.ports.len() + to].dropped_unreachable += 1,
            None => self.ports[to].stats.garbage_dropped += 1,
        }
    }

    /// Retry every backlog in order until its socket is full again. Returns whether some
    /// backlog is still non-empty.
    fn flush_backlogs(&mut self) -> bool {
        let mut pending = false;
        for to in 0..self.n() {
            pending |= !self.flush_port(to);
        }
        pending
    }

    /// Send port `to`'s backlog in order until its socket is full. Returns whether it emptied.
    fn flush_port(&mut self, to: usize) -> bool {
        while let Some(p) = self.ports[to].backlog.pop_front() {
            match self.try_send(to, &p.frame) {
                Ok(()) => self.count_delivered(p.from, to),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.ports[to].backlog.push_front(p);
                    return false;
                }
                Err(_) => self.count_unreachable(p.from, to),
            }
        }
        true
    }

    fn capture(&mut self, frame: &[u8]) {
        let Some(cap) = self.capture.as_mut() else {
            return;
        };
        if let Err(e) = cap.record(frame) {
            eprintln!("fabric: capture stopped: {e}");
            self.capture = None;
        }
    }

    /// Handle every event due at `now_us` (at most [`EVENTS_PER_PASS_MAX`]).
    fn run_due(&mut self, now_us: u64) {
        for _ in 0..EVENTS_PER_PASS_MAX {
            let Some(event) = self.timers.pop_due(now_us) else {
                return;
            };
            match event {
                Event::Frame { from, to, frame } => {
                    self.deliver(Some(from), to, frame);
                }
                Event::Garbage(job) => self.on_garbage(job),
            }
        }
    }

    fn on_garbage(&mut self, mut job: GarbageJob) {
        assert!(job.remaining > 0);
        let port = job.port;
        let node_mac = self.macs.any_on_port(port);
        let frame = garbage_frame(&mut self.ports[port].garbage_rng, node_mac);
        self.capture(&frame);
        self.deliver(None, port, frame);
        job.remaining -= 1;
        if job.remaining > 0 {
            job.due_us += job.interval_us;
            if let Err(full) = self.timers.push(job.due_us, Event::Garbage(job)) {
                let Event::Garbage(job) = full.0 else {
                    unreachable!("pushed a garbage event")
                };
                self.ports[port].stats.garbage_dropped += job.remaining;
            }
        }
    }

    fn has_backlog(&self) -> bool {
        self.ports.iter().any(|p| !p.backlog.is_empty())
    }

    /// How long the scheduler may sleep: until the next event, sooner while backlogs wait.
    fn sleep_duration(&self, now_us: u64) -> Duration {
        let mut sleep_us = SCHEDULER_IDLE_MS * 1_000;
        if let Some(due_us) = self.timers.next_due_us() {
            sleep_us = sleep_us.min(due_us.saturating_sub(now_us));
        }
        if self.has_backlog() {
            sleep_us = sleep_us.min(BACKLOG_RETRY_US);
        }
        Duration::from_micros(sleep_us)
    }

    pub fn snapshot(&self, seed: u64) -> Stats {
        let n = self.n();
        let mut links = Vec::with_capacity(n * n);
        for from in 0..n {
            for to in (0..n).filter(|&t| t != from) {
                links.push((
                    self.ports[from].node,
                    self.ports[to].node,
                    self.links[from * n + to],
                ));
            }
        }
        Stats {
            seed,
            ports: self.ports.iter().map(|p| p.stats).collect(),
            links,
            mac_table: self
                .macs
                .entries()
                .into_iter()
                .map(|(m, p)| (m, self.ports[p].node))
                .collect(),
            mac_table_overflows: self.macs.overflows,
            capture_bytes: self.capture.as_ref().map_or(0, |c| c.written_bytes()),
        }
    }
}

/// Receive loop of one port: blocking reads bounded by the socket's read timeout, so the
/// thread notices `stop` within one timeout.
pub fn receiver_loop(shared: Arc<Shared>, port: usize, sock: UnixDatagram, frame_bytes_max: usize) {
    let mut buf = vec![0u8; frame_bytes_max];
    while !shared.stopping() {
        match sock.recv(&mut buf) {
            Ok(len) => {
                let now_us = shared.now_us();
                let wake = shared.lock().on_frame(port, &buf[..len], now_us);
                if wake {
                    shared.wake.notify_one();
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => {
                shared.lock().ports[port].stats.rx_errors += 1;
                // Do not spin on a persistent error; the read timeout bounds this anyway.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Scheduler loop: delayed frames, garbage pacing, backlog retries. Sleeps on the condvar,
/// which releases the lock; `stop` is checked under the lock so a shutdown notify is never lost.
pub fn scheduler_loop(shared: Arc<Shared>) {
    let mut state = shared.lock();
    while !shared.stopping() {
        state.run_due(shared.now_us());
        state.flush_backlogs();
        let sleep = state.sleep_duration(shared.now_us());
        state = shared
            .wake
            .wait_timeout(state, sleep)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    if let Some(cap) = state.capture.as_mut() {
        let _ = cap.flush();
    }
}
